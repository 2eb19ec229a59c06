"""Joint-Embedding Predictive Architecture (I-JEPA, Assran et al. 2023; ECG-JEPA, Weimann & Conrad 2024).

Modality-agnostic: any encoder with ``forward(inputs, mask=keep_idx) -> [B, K, D]`` patch tokens.
Per batch (masks from :mod:`sslab.objectives.masking`, made in the collator)::

    s_x = f_theta(x, context_idx)                          context encoder (trained)
    s_y = LN(f_bar(x))[target_idx]                          target encoder = EMA of f_theta, no gradient
    s_hat = g_phi(s_x, pos(context_idx), mask tokens + pos(target_idx))[targets]
    loss = mean  smooth_l1(s_hat, s_y)      (I-JEPA eq. 1 with smooth-L1; ECG-JEPA: L1)

The target encoder follows ``f_bar <- m f_bar + (1 - m) f_theta`` after every optimizer step with
``m`` rising linearly 0.998 -> 0.9995 (ECG-JEPA); ``ema_at="forward"`` moves the update to the start of the
next forward, before the targets, which is where the original ECG-JEPA code does it.  The predictor is a narrow transformer (default:
same depth, half width) with a learned mask token; positions come from the encoder's
``position_embedding(inputs, dim)`` (sin-cos for vit1d) or, failing that, a learned table of
``num_patches`` entries.

The original ECG-JEPA (kweimann/ECG-JEPA) is one configuration: encoder ``vit1d`` with ``bias: false,
norm_eps: 1e-6, num_registers: 1``; objective ``loss: l1, target_norm: none, ema_at: forward,
token_weight_decay: false``; ``tests/ecg/test_ecg_jepa_parity.py`` reproduces its losses, gradients and weights.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.ema import EMATeacher, momentum_schedule
from sslab.core.registry import OBJECTIVES
from sslab.encoders.blocks import Block
from sslab.encoders.onednn_linear import Linear

TARGET_NORMS = ("layer", "batch_layer", "none")
EMA_AT = ("step_end", "forward")
EXPORTS = {"target": "target.module.", "context": "encoder."}
LOSSES = {"l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss, "mse": F.mse_loss}


def _var0(x: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over dim 0 of ``x`` ``[B, ...]``, flattened -> ``[prod(...)]`` (= ``x.var(0).flatten()``,
    ~25x faster on CPU: torch's strided reduction over the outer dim is slow)."""
    x2 = x.float().reshape(x.shape[0], -1)
    return (x2 - x2.mean(0)).square_().sum(0) / max(x.shape[0] - 1, 1)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class JEPAPredictor(nn.Module):
    """Narrow transformer predicting target-patch features from context tokens and mask tokens."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, num_patches: Optional[int] = None,
                 mlp_ratio: float = 4.0, bias: bool = True, qkv_bias: Optional[bool] = None,
                 norm_eps: Optional[float] = None) -> None:
        super().__init__()
        self.dim = dim
        self.embed = Linear(in_dim, dim, bias=bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, num_patches, dim)) if num_patches else None
        eps = 1e-6 if norm_eps is None else norm_eps
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, bias, qkv_bias, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-5 if norm_eps is None else norm_eps, bias=bias)
        self.proj = Linear(dim, in_dim, bias=bias)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, ctx: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor,
                pos: Optional[torch.Tensor]) -> torch.Tensor:
        """``ctx`` ``[B, K, D]``; ``pos`` ``[N, dim]`` (or None: learned table) -> ``[B, M, D]``."""
        table = pos if pos is not None else self.pos[0]
        x = self.embed(ctx) + table[ctx_idx]
        m = self.mask_token + table[tgt_idx]
        x = torch.cat([x, m], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.proj(self.norm(x[:, ctx.shape[1]:]))


@OBJECTIVES.register("jepa")
class JEPA(nn.Module):
    """JEPA objective; batches are dicts ``{"inputs", "context_idx", "target_idx"}``.

    Args:
        encoder: the context encoder (exported after pretraining).
        predictor_dim / predictor_depth / predictor_heads: default half width, same depth, heads of
            the encoder (or 4).  The predictor's blocks take the encoder's ``mlp_ratio``, ``bias`` and
            ``norm_eps`` when it has them.
        momentum: (start, end) of the linear EMA schedule.
        loss: ``smooth_l1`` | ``l1`` | ``mse``.
        target_norm: ``layer`` (I-JEPA: layer-norm each target token), ``batch_layer`` (first subtract the
            batch mean at each patch position -- the part of the target that the predictor could read off
            the position alone -- then layer-norm; guards short, small-batch runs against collapsing onto
            positional features), or ``none`` (ECG-JEPA: the target encoder's output as it is).
        num_patches: size of a learned position table, only for encoders without ``position_embedding``.
        export: which encoder ``sslab pretrain`` exports for probing: ``context`` (the trained encoder) or
            ``target`` (the EMA encoder, which I-JEPA evaluates after 300 epochs). In short runs the EMA encoder
            still carries much of its random init ((m)^steps: 0.998^600 = 0.30), so ``context`` is the default;
            on the shared PTB-XL subset (600 steps, 3 seeds) context beat random init 3/3, target 2/3 (docs/ecg.md).
        ema_at: ``step_end`` (update the target after each optimizer step, momentum of the step just taken) or
            ``forward`` (update at the start of each training forward, before the targets, with the momentum of
            the step about to be taken -- the original ECG-JEPA; with ``train.grad_accum`` > 1 that means one
            update per micro-batch, as there).
        token_weight_decay: whether AdamW decays the register and mask tokens (and a learned position table);
            ECG-JEPA decays only Linear / Conv1d weights (``false``).
        diagnostics: log ``target_std`` and ``target_sample_var`` (collapse monitors) every step.
    """

    def __init__(self, encoder: nn.Module, predictor_dim: Optional[int] = None,
                 predictor_depth: Optional[int] = None, predictor_heads: Optional[int] = None,
                 momentum: Sequence[float] = (0.998, 0.9995), loss: str = "smooth_l1",
                 target_norm: str = "layer", num_patches: Optional[int] = None, export: str = "context",
                 ema_at: str = "step_end", token_weight_decay: bool = True, diagnostics: bool = True) -> None:
        super().__init__()
        if export not in EXPORTS:
            raise ValueError(f"jepa export must be one of {sorted(EXPORTS)}, got {export!r}")
        if loss not in LOSSES:
            raise ValueError(f"jepa loss must be one of {sorted(LOSSES)}, got {loss!r}")
        if target_norm not in TARGET_NORMS:
            raise ValueError(f"jepa target_norm must be one of {TARGET_NORMS}, got {target_norm!r}")
        if ema_at not in EMA_AT:
            raise ValueError(f"jepa ema_at must be one of {EMA_AT}, got {ema_at!r}")
        if len(momentum) != 2 or not 0 <= momentum[0] <= momentum[1] <= 1:
            raise ValueError(f"jepa momentum must be (start, end) with 0 <= start <= end <= 1, got {momentum}")
        dim = int(encoder.dim)
        heads = predictor_heads or getattr(encoder, "heads", 4)
        p_dim = predictor_dim or max(heads * 8, (dim // 2) // heads * heads)
        if p_dim % heads:
            raise ValueError(f"jepa: predictor_dim {p_dim} not divisible by predictor_heads {heads}")
        has_pos = hasattr(encoder, "position_embedding")
        if not has_pos and not num_patches:
            raise ValueError("jepa: encoder has no position_embedding(inputs, dim); pass num_patches")
        self.encoder = encoder
        self.target = EMATeacher(encoder)
        self.predictor = JEPAPredictor(dim, p_dim, predictor_depth or getattr(encoder, "depth", 4), heads,
                                       None if has_pos else num_patches, float(getattr(encoder, "mlp_ratio", 4.0)),
                                       bool(getattr(encoder, "bias", True)), getattr(encoder, "qkv_bias", None),
                                       getattr(encoder, "norm_eps", None))
        self.loss_fn, self.target_norm = LOSSES[loss], target_norm
        self.export_prefix = EXPORTS[export]  # state-dict prefix of the exported encoder (read by sslab.run)
        self.momentum = momentum_schedule(float(momentum[0]), float(momentum[1]), "linear")
        self.ema_at, self.token_weight_decay, self.diagnostics = ema_at, token_weight_decay, diagnostics
        self._step, self._total = 0, 1  # optimizer steps taken / planned (ema_at="forward" reads them)
        self._ema_pairs: Optional[tuple] = None

    def no_weight_decay(self) -> List[str]:
        """Parameter names AdamW must not decay (read by ``sslab.core.trainer.param_groups``)."""
        if self.token_weight_decay:
            return []
        return [n for n, p in self.named_parameters()
                if p.requires_grad and n.split(".")[-1] in ("registers", "mask_token", "pos", "cls_token")]

    @torch.no_grad()
    def ema_update(self, m: float) -> None:
        """``target <- m * target + (1 - m) * encoder`` for every parameter, in one multi-tensor op pair.

        Written as the original ECG-JEPA writes it (``m * t + (1 - m) * e``), not as ``EMATeacher.update``'s
        ``lerp`` (``t + (1 - m) * (e - t)``): the two differ by one float32 ulp, which the parity test sees on the
        LayerNorm weights (1.2e-7 at 1.0 against a ~1e-6 EMA displacement)."""
        if self._ema_pairs is None:
            t = list(self.target.module.parameters())
            e = list(self.encoder.parameters())
            if len(t) != len(e):
                raise ValueError("EMA target and encoder have different parameter lists")
            self._ema_pairs = (t, e)
        t, e = self._ema_pairs
        torch._foreach_mul_(t, m)
        torch._foreach_add_(t, e, alpha=1.0 - m)
        for tb, sb in zip(self.target.module.buffers(), self.encoder.buffers()):
            tb.copy_(sb)

    def _apply(self, fn, recurse=True):  # .to()/.cuda() may replace parameters: re-collect the EMA pairs
        self._ema_pairs = None
        return super()._apply(fn, recurse)

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        x, ctx_idx, tgt_idx = batch["inputs"], batch["context_idx"], batch["target_idx"]
        if self.ema_at == "forward" and self.training and torch.is_grad_enabled():
            self.ema_update(self.momentum(self._step, self._total))
        out: Dict[str, Any] = {}
        with torch.no_grad():
            h = self.target(x)
            if self.diagnostics:
                # collapse diagnostic: share of the target's variance that differs between samples (not just
                # between positions); ~0 means every record gets the same features, whatever the loss says
                out["target_sample_var"] = _var0(h).mean() / _var0(h.flatten(0, 1)).mean().clamp_min(1e-12)
            if self.target_norm == "batch_layer":
                h = h - h.mean(dim=0, keepdim=True)
            if self.target_norm != "none":
                h = F.layer_norm(h, h.shape[-1:])
            h = _gather(h, tgt_idx)
        ctx = self.encoder(x, mask=ctx_idx)
        pos = self.encoder.position_embedding(x, self.predictor.dim) if self.predictor.pos is None else None
        pred = self.predictor(ctx, ctx_idx, tgt_idx, pos)
        out["loss"] = self.loss_fn(pred.float(), h.float())
        if self.diagnostics:
            out["target_std"] = _var0(h).sqrt_().mean()
        out["context_frac"] = ctx_idx.shape[1] / (ctx_idx.shape[1] + tgt_idx.shape[1])
        return out

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> Dict[str, float]:
        self._step, self._total = step, total_steps
        if self.ema_at == "forward":  # the update happens at the next forward, with this momentum
            return {"momentum": self.momentum(step, total_steps)}
        m = self.momentum(step, total_steps)
        self.ema_update(m)
        return {"momentum": m}

    def extra_state(self) -> Dict[str, int]:
        """Step counters for exact resume of ``ema_at="forward"`` (read by the trainer's checkpoints)."""
        return {"step": self._step, "total": self._total}

    def load_extra_state(self, state: Dict[str, int]) -> None:
        self._step, self._total = int(state["step"]), int(state["total"])
