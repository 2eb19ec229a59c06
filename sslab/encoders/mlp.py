"""A small MLP encoder for fixed-length feature vectors (the core's reference encoder)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from sslab.core.registry import ENCODERS


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """``[B, in_dim] -> tokens [B, 1, dim]``: Linear-GELU-LayerNorm blocks ending at ``dim``."""

    def __init__(self, in_dim: int, dim: int = 32, hidden: Sequence[int] = (128,), dropout: float = 0.0) -> None:
        super().__init__()
        layers = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.GELU(), nn.LayerNorm(h), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.dim = in_dim, dim

    def forward(self, inputs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if inputs.ndim != 2 or inputs.shape[1] != self.in_dim:
            raise ValueError(f"mlp encoder expects [B, {self.in_dim}] inputs, got {tuple(inputs.shape)}")
        if mask is not None:  # mask: [B, in_dim] bool, True = hidden from the encoder
            inputs = inputs.masked_fill(mask, 0.0)
        return self.net(inputs).unsqueeze(1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=1)
