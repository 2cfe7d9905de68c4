"""Pretraining: the JEPA loop, schedules, checkpoints and collapse diagnostics."""

from .checkpoint import load_encoder
from .pretrain import PretrainResult, Trainer, pretrain

__all__ = ["PretrainResult", "Trainer", "load_encoder", "pretrain"]
