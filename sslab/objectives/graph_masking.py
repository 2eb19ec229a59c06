"""Attribute masking for GNN pretraining (Hu et al., "Strategies for Pre-training Graph Neural Networks",
ICLR 2020, Sec. 3.1.1): mask node attributes (15% of nodes), let the GNN embed the graph, and predict the
masked attributes from the node embeddings with a linear decoder.

Targets: node features made of one-hot blocks (``categorical_groups``, e.g. ``[7, 33]`` for MUTAG atom type
+ degree) are predicted with one cross-entropy per block (Hu et al. predict the atom type this way);
otherwise mean squared error on the raw features.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslab.core.registry import OBJECTIVES


@OBJECTIVES.register("graph_attr_mask")
class GraphAttributeMasking(nn.Module):
    """Masked-attribute prediction. Batches come from ``GraphMaskCollator`` (a PyG ``Batch`` with ``mask``)."""

    def __init__(self, encoder: nn.Module, categorical_groups: Optional[List[int]] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.groups = list(categorical_groups or [])
        in_dim = int(encoder.in_dim)
        if self.groups and sum(self.groups) != in_dim:
            raise ValueError(f"graph_attr_mask: categorical_groups {self.groups} sum to {sum(self.groups)}, "
                             f"but node features have {in_dim} dims")
        self.decoder = nn.Linear(encoder.dim, in_dim)

    def forward(self, batch) -> Dict[str, Tensor]:
        mask = getattr(batch, "mask", None)
        if mask is None:
            raise ValueError("graph_attr_mask needs batches with a node mask (use GraphMaskCollator)")
        if not bool(mask.any()):
            raise ValueError("graph_attr_mask: batch has no masked node")
        tokens = self.encoder(batch, mask=mask)
        pred = self.decoder(tokens[mask])
        target = batch.x[mask].float()
        out: Dict[str, Tensor] = {}
        if not self.groups:
            out["loss"] = F.mse_loss(pred, target)
            return out
        losses, correct, count = [], 0.0, 0
        for logits, tgt in zip(pred.split(self.groups, dim=1), target.split(self.groups, dim=1)):
            has = tgt.sum(1) > 0  # rows whose block is all-zero carry no class
            if not bool(has.any()):
                continue
            cls = tgt[has].argmax(1)
            losses.append(F.cross_entropy(logits[has], cls))
            correct += float((logits[has].argmax(1) == cls).sum())
            count += int(has.sum())
        if not losses:
            raise ValueError("graph_attr_mask: masked nodes have no one-hot target in any group")
        out["loss"] = torch.stack(losses).sum()
        out["acc"] = torch.tensor(correct / max(count, 1))
        return out
