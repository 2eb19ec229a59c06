"""Exponential-moving-average teacher (BYOL / DINO / I-JEPA target encoder).

``teacher = m * teacher + (1 - m) * student`` after each optimizer step; the teacher never receives
gradients (its parameters have ``requires_grad=False``) and is excluded from the optimizer.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from sslab.core.schedules import cosine, linear


class EMATeacher(nn.Module):
    """Holds a frozen deep copy of ``student`` and updates it with :meth:`update`."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> "EMATeacher":  # teacher stays in eval mode
        super().train(False)
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """``t += (1 - m) * (s - t)`` for every parameter, buffers copied; a few foreach kernels, not one per tensor."""
        t_params = list(self.module.parameters())
        s_params = [p.detach() for p in student.parameters()]
        if len(t_params) != len(s_params):
            raise ValueError("EMA teacher and student have different parameter lists")
        if t_params:
            torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
        t_bufs, s_bufs = list(self.module.buffers()), list(student.buffers())
        if t_bufs:
            torch._foreach_copy_(t_bufs[:len(s_bufs)], s_bufs[:len(t_bufs)])

    def forward(self, *args, **kwargs):  # type: ignore[override]
        with torch.no_grad():
            return self.module(*args, **kwargs)


def momentum_schedule(start: float, end: float, kind: str = "linear") -> Callable[[int, int], float]:
    """Return ``f(step, total) -> momentum``; ``kind`` is ``linear`` (I-JEPA) or ``cosine`` (DINO/BYOL)."""
    fns = {"linear": linear, "cosine": cosine}
    if kind not in fns:
        raise ValueError(f"momentum schedule kind must be one of {sorted(fns)}, got {kind!r}")
    fn = fns[kind]
    return lambda step, total: fn(step, total, start, end)
