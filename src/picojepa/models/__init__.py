"""Model parts: the video ViT encoder, the predictor and the JEPA training module."""

from .jepa import JEPA, encoder_flops_per_clip, jepa_loss, train_flops_per_clip
from .predictor import Predictor
from .vit import Embedding, VideoViT, gather_tokens, sincos_3d

__all__ = [
    "JEPA",
    "Embedding",
    "Predictor",
    "VideoViT",
    "encoder_flops_per_clip",
    "gather_tokens",
    "jepa_loss",
    "sincos_3d",
    "train_flops_per_clip",
]
