"""GraphCL (You et al., "Graph Contrastive Learning with Augmentations", NeurIPS 2020).

Two augmented views of each graph (``GraphViewsCollator``) -> GNN -> graph pooling -> projection head
g(.) (2-layer MLP) -> NT-Xent, eq. (3) of the paper:
    l_n = -log  exp(sim(z_n1, z_n2) / tau) / sum_{n' != n} exp(sim(z_n1, z_n'2) / tau)
(cosine similarity; negatives are the other graphs of the batch in the other view, the positive is not
in the denominator). We average it over both directions (view 1 -> 2 and 2 -> 1).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslab.core.registry import OBJECTIVES


def graphcl_nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.2) -> Tensor:
    """GraphCL eq. (3), symmetrised; ``z1``/``z2`` are ``[N, D]`` projections of the two views (N >= 2)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"views must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.size(0) < 2:
        raise ValueError("GraphCL needs at least 2 graphs per batch (the others are the negatives)")
    sim = F.normalize(z1.float(), dim=1) @ F.normalize(z2.float(), dim=1).T / temperature
    eye = torch.eye(sim.size(0), dtype=torch.bool, device=sim.device)

    def one_way(s: Tensor) -> Tensor:
        pos = s.diagonal()
        neg = torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=1)
        return (neg - pos).mean()

    return (one_way(sim) + one_way(sim.T)) / 2


@OBJECTIVES.register("graphcl")
class GraphCL(nn.Module):
    """Contrastive pretraining on two augmented views; batches are ``{"view1": Batch, "view2": Batch}``."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"graphcl: temperature must be positive, got {temperature}")
        self.encoder = encoder
        self.temperature = temperature
        d = int(encoder.dim)
        self.projector = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, proj_dim))

    def _project(self, view) -> Tensor:
        return self.projector(self.encoder.pool(self.encoder(view), view))

    def forward(self, batch) -> Dict[str, Tensor]:
        if not isinstance(batch, dict) or "view1" not in batch or "view2" not in batch:
            raise ValueError("graphcl needs batches {'view1': Batch, 'view2': Batch} (use GraphViewsCollator)")
        z1, z2 = self._project(batch["view1"]), self._project(batch["view2"])
        loss = graphcl_nt_xent(z1, z2, self.temperature)
        with torch.no_grad():
            sim = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T
            top1 = (sim.argmax(1) == torch.arange(sim.size(0), device=sim.device)).float().mean()
        return {"loss": loss, "top1": top1}
