"""DyLoRA (Valipour et al. 2023, "DyLoRA: Parameter-Efficient Tuning of Pre-trained Models using
Dynamic Search-Free Low-Rank Adaptation", Eq. 5):

    h = W0 x + (alpha / b) * B[:, :b] A[:b, :] x,   b ~ Uniform{r_min..r_max} per step

so that every nested truncation ``b <= r_max`` is trained and usable after training
(``set_rank(model, b)``). All layers share the step's rank. In eval mode the rank is the one set
with :func:`set_rank` (default ``r_max``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.encoders.adapters.common import lora_init_


class DyLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 8.0, r_min: int = 1) -> None:
        super().__init__()
        if not 1 <= r_min <= r:
            raise ValueError(f"DyLoRA needs 1 <= r_min <= r, got r_min={r_min}, r={r}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r, self.r_min, self.alpha = r, r_min, float(alpha)
        self.lora_A = nn.Parameter(lora_init_(torch.empty(r, base.in_features)))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        self.rank: int = r  # current rank; resampled each training step

    def sample_rank(self, rank: Optional[int] = None) -> int:
        self.rank = int(torch.randint(self.r_min, self.r + 1, ()).item()) if rank is None else int(rank)
        if not 1 <= self.rank <= self.r:
            raise ValueError(f"DyLoRA rank must be in [1, {self.r}], got {self.rank}")
        return self.rank

    def delta_weight(self, rank: Optional[int] = None) -> torch.Tensor:
        b = self.rank if rank is None else rank
        return (self.alpha / b) * self.lora_B[:, :b] @ self.lora_A[:b]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.rank
        lora = F.linear(F.linear(x, self.lora_A[:b]), self.lora_B[:, :b]) * (self.alpha / b)
        return self.base(x) + lora


def dylora_layers(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, DyLoRALinear)]


def set_rank(model: nn.Module, rank: Optional[int] = None, seed: Optional[int] = None) -> Optional[int]:
    """Set (or, with ``None``, sample) one rank for every DyLoRA layer of ``model``. With ``seed``
    (the step) the sample is the same on every DDP rank."""
    layers = dylora_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no DyLoRA layers")
    if rank is None:
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        rank = int(torch.randint(layers[0].r_min, layers[0].r + 1, (), generator=g).item())
    for m in layers:
        m.sample_rank(rank)
    return rank
