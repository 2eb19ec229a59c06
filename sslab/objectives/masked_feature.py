"""Masked feature modeling for vector data (a denoising autoencoder with MAE-style masking).

Each sample hides a random ``mask_ratio`` of its features; the encoder sees the visible features
plus the mask indicator and a linear decoder reconstructs the hidden ones. Loss: mean squared error on
the masked features only (He et al. 2022, MAE, Eq. for the masked-patch loss; Vincent et al. 2008).
The mask is drawn in the collator (``MaskedFeatureCollate``) so it runs on data workers.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from torch import nn

from sslab.core.registry import OBJECTIVES


class MaskedFeatureCollate:
    """Stack ``[D]`` vectors and draw a Bernoulli(``mask_ratio``) mask with at least one hidden feature."""

    def __init__(self, mask_ratio: float = 0.5) -> None:
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio

    def __call__(self, samples: Sequence[Any]) -> Dict[str, torch.Tensor]:
        x = torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in samples])
        mask = torch.rand(x.shape) < self.mask_ratio
        empty = ~mask.any(dim=1)
        if empty.any():  # guarantee a target in every row
            mask[empty, torch.randint(x.shape[1], (int(empty.sum()),))] = True
        return {"x": x, "mask": mask}


@OBJECTIVES.register("masked_feature")
class MaskedFeatureModeling(nn.Module):
    """Reconstruct hidden features from visible ones; ``encoder`` must accept ``mask=``."""

    def __init__(self, encoder: nn.Module, in_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = nn.Sequential(nn.Linear(encoder.dim, hidden), nn.GELU(), nn.Linear(hidden, in_dim))

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x, mask = batch["x"], batch["mask"]
        z = self.encoder.pool(self.encoder(x, mask=mask))
        recon = self.decoder(z)
        err = (recon - x).pow(2)
        loss = (err * mask).sum() / mask.sum().clamp_min(1)
        return {"loss": loss, "loss_visible": (err * ~mask).sum() / (~mask).sum().clamp_min(1)}
