"""Schedules as pure functions of the step: warmup + cosine for LR, cosine for weight decay and momentum.

Because they depend only on the step counter, resuming restores them exactly from the step alone.
"""
from __future__ import annotations

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total``)."""
    if total <= 0:
        return end
    t = min(max(step / total, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def linear(step: int, total: int, start: float, end: float) -> float:
    if total <= 0:
        return end
    t = min(max(step / total, 0.0), 1.0)
    return start + (end - start) * t


def warmup_cosine(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine decay to ``floor``."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    return cosine(step - warmup, max(total - warmup, 1), peak, floor)
