"""UniTabE pretraining objectives (Yang et al., ICLR 2024, Sec. 3.3) for the TabUnit encoder.

* ``tab_masked_cell`` — multi-cell masking with reconstruction. The collator hides a fraction of each
  row's cell values (``batch["mask"]``); the encoder sees the names and types only. Reconstruction is
  either

  - ``recon="typed"``: typed heads; numeric cells regress the column-z-scored value (MSE), every other
    masked cell (categorical / boolean / text / missing) predicts its bag of value tokens over the shared
    vocabulary (cross-entropy against the uniform distribution on its tokens); or
  - ``recon="decoder"``: UniTabE's shallow decoder — a one-layer GRU initialised from the masked cell's
    output generates the value tokens (digits for numbers) with teacher forcing, token cross-entropy.

* ``tab_partition_contrastive`` — column-partition contrastive learning (TransTab, Wang & Sun 2022;
  UniTabE Sec. 3.3): overlapping column subsets of the same row (``batch["views"]``) are positives, all
  other rows in the batch negatives; multi-positive InfoNCE (SupCon, Khosla et al. 2020, Eq. 2) on
  normalised projections of [CLS].

* ``unitabe`` — their weighted sum, sharing one encoder.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.tables_tokenize import BOS, EOS, PAD


class TypedCellHeads(nn.Module):
    """Numeric regression head + token-bag head over the vocabulary (loss on masked cells)."""

    def __init__(self, dim: int, vocab_size: int, numeric_weight: float = 1.0) -> None:
        super().__init__()
        self.num_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.tok_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, vocab_size))
        self.numeric_weight = numeric_weight

    def forward(self, h: torch.Tensor, batch: Dict[str, torch.Tensor], sel: torch.Tensor) -> Dict[str, torch.Tensor]:
        is_num = batch["num_valid"][sel]
        out: Dict[str, torch.Tensor] = {}
        zero = h.sum() * 0.0
        if is_num.any():
            pred = self.num_head(h[is_num]).squeeze(-1).float()
            out["loss_num"] = F.mse_loss(pred, batch["num_z"][sel][is_num].float())
        else:
            out["loss_num"] = zero
        if (~is_num).any():
            ids = batch["value_ids"][sel][~is_num]  # [M, L]
            target = torch.zeros(ids.shape[0], self.tok_head[-1].out_features, device=h.device)
            target.scatter_add_(1, ids, (ids != PAD).float())
            target = target / target.sum(1, keepdim=True).clamp_min(1.0)
            logits = self.tok_head(h[~is_num]).float()
            out["loss_tok"] = -(target * logits.log_softmax(-1)).sum(1).mean()
            with torch.no_grad():
                top = logits.argmax(-1)
                out["tok_top1_in_value"] = (target.gather(1, top[:, None]) > 0).float().mean()
        else:
            out["loss_tok"] = zero
        out["loss"] = self.numeric_weight * out["loss_num"] + out["loss_tok"]
        return out


class ShallowValueDecoder(nn.Module):
    """One-layer GRU generating value tokens from the masked cell's vector (UniTabE's shallow decoder)."""

    def __init__(self, dim: int, vocab_size: int, embed: nn.Embedding) -> None:
        super().__init__()
        self.embed = embed  # shared with the encoder's token embedding
        self.init = nn.Linear(dim, dim)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, vocab_size)

    def forward(self, h: torch.Tensor, batch: Dict[str, torch.Tensor], sel: torch.Tensor) -> Dict[str, torch.Tensor]:
        ids = batch["value_ids"][sel]  # [M, L]
        M, L = ids.shape
        lengths = (ids != PAD).sum(1)
        target = torch.cat([ids, torch.zeros(M, 1, dtype=ids.dtype, device=ids.device)], 1)
        target[torch.arange(M, device=ids.device), lengths] = EOS
        inp = torch.cat([torch.full((M, 1), BOS, dtype=ids.dtype, device=ids.device), ids], 1)
        states, _ = self.gru(self.embed(inp), torch.tanh(self.init(h)).unsqueeze(0).contiguous())
        logits = self.out(states).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD)
        with torch.no_grad():
            valid = target != PAD
            acc = ((logits.argmax(-1) == target) & valid).sum() / valid.sum().clamp_min(1)
        return {"loss": loss, "loss_tok": loss, "tok_acc": acc}


def _masked_cell_loss(encoder: nn.Module, head: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if "mask" not in batch:
        raise KeyError("masked-cell objective needs batch['mask']: set the collator's mask_ratio > 0")
    mask = batch["mask"] & batch["cell_mask"]
    tokens = encoder(batch, mask=mask)
    h = tokens[:, 1:][mask]
    return head(h, batch, mask)


def _build_recon_head(encoder: nn.Module, recon: str, numeric_weight: float) -> nn.Module:
    if recon == "typed":
        return TypedCellHeads(encoder.dim, encoder.vocab_size, numeric_weight)
    if recon == "decoder":
        return ShallowValueDecoder(encoder.dim, encoder.vocab_size, encoder.tok_emb)
    raise ValueError(f"tab_masked_cell: recon must be 'typed' or 'decoder', got {recon!r}")


@OBJECTIVES.register("tab_masked_cell")
class MaskedCellObjective(nn.Module):
    """Multi-cell masking with typed-head or shallow-decoder reconstruction."""

    def __init__(self, encoder: nn.Module, recon: str = "typed", numeric_weight: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = _build_recon_head(encoder, recon, numeric_weight)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return _masked_cell_loss(self.encoder, self.head, batch)


class PartitionContrastiveHead(nn.Module):
    """Projection + multi-positive InfoNCE over the column views of each row."""

    def __init__(self, dim: int, proj_dim: int = 128, temperature: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, proj_dim))
        self.temperature = temperature

    def forward(self, encoder: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if "views" not in batch:
            raise KeyError("column-partition contrastive needs batch['views']: set the collator's n_views >= 2")
        views = batch["views"]
        V, B, _ = views.shape
        if V < 2:
            raise ValueError(f"column-partition contrastive needs at least 2 views, got {V}")
        stacked = {k: torch.cat([batch[k]] * V) for k in ("name_ids", "value_ids", "value_pos", "type_ids")}
        stacked["cell_mask"] = (views & batch["cell_mask"].unsqueeze(0)).reshape(V * B, -1)
        z = F.normalize(self.proj(encoder.pool(encoder(stacked))).float(), dim=-1)
        return {"loss": supcon_loss(z, torch.arange(B, device=z.device).repeat(V), self.temperature)}


def supcon_loss(z: torch.Tensor, row: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-positive InfoNCE (Khosla et al. 2020, Eq. 2): positives share ``row``, self excluded."""
    sim = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    pos = (row[:, None] == row[None, :]) & ~self_mask
    log_prob = sim.log_softmax(1).masked_fill(~pos, 0.0)
    return -(log_prob.sum(1) / pos.sum(1).clamp_min(1)).mean()


