"""POA: Pre-training Once for models of All sizes (Zhang et al., ECCV 2024, arXiv:2408.01031).

Three branches (Sec. 3.2-3.3): an EMA teacher, the intact student and an elastic student, a
sub-network of the intact student (same weights, width ``w`` and depth ``d`` sampled every step from a
grid, small sizes more often). DINO self-distillation (Caron et al. 2021, Eq. 2-3: centering and
sharpening of teacher outputs, cross-view cross-entropy over multi-crop views) is applied
teacher -> intact and teacher -> elastic, and the intact student distils into the elastic one
(``intact -> elastic``, same view, intact targets detached). Optional iBOT masked-patch loss
(Zhou et al. 2022, Eq. 3) and KoLeo regulariser (Sablayrolles et al. 2019; DINOv2 Sec. 4).

After pretraining every (w, d) sub-network is a working encoder: see ``sslab extract``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslab.core.ema import EMATeacher, momentum_schedule
from sslab.core.registry import OBJECTIVES
from sslab.core.schedules import linear
from sslab.objectives.sit import GroupMaskCorruptor


class DINOHead(nn.Module):
    """DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

    Inputs narrower than ``in_dim`` (elastic students) use the first columns of the first layer,
    the same "first w channels" rule as the backbone.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.rest = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for m in [self.fc1, *self.rest]:  # variance-preserving init, zero bias: keeps per-sample variation at small widths
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=m.in_features ** -0.5)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        h = self.rest(F.linear(x, self.fc1.weight[:, :w], self.fc1.bias))
        return F.linear(F.normalize(h, dim=-1), F.normalize(self.prototypes, dim=-1))


def dino_cross_entropy(teacher_probs: Sequence[torch.Tensor], student_logits: Sequence[torch.Tensor],
                       student_temp: float) -> torch.Tensor:
    """DINO Eq. 3: mean over view pairs (teacher view i, student view j, i != j) of H(P_t, P_s)."""
    total, pairs = 0.0, 0
    log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student_logits]
    for i, t in enumerate(teacher_probs):
        for j, lp in enumerate(log_probs):
            if i == j:
                continue
            total = total + (-(t * lp).sum(dim=-1)).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("DINO loss needs at least two views")
    return total / pairs


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo: -mean log distance to the nearest neighbour of L2-normalised features."""
    x = F.normalize(features.float(), dim=-1)
    sim = x @ x.t()
    sim.fill_diagonal_(-2.0)
    nn_idx = sim.argmax(dim=1)
    dist_nn = (x - x[nn_idx]).norm(dim=-1)
    return -torch.log(dist_nn + eps).mean()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()


def _kl_to_mean(p: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_i || mean_j p_j): 0 when every sample gets the same output (collapse)."""
    mean = p.mean(0, keepdim=True)
    return (p * (p.clamp_min(1e-12).log() - mean.clamp_min(1e-12).log())).sum(-1).mean()


def _all_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
    return x


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """SwAV/DINOv2 Sinkhorn-Knopp centering: soft assignments with equal prototype usage per batch."""
    q = torch.exp((logits.float() - logits.float().max()) / temperature).t()  # [K, B]
    K = q.shape[0]
    B = int(_all_sum(torch.tensor(float(q.shape[1]), device=q.device)).item())
    q /= _all_sum(q.sum())
    for _ in range(iterations):
        q /= _all_sum(q.sum(dim=1, keepdim=True)).clamp_min(1e-30)
        q /= K
        q /= q.sum(dim=0, keepdim=True).clamp_min(1e-30)
        q /= B
    return (q * B).t()


def _all_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return x


