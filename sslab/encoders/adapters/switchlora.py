"""SwitchLoRA (Zhou et al. 2024, "SwitchLoRA: Switched Low-Rank Adaptation Can Learn Full-Rank
Information", Sec. 3): LoRA ``h = W x + s B A x`` whose vectors are periodically swapped with vectors
from a candidate pool, the frozen weight absorbing the change so the layer output is unchanged:

    switch column i of B (b -> b'):  W <- W + s (b - b') a_i^T,   B[:, i] <- b'
    switch row i of A   (a -> a'):   W <- W + s b_i (a - a')^T,   A[i, :] <- a'

Over many switches the sum of low-rank updates spans a full-rank change of W. The swapped-out
vector goes back to the pool. Not implemented: the paper's reset of the optimizer moments of
switched vectors (the module cannot see the optimizer); switching frequency decays as
``switch_every * (1 + step / decay_steps)``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.encoders.adapters.common import lora_init_


class SwitchLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 8.0, num_candidates: int = 0) -> None:
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r, self.scaling = r, float(alpha) / r
        n = num_candidates or r  # pool size per side (paper: about the rank)
        out_f, in_f = base.out_features, base.in_features
        self.lora_A = nn.Parameter(lora_init_(torch.empty(r, in_f)))
        # B starts non-zero (vectors must carry information to be switched); W absorbs s*B@A so the
        # initial output equals the base layer's
        std_b = 1.0 / math.sqrt(out_f)
        self.lora_B = nn.Parameter(torch.randn(out_f, r) * std_b)
        self.register_buffer("cand_A", lora_init_(torch.empty(n, in_f)))
        self.register_buffer("cand_B", torch.randn(n, out_f) * std_b)
        with torch.no_grad():
            self.base.weight.sub_(self.scaling * self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def switch(self, num: int = 1, generator: Optional[torch.Generator] = None) -> int:
        """Swap ``num`` random columns of B and ``num`` random rows of A with pool vectors."""
        num = min(num, self.r)
        W = self.base.weight
        g = generator
        pick = lambda: zip(torch.randperm(self.r, generator=g)[:num].tolist(),  # noqa: E731
                           torch.randint(len(self.cand_B), (num,), generator=g).tolist())
        for i, j in pick():
            old, new = self.lora_B[:, i].clone(), self.cand_B[j].clone()
            W.add_(self.scaling * torch.outer(old - new, self.lora_A[i]))
            self.lora_B[:, i] = new
            self.cand_B[j] = old
        for i, j in pick():
            old, new = self.lora_A[i].clone(), self.cand_A[j].clone()
            W.add_(self.scaling * torch.outer(self.lora_B[:, i], old - new))
            self.lora_A[i] = new
            self.cand_A[j] = old
        return 2 * num


def switchlora_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, SwitchLoRALinear)]


def switch_all(model: nn.Module, num: int = 1, seed: Optional[int] = None) -> int:
    """Switch ``num`` vectors per side in every layer. With ``seed`` (the step), the choice comes from
    a generator seeded by it, so every DDP rank makes the same switch (the frozen weights are not
    synchronised by DDP)."""
    g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    return sum(m.switch(num, g) for m in switchlora_layers(model))


def switch_due(step: int, every: int, decay_steps: int = 0) -> bool:
    """Whether to switch after ``step`` completed steps (interval grows with ``decay_steps``)."""
    if every <= 0:
        return False
    interval = every if decay_steps <= 0 else max(1, int(round(every * (1 + step / decay_steps))))
    return step % interval == 0
