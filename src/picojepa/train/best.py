"""The learning monitor's best reading, kept as an encoder file while the run goes on.

Features of the default recipe hold their gain to about 80k clip-steps and then lose part of it
(docs/scaling.md). With a learning monitor, the run keeps the EMA encoder of its best reading in
``encoder-best.safetensors``; ``pretrain --keep-best`` makes it the run's encoder. This is model selection
on the monitor's labelled videos, so those videos must stay out of any test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..utils import atomic_write
from . import checkpoint as ckpt

SCORE = "probe_ema"  # the attentive probe of the encoder the run saves


@dataclass
class BestReading:
    out: Path
    step: int | None = None
    score: float = -math.inf

    @classmethod
    def resume(cls, out: Path, start_step: int) -> BestReading:
        """The best reading up to ``start_step``; a later one is dropped, as its metrics rows are: the
        resumed run reads those steps again."""
        path = out / ckpt.BEST_ENCODER_FILE
        info = ckpt.encoder_info(path) if path.is_file() else None
        if info is None or int(info.get("step", start_step + 1)) > start_step:
            path.unlink(missing_ok=True)
            return cls(out)
        return cls(out, int(info["step"]), float(info["score"]))

    def offer(self, step: int, row: dict[str, float], encoder: torch.nn.Module) -> bool:
        """Keep ``encoder`` when this reading beats every earlier one (ties keep the earlier)."""
        score = row.get(SCORE)
        if score is None or not math.isfinite(score) or score <= self.score:
            return False
        ckpt.save_encoder(encoder, self.out, ckpt.BEST_ENCODER_FILE,
                          info={"step": step, "score_name": SCORE, "score": float(score)})
        self.step, self.score = step, float(score)
        return True

    def record(self, kept: bool) -> dict[str, Any] | None:
        if self.step is None:
            return None
        return {"step": self.step, SCORE: self.score, "file": ckpt.BEST_ENCODER_FILE, "kept_as_encoder": kept}


def keep_best_as_encoder(out: Path, best: BestReading, last_encoder: torch.nn.Module, last_step: int) -> bool:
    """Make the best reading the run's ``encoder.safetensors``; the final encoder moves to
    ``encoder-last.safetensors``. Returns whether the encoder file changed (not when the best is the last)."""
    if best.step is None or best.step == last_step:
        return False
    ckpt.save_encoder(last_encoder, out, ckpt.LAST_ENCODER_FILE, info={"step": last_step})
    tensors = (out / ckpt.BEST_ENCODER_FILE).read_bytes()
    atomic_write(out / ckpt.ENCODER_FILE, lambda p: p.write_bytes(tensors))
    return True