@OBJECTIVES.register("poa")
class POA(nn.Module):
    """Batch: ``{"views": [global_1, ..., global_G, local_1, ...], "n_global": G}`` (G >= 2)."""

    def __init__(self, encoder: nn.Module, out_dim: int = 1024, head_hidden: int = 512, head_bottleneck: int = 128,
                 widths: Optional[List[int]] = None, depths: Optional[List[int]] = None, small_bias: float = 0.5,
                 student_temp: float = 0.1, teacher_temp: Tuple[float, float] = (0.04, 0.07),
                 teacher_temp_warmup: float = 0.3, center_momentum: float = 0.9,
                 elastic_weight: float = 1.0, distill_weight: float = 1.0,
                 ibot_weight: float = 0.0, ibot_out_dim: Optional[int] = None,
                 ibot_mask_ratio: Tuple[float, float] = (0.1, 0.5), ibot_mask_prob: float = 0.5,
                 koleo_weight: float = 0.0, momentum: Tuple[float, float] = (0.996, 1.0),
                 momentum_kind: str = "cosine", centering: str = "ema") -> None:
        super().__init__()
        if centering not in ("ema", "sinkhorn"):
            raise ValueError(f"poa: centering must be 'ema' (DINO) or 'sinkhorn' (DINOv2), got {centering!r}")
        self.centering = centering
        if not hasattr(encoder, "size_grid"):
            raise TypeError(f"poa needs an elastic encoder (elastic_vit), got {type(encoder).__name__}")
        self.encoder = encoder
        self.find_unused_parameters = True  # DDP: mask token / unused slices get no gradient
        grid = [s for s in encoder.size_grid(widths, depths) if s != (encoder.dim, encoder.depth)]
        if not grid:
            raise ValueError("poa: the width/depth grid holds no sub-network smaller than the full model")
        self.sizes: List[Tuple[int, int]] = grid
        cost = torch.tensor([encoder.relative_cost(w, d) for w, d in grid], dtype=torch.float64)
        self.register_buffer("size_probs", (cost ** -small_bias / (cost ** -small_bias).sum()).float(),
                             persistent=False)
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.teacher_temp_range, self.teacher_temp_warmup = tuple(teacher_temp), teacher_temp_warmup
        self.elastic_weight, self.distill_weight = elastic_weight, distill_weight
        self.ibot_weight, self.koleo_weight = ibot_weight, koleo_weight
        self.ibot_mask_prob = ibot_mask_prob
        self.head = DINOHead(encoder.dim, out_dim, head_hidden, head_bottleneck)
        student = {"encoder": encoder, "head": self.head}
        if ibot_weight > 0:
            self.patch_head = DINOHead(encoder.dim, ibot_out_dim or out_dim, head_hidden, head_bottleneck)
            student["patch_head"] = self.patch_head
            self.masker = GroupMaskCorruptor(1, tuple(ibot_mask_ratio), noise_prob=0.0)
            self.register_buffer("patch_center", torch.zeros(1, ibot_out_dim or out_dim))
        self.teacher = EMATeacher(nn.ModuleDict(student))
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("teacher_temp", torch.tensor(float(teacher_temp[0])))
        self.momentum = momentum_schedule(momentum[0], momentum[1], momentum_kind)

    # ----------------------------------------------------------------- pieces
    def _student_modules(self) -> nn.ModuleDict:
        mods = {"encoder": self.encoder, "head": self.head}
        if self.ibot_weight > 0:
            mods["patch_head"] = self.patch_head
        return nn.ModuleDict(mods)

    def sample_size(self) -> Tuple[int, int]:
        """Elastic (width, depth) for this step: P(size) ~ relative_cost^-small_bias."""
        return self.sizes[int(torch.multinomial(self.size_probs.cpu(), 1))]

    def _teacher_probs(self, logits: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(logits, float(self.teacher_temp))
        return F.softmax((logits - center) / self.teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor, which: str = "center") -> None:
        """DINO Eq. 4: ``c <- m c + (1 - m) mean_batch(g_t(x))`` (mean over all ranks)."""
        center = getattr(self, which)
        batch_mean = _all_mean(teacher_logits.float().mean(dim=0, keepdim=True))
        center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)

    def _ibot_masks(self, views: Sequence[torch.Tensor]) -> List[Optional[torch.Tensor]]:
        g = self.encoder.grid_size
        masks = []
        for v in views:
            if tuple(v.shape[-2:]) != (g[0] * self.encoder.patch_size, g[1] * self.encoder.patch_size):
                raise ValueError(f"iBOT needs global views at the encoder's image size, got {tuple(v.shape)}")
            dummy = torch.zeros(v.shape[0], 1, g[0], g[1])
            _, cell = self.masker(dummy)  # block-wise masks, ratio in ibot_mask_ratio
            keep = torch.rand(v.shape[0]) < self.ibot_mask_prob  # iBOT masks only a share of images
            masks.append((cell[:, 0].flatten(1) & keep[:, None]).to(v.device))
        return masks

    # ----------------------------------------------------------------- forward
    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        views: List[torch.Tensor] = list(batch["views"])
        n_global = int(batch.get("n_global", 2))
        if n_global < 2 or len(views) < n_global:
            raise ValueError(f"poa needs >= 2 global views, got n_global={n_global} of {len(views)} views")
        globals_ = views[:n_global]
        use_ibot = self.ibot_weight > 0
        masks = self._ibot_masks(globals_) if use_ibot else [None] * n_global

        t = self.teacher.module
        with torch.no_grad():
            t_tokens = [t["encoder"](v) for v in globals_]
            t_logits = [t["head"](t["encoder"].pool(tok)) for tok in t_tokens]
            if self.centering == "sinkhorn":  # joint over the global views, as in DINOv2
                t_probs = list(self._teacher_probs(torch.cat(t_logits), self.center).chunk(n_global))
            else:
                t_probs = [self._teacher_probs(lg, self.center) for lg in t_logits]

        width, depth = self.sample_size()
        intact_logits, elastic_logits, intact_tokens = [], [], []
        for i, v in enumerate(views):
            tok = self.encoder(v, mask=masks[i] if i < n_global else None)
            intact_tokens.append(tok)
            intact_logits.append(self.head(self.encoder.pool(tok)))
            tok_e = self.encoder(v, width=width, depth=depth)
            elastic_logits.append(self.head(self.encoder.pool(tok_e)))

        loss_ti = dino_cross_entropy(t_probs, intact_logits, self.student_temp)
        loss_te = dino_cross_entropy(t_probs, elastic_logits, self.student_temp)
        # intact -> elastic: KL(p_intact || p_elastic) (same gradient as the cross-entropy; targets detached)
        loss_ie = torch.stack([
            F.kl_div(F.log_softmax(e / self.student_temp, dim=-1), F.log_softmax(s.detach() / self.student_temp, dim=-1),
                     reduction="batchmean", log_target=True)
            for s, e in zip(intact_logits, elastic_logits)]).mean()
        loss = loss_ti + self.elastic_weight * loss_te + self.distill_weight * loss_ie
        out: Dict[str, Any] = {"dino_teacher_intact": loss_ti.detach(), "dino_teacher_elastic": loss_te.detach(),
                               "distill_intact_elastic": loss_ie.detach(), "elastic_width": float(width),
                               "elastic_depth": float(depth), "teacher_temp": float(self.teacher_temp),
                               # collapse diagnostics (DINO Sec. 5.3): per-sample entropy and KL to the batch mean
                               "teacher_entropy": _entropy(torch.cat(t_probs)).detach(),
                               "teacher_kl_to_mean": _kl_to_mean(torch.cat(t_probs)).detach()}
        # CE = H(teacher) + KL(teacher || student): the KL part is what the students can lower
        out["kl_teacher_intact"] = (loss_ti - out["teacher_entropy"]).detach()
        out["kl_teacher_elastic"] = (loss_te - out["teacher_entropy"]).detach()
        if use_ibot:
            loss_ibot = self._ibot_loss(t_tokens, intact_tokens[:n_global], masks)
            loss = loss + self.ibot_weight * loss_ibot
            out["ibot"] = loss_ibot.detach()
        if self.koleo_weight > 0:
            loss_koleo = torch.stack([koleo_loss(self.encoder.pool(tok)) for tok in intact_tokens[:n_global]]).mean()
            loss = loss + self.koleo_weight * loss_koleo
            out["koleo"] = loss_koleo.detach()
        if self.training:
            self.update_center(torch.cat(t_logits))
        out["loss"] = loss
        return out

    def _ibot_loss(self, t_tokens: List[torch.Tensor], s_tokens: List[torch.Tensor],
                   masks: List[Optional[torch.Tensor]]) -> torch.Tensor:
        t = self.teacher.module
        total, count = 0.0, 0
        t_all = []
        for tt, st, m in zip(t_tokens, s_tokens, masks):
            with torch.no_grad():
                t_patch = t["patch_head"](t["encoder"].patch_tokens(tt))
                t_all.append(t_patch[m])
            if m is None or not m.any():
                continue
            probs = self._teacher_probs(t_patch[m], self.patch_center)
            logp = F.log_softmax(self.patch_head(self.encoder.patch_tokens(st)[m]) / self.student_temp, dim=-1)
            total = total + (-(probs * logp).sum(-1)).mean()
            count += 1
        if self.training and t_all and sum(len(x) for x in t_all):
            self.update_center(torch.cat(t_all), "patch_center")
        if count == 0:  # no image was masked in this batch: a zero that keeps the graph connected
            return sum(p.sum() * 0.0 for p in self.patch_head.parameters())
        return total / count

    def on_step_end(self, step: int, total_steps: int) -> Dict[str, float]:
        m = self.momentum(step, total_steps)
        self.teacher.update(self._student_modules(), m)
        warm = max(1, int(self.teacher_temp_warmup * total_steps))
        lo, hi = self.teacher_temp_range
        self.teacher_temp.fill_(linear(min(step, warm), warm, lo, hi))
        return {"ema_momentum": m, "teacher_temp": float(self.teacher_temp)}
