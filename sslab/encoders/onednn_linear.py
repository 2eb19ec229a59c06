"""``nn.Linear`` whose fp32 CPU matrix products run in oneDNN instead of the default BLAS (MKL).

Same function, same precision (fp32 accumulate; no bf16/tf32 shortcut): ``y = x W^T + b``,
``dx = dy W``, ``dW = dy^T x``, ``db = sum dy``, each product through ``torch.ops.mkldnn._linear_pointwise``.
Why: on AMD EPYC (Zen 5) MKL's sgemm runs its AVX2 path (~85 GFLOP/s on one core at the ViT-XS shapes) while
oneDNN uses AVX-512 (~190 GFLOP/s); see ``benchmarks/ecg_jepa_step.py`` and docs/ecg.md.  On Intel CPUs both
are fast.

The oneDNN path is taken only for float32 CPU tensors outside autocast, ``torch.compile`` tracing and
``TorchDispatchMode``s (so ``FlopCounterMode`` and fake tensors see an ordinary ``aten.linear``), and when
``SSLAB_ONEDNN_LINEAR`` is not ``0``; everything else is ``F.linear``.  Parameter names, init and state dicts
are ``nn.Linear``'s.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

_AVAILABLE: Optional[bool] = None
_PLAIN = (torch.Tensor, nn.Parameter)


def onednn_available() -> bool:
    """oneDNN linear kernel present in this torch build (checked once) and not switched off."""
    global _AVAILABLE
    if _AVAILABLE is None:
        ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        if ok:
            try:
                x, w = torch.ones(2, 3), torch.ones(4, 3)
                ok = bool(torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""),
                                      torch.full((2, 4), 3.0)))
            except RuntimeError:
                ok = False
        _AVAILABLE = ok
    return _AVAILABLE and os.environ.get("SSLAB_ONEDNN_LINEAR", "1") != "0"


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b^T`` for 2-D fp32 CPU tensors, in oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


class _OneDNNLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        out = torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, weight.shape[0])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _mm_t(g2, weight.t().contiguous()).view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:  # dW = dy^T x; oneDNN is faster with the wider operand's transpose first
            if weight.shape[0] >= weight.shape[1]:
                dw = _mm_t(x2.t(), g2.t()).t().contiguous()
            else:
                dw = _mm_t(g2.t(), x2.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or x.dim() < 2:
        return False
    if not (type(x) in _PLAIN and type(weight) in _PLAIN):  # DTensor, fake/functional tensors
        return False
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is None and onednn_available()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` with the oneDNN fp32 CPU path (see module docstring)."""
    if _use_onednn(x, weight):
        return _OneDNNLinearFn.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in ``nn.Linear`` (same parameters, init and RNG use) with the oneDNN fp32 CPU path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
