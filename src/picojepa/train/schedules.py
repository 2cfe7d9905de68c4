"""Step-indexed schedules: warmup + cosine learning rate, cosine weight decay, linear EMA momentum."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float, floor: float, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def cosine_increase(step: int, total: int, start: float, end: float) -> float:
    progress = min(1.0, step / max(1, total))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def linear(step: int, total: int, start: float, end: float) -> float:
    return start + (end - start) * min(1.0, step / max(1, total))
