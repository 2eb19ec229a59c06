"""1-D Vision Transformer over multi-lead signals (ECG): one token per time patch across all leads.

Dosovitskiy et al. 2021 (ViT) applied to time series as in ECG-JEPA (Weimann & Conrad 2024):
``Conv1d(leads -> dim, kernel = stride = patch_size)`` patch embedding (25 samples = 50 ms at 500 Hz;
scale it with the rate, e.g. 5 at 100 Hz), fixed 1-D sin-cos positional embedding (any length),
optional register tokens (Darcet et al. 2024), pre-norm blocks (:mod:`sslab.encoders.blocks`, timm's
parameter names).

``bias=False, norm_eps=1e-6, num_registers=1`` is the original ECG-JEPA encoder (kweimann/ECG-JEPA
``models/vision_transformer.py``; ``tests/ecg/test_ecg_jepa_parity.py`` checks the function against its outputs).

``forward(x, mask=keep_idx)`` encodes only the kept patches (``keep_idx``: ``[B, K]`` patch indices),
which is what JEPA's context encoder needs.  Reference sizes (``in_chans=12``): xs 3.6M, s 14M, b 85M.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from sslab.core.registry import ENCODERS
from sslab.encoders.blocks import Block

SIZES = {"xs": (192, 8, 6), "s": (384, 8, 6), "b": (768, 12, 12)}  # dim, depth, heads


def sincos_1d(n: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Transformer sinusoidal position table ``[n, dim]`` (Vaswani et al. 2017, sec. 3.5)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    omega = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(n, dim, device=device)
    out[:, 0::2] = torch.sin(pos * omega)
    out[:, 1::2] = torch.cos(pos * omega)
    return out.to(dtype)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, idx[b]]`` for ``x: [B, N, D]``, ``idx: [B, K]`` -> ``[B, K, D]``."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@ENCODERS.register("vit1d")
class ViT1D(nn.Module):
    """Patch-token ViT for ``[B, leads, samples]`` inputs; returns ``[B, N_kept, dim]`` tokens.

    Args:
        bias: biases in the patch embedding, every Linear and every LayerNorm (ECG-JEPA: ``False``).
        qkv_bias: bias of the attention ``qkv`` projection (``None``: same as ``bias``).
        norm_eps: eps of every LayerNorm; ``None`` keeps sslab's shipped layout (1e-6 in the blocks, 1e-5 in the
            final norm).  ECG-JEPA: 1e-6.
    """

    def __init__(self, in_chans: int = 12, patch_size: int = 25, size: str = "xs", dim: Optional[int] = None,
                 depth: Optional[int] = None, heads: Optional[int] = None, mlp_ratio: float = 4.0,
                 num_registers: int = 0, drop_path: float = 0.0, bias: bool = True,
                 qkv_bias: Optional[bool] = None, norm_eps: Optional[float] = None) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"vit1d size must be one of {sorted(SIZES)}, got {size!r}")
        d0, l0, h0 = SIZES[size]
        self.dim, self.depth, self.heads = dim or d0, depth or l0, heads or h0
        if self.dim % self.heads:
            raise ValueError(f"vit1d: dim {self.dim} not divisible by heads {self.heads}")
        self.in_chans, self.patch_size, self.mlp_ratio = in_chans, patch_size, mlp_ratio
        self.bias, self.norm_eps = bias, norm_eps
        self.patch_embed = nn.Conv1d(in_chans, self.dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.registers = nn.Parameter(torch.zeros(1, num_registers, self.dim)) if num_registers else None
        dpr = [drop_path * i / max(self.depth - 1, 1) for i in range(self.depth)]
        block_eps = 1e-6 if norm_eps is None else norm_eps
        self.blocks = nn.ModuleList(Block(self.dim, self.heads, mlp_ratio, bias, qkv_bias, block_eps, p) for p in dpr)
        self.norm = nn.LayerNorm(self.dim, eps=1e-5 if norm_eps is None else norm_eps, bias=bias)
        self._pos_cache: dict = {}
        self._init()

    def _init(self) -> None:
        if self.registers is not None:
            nn.init.trunc_normal_(self.registers, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def num_patches(self, inputs: torch.Tensor) -> int:
        return inputs.shape[-1] // self.patch_size

    def position_embedding(self, inputs: torch.Tensor, dim: int) -> torch.Tensor:
        """Positions of the patch grid of ``inputs`` at width ``dim`` (used by the JEPA predictor)."""
        return self._positions(self.num_patches(inputs), dim, inputs.device)

    def _positions(self, n: int, dim: int, device: torch.device) -> torch.Tensor:
        """``sincos_1d(n, dim)``, computed once per (n, dim, device) -- a constant, not a parameter or buffer."""
        key = (n, dim, str(device))
        table = self._pos_cache.get(key)
        if table is None:
            table = self._pos_cache[key] = sincos_1d(n, dim, device)
        return table

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_chans:
            raise ValueError(f"vit1d expects [batch, {self.in_chans} leads, samples], got {tuple(x.shape)}")
        if x.shape[-1] % self.patch_size:
            raise ValueError(f"vit1d: {x.shape[-1]} samples is not a multiple of patch_size {self.patch_size}")
        tokens = self.patch_embed(x).transpose(1, 2)  # [B, N, D]
        return tokens + self._positions(tokens.shape[1], self.dim, x.device).to(tokens.dtype)

    def forward(self, inputs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``inputs`` ``[B, C, T]``; ``mask`` = indices of patches to keep ``[B, K]`` -> ``[B, K, dim]``."""
        x = self.patchify(inputs)
        if mask is not None:
            if mask.dim() != 2 or mask.shape[0] != x.shape[0]:
                raise ValueError(f"vit1d: mask must be keep-indices [batch, K], got {tuple(mask.shape)}")
            x = gather_tokens(x, mask)
        r = 0
        if self.registers is not None:
            r = self.registers.shape[1]
            x = torch.cat([self.registers.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, r:]

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean over patch tokens -> ``[B, dim]``."""
        return tokens.mean(dim=1)
