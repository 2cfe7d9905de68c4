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


def capped_momenta(momenta: list[float], max_init_fraction: float) -> list[float]:
    """Cap every momentum at the one value c for which ∏ min(m, c) = ``max_init_fraction`` (when the
    uncapped product is larger), so an EMA copy keeps at most that share of its starting weights."""
    if not momenta or math.prod(momenta) <= max_init_fraction:
        return list(momenta)
    goal = math.log(max_init_fraction) - 1e-9  # a hair below, so summing logs cannot round it above
    lo, hi = 0.0, max(momenta)
    for _ in range(100):  # bisection on c: sum(log(min(m, c))) is increasing in c
        mid = (lo + hi) / 2
        if mid > 0 and sum(math.log(min(m, mid)) for m in momenta) > goal:
            hi = mid
        else:
            lo = mid
    return [min(m, lo) for m in momenta]
