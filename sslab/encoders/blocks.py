"""Pre-norm transformer block (ViT, Dosovitskiy et al. 2021, eq. 2-3) with configurable biases and LayerNorm eps.

``x = x + Attn(LN1(x)); x = x + MLP(LN2(x))`` with multi-head self-attention through
``F.scaled_dot_product_attention`` (softmax(q k^T / sqrt(d_head)) v, Vaswani et al. 2017 eq. 1) and a GELU MLP.
Parameter names match timm's ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``), so state dicts written with timm blocks load unchanged, and so do the original ECG-JEPA's
(kweimann/ECG-JEPA ``models/modules.py``: same names, no biases, eps 1e-6).

Construction draws from the RNG exactly like timm's block (``nn.Linear`` default init in the same order), so a
seeded model has the weights of the timm-built one it replaces.  The Linear layers run their fp32 CPU products
in oneDNN (:mod:`sslab.encoders.onednn_linear`: same function, ~2x faster than MKL on AMD CPUs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslab.encoders.onednn_linear import Linear


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention: dim {dim} not divisible by heads {heads}")
        self.heads = heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` (exact erf GELU, as timm and ECG-JEPA)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.fc2 = Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Block(nn.Module):
    """Pre-norm transformer block.

    Args:
        bias: biases of ``attn.proj``, the MLP and the LayerNorms (ECG-JEPA: ``False`` everywhere).
        qkv_bias: bias of the ``qkv`` projection (``None``: same as ``bias``).
        eps: LayerNorm epsilon (timm and ECG-JEPA: 1e-6).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, bias: bool = True,
                 qkv_bias: bool | None = None, eps: float = 1e-6, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, bias=bias)
        self.attn = Attention(dim, heads, bias if qkv_bias is None else qkv_bias, bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps, bias=bias)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