@OBJECTIVES.register("tab_partition_contrastive")
class PartitionContrastiveObjective(nn.Module):
    def __init__(self, encoder: nn.Module, proj_dim: int = 128, temperature: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = PartitionContrastiveHead(encoder.dim, proj_dim, temperature)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.head(self.encoder, batch)


@OBJECTIVES.register("unitabe")
class UniTabEObjective(nn.Module):
    """``mcm_weight * masked-cell + contrastive_weight * column-partition contrastive``."""

    def __init__(self, encoder: nn.Module, recon: str = "typed", numeric_weight: float = 1.0,
                 mcm_weight: float = 1.0, contrastive_weight: float = 0.5, proj_dim: int = 128,
                 temperature: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.recon = _build_recon_head(encoder, recon, numeric_weight)
        self.contrast = PartitionContrastiveHead(encoder.dim, proj_dim, temperature)
        self.mcm_weight, self.contrastive_weight = mcm_weight, contrastive_weight

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        loss = 0.0
        if self.mcm_weight:
            mcm = _masked_cell_loss(self.encoder, self.recon, batch)
            out.update({f"mcm_{k}" if k == "loss" else k: v for k, v in mcm.items()})
            loss = loss + self.mcm_weight * mcm["loss"]
        if self.contrastive_weight:
            con = self.contrast(self.encoder, batch)["loss"]
            out["contrastive_loss"] = con
            loss = loss + self.contrastive_weight * con
        out["loss"] = loss
        return out
