"""SiT: Self-supervised vIsion Transformer (Atito, Awais & Kittler, 2021, arXiv:2104.03602).

Group Masked Model Learning (GMML, Sec. 3.1): random groups of connected patches covering 50-70% of
the image are corrupted, either with noise or with the same region of another image in the batch;
the student encoder sees the corrupted image and a light decoder reconstructs the corrupted pixels
(L1, Eq. 1). A contrastive head on the class token is trained against an EMA teacher that sees the
clean views (Sec. 3.3, InfoNCE with temperature ~0.2, momentum encoder as in MoCo/BYOL).
``loss = recon_weight * L1 + contrastive_weight * InfoNCE``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.ema import EMATeacher, momentum_schedule
from sslab.core.registry import OBJECTIVES


class GroupMaskCorruptor:
    """GMML corruption on a grid of ``unit``-pixel cells (default: the ViT patch size).

    Per image a target ratio ``r ~ U(ratio)`` is drawn; rectangular blocks (area 1..``max_block_frac``
    of the grid, aspect ratio in [0.3, 3.3]) are added until at least ``ceil(r * cells)`` cells are
    corrupted, never more than ``floor(ratio[1] * cells)`` (a block that would overshoot is trimmed).
    Each block is filled with Gaussian noise (image mean/std) with probability ``noise_prob``, else with
    the same pixels of the next image in the batch. Randomness comes from torch's global RNG.
    """

    def __init__(self, unit: int, ratio: Tuple[float, float] = (0.5, 0.7), noise_prob: float = 0.5,
                 max_block_frac: float = 0.3) -> None:
        if not 0.0 < ratio[0] <= ratio[1] < 1.0:
            raise ValueError(f"corruption ratio must satisfy 0 < low <= high < 1, got {ratio}")
        if not 0.0 <= noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {noise_prob}")
        self.unit, self.ratio, self.noise_prob, self.max_block_frac = unit, tuple(ratio), noise_prob, max_block_frac

    def cell_masks(self, batch: int, gh: int, gw: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """``(mask [B,gh,gw] bool, use_noise [B,gh,gw] bool)`` on the cell grid."""
        cells = gh * gw
        limit = int(math.floor(self.ratio[1] * cells + 1e-9))
        masks = np.zeros((batch, gh, gw), dtype=bool)
        noise = np.zeros((batch, gh, gw), dtype=bool)
        max_area = max(1, int(round(self.max_block_frac * cells)))
        for b in range(batch):
            need = min(limit, int(math.ceil(rng.uniform(*self.ratio) * cells - 1e-9)))
            m, nz = masks[b], noise[b]
            while m.sum() < need:
                area = rng.integers(1, max_area + 1)
                aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
                h = int(min(gh, max(1, round(math.sqrt(area * aspect)))))
                w = int(min(gw, max(1, round(math.sqrt(area / aspect)))))
                top, left = rng.integers(0, gh - h + 1), rng.integers(0, gw - w + 1)
                block = np.zeros_like(m)
                block[top:top + h, left:left + w] = True
                new = block & ~m
                allowed = limit - int(m.sum())
                if new.sum() > allowed:  # trim the block so the ratio never exceeds the upper bound
                    keep = np.flatnonzero(new)[:allowed]
                    new = np.zeros_like(m)
                    new.flat[keep] = True
                m |= new
                if rng.uniform() < self.noise_prob:
                    nz |= new
        return masks, noise

    def __call__(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``images [B,C,H,W]`` -> ``(corrupted [B,C,H,W], pixel mask [B,1,H,W] bool)``."""
        B, C, H, W = images.shape
        if H % self.unit or W % self.unit:
            raise ValueError(f"image size {(H, W)} is not a multiple of the corruption unit {self.unit}")
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        masks, noise = self.cell_masks(B, H // self.unit, W // self.unit, rng)
        up = lambda a: torch.from_numpy(a).repeat_interleave(self.unit, 1).repeat_interleave(self.unit, 2)[:, None]
        mask, use_noise = up(masks).to(images.device), up(noise).to(images.device)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        std = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        filler_noise = mean + std * torch.randn_like(images)
        other = images.roll(1, dims=0) if B > 1 else filler_noise
        filler = torch.where(use_noise, filler_noise, other)
        return torch.where(mask, filler, images), mask


class ProjectionHead(nn.Module):
    """3-layer MLP projection (SimCLR/MoCo v3 style) followed by L2 normalisation."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)


class PixelDecoder(nn.Module):
    """Light decoder: per-patch MLP from tokens to ``patch*patch*C`` pixels, then un-patchify."""

    def __init__(self, dim: int, patch: int, channels: int, hidden: Optional[int] = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.patch, self.channels = patch, channels
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, patch * patch * channels))

    def forward(self, patch_tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        B, N, _ = patch_tokens.shape
        gh, gw = grid
        p, C = self.patch, self.channels
        x = self.mlp(patch_tokens).reshape(B, gh, gw, p, p, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, gh * p, gw * p)


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives; positives on the diagonal (Oord et al. 2018, Eq. 4)."""
    logits = query @ keys.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


@OBJECTIVES.register("sit")
class SiT(nn.Module):
    """GMML reconstruction + momentum-contrastive learning. Batch: ``{"views": [v1, v2, ...]}``
    (clean global views) and optionally ``"corrupted"``/``"corrupt_mask"`` (else corrupted here)."""

    def __init__(self, encoder: nn.Module, recon_weight: float = 1.0, contrastive_weight: float = 1.0,
                 temperature: float = 0.2, proj_dim: int = 128, proj_hidden: int = 512,
                 decoder_hidden: Optional[int] = None, corrupt_ratio: Tuple[float, float] = (0.5, 0.7),
                 noise_prob: float = 0.5, max_block_frac: float = 0.3, momentum: Tuple[float, float] = (0.996, 1.0),
                 momentum_kind: str = "cosine", predictor: bool = False) -> None:
        super().__init__()
        if recon_weight < 0 or contrastive_weight < 0 or recon_weight + contrastive_weight == 0:
            raise ValueError("sit: weights must be >= 0 and not both zero")
        self.encoder = encoder
        self.find_unused_parameters = True  # DDP: mask token / unused slices get no gradient
        self.recon_weight, self.contrastive_weight, self.temperature = recon_weight, contrastive_weight, temperature
        self.decoder = PixelDecoder(encoder.dim, encoder.patch_size, encoder.in_chans, decoder_hidden)
        self.head = ProjectionHead(encoder.dim, proj_hidden, proj_dim)
        # MoCo v3 (Chen et al. 2021) predictor on the query side only: asymmetry that speeds learning
        self.predictor = ProjectionHead(proj_dim, proj_hidden, proj_dim) if predictor else None
        self.teacher = EMATeacher(nn.ModuleDict({"encoder": encoder, "head": self.head}))
        self.corruptor = GroupMaskCorruptor(encoder.patch_size, tuple(corrupt_ratio), noise_prob, max_block_frac)
        self.momentum = momentum_schedule(momentum[0], momentum[1], momentum_kind)

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        views: List[torch.Tensor] = list(batch["views"])[:2]
        if "corrupted" in batch:
            corrupted, masks = list(batch["corrupted"])[:2], list(batch["corrupt_mask"])[:2]
        else:
            pairs = [self.corruptor(v) for v in views]
            corrupted, masks = [c for c, _ in pairs], [m for _, m in pairs]
        recon_losses, queries = [], []
        for clean, corrupt, mask in zip(views, corrupted, masks):
            tokens = self.encoder(corrupt)
            grid = (clean.shape[-2] // self.encoder.patch_size, clean.shape[-1] // self.encoder.patch_size)
            recon = self.decoder(self.encoder.patch_tokens(tokens), grid)
            m = mask.expand_as(clean).to(recon.dtype)
            recon_losses.append(((recon - clean).abs() * m).sum() / m.sum().clamp_min(1.0))
            query = self.head(self.encoder.pool(tokens))
            queries.append(self.predictor(query) if self.predictor is not None else query)
        recon_loss = torch.stack(recon_losses).mean()
        out: Dict[str, Any] = {"recon": recon_loss.detach()}
        loss = self.recon_weight * recon_loss
        if self.contrastive_weight > 0 and len(views) >= 2:
            with torch.no_grad():
                t_enc, t_head = self.teacher.module["encoder"], self.teacher.module["head"]
                keys = [t_head(t_enc.pool(t_enc(v))) for v in views]
            n = len(views)
            contrast = torch.stack([info_nce(queries[i], keys[(i + 1) % n], self.temperature)
                                    for i in range(n)]).mean()
            loss = loss + self.contrastive_weight * contrast
            out["contrastive"] = contrast.detach()
        out["loss"] = loss
        return out

    def on_step_end(self, step: int, total_steps: int) -> Dict[str, float]:
        m = self.momentum(step, total_steps)
        self.teacher.update(nn.ModuleDict({"encoder": self.encoder, "head": self.head}), m)
        return {"ema_momentum": m}
