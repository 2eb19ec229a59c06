"""Edge prediction for GNN pretraining: the GraphSAGE unsupervised loss (Hamilton et al., NeurIPS 2017, eq. 1)
in the form of the "EdgePred" baseline of "Strategies for Pre-training GNNs" (Hu et al., ICLR 2020).

Node embeddings h = GNN(graph) over the full graph; the score of a node pair is the dot product
s(u, v) = <h_u, h_v>; the loss is binary cross-entropy with logits

    L = mean_{(u,v) in E} -log sigma(s(u, v))  +  mean_{(u,v) in N} -log(1 - sigma(s(u, v)))

with N the sampled non-edges of ``GraphEdgeCollator`` (``neg_ratio`` negatives per positive; GraphSAGE writes
the negative term as Q * E_{v_n ~ P_n}, our mean over ``neg_ratio * |E|`` samples is the same up to the
constant Q). Each term is a mean, so the two classes keep equal weight whatever ``neg_ratio`` is.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslab.core.registry import OBJECTIVES


def edge_scores(tokens: Tensor, pairs: Tensor) -> Tensor:
    """Dot products ``<h_u, h_v>`` for ``pairs`` ``[2, k]`` of rows of ``tokens`` ``[num_nodes, D]``."""
    return (tokens[pairs[0]] * tokens[pairs[1]]).sum(-1)


@OBJECTIVES.register("graph_edge_pred")
class GraphEdgePrediction(nn.Module):
    """Edge prediction; batches come from ``GraphEdgeCollator`` (``pos_edge_index``, ``neg_edge_index``)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch) -> Dict[str, Tensor]:
        pos = getattr(batch, "pos_edge_index", None)
        neg = getattr(batch, "neg_edge_index", None)
        if pos is None or neg is None:
            raise ValueError("graph_edge_pred needs batches with pos_edge_index and neg_edge_index "
                             "(use GraphEdgeCollator)")
        if pos.size(1) == 0 or neg.size(1) == 0:
            raise ValueError(f"graph_edge_pred: batch has {pos.size(1)} positive and {neg.size(1)} negative "
                             "pairs; both are needed (graphs without edges, or only complete graphs?)")
        tokens = self.encoder(batch).float()
        s_pos, s_neg = edge_scores(tokens, pos), edge_scores(tokens, neg)
        loss = (F.binary_cross_entropy_with_logits(s_pos, torch.ones_like(s_pos))
                + F.binary_cross_entropy_with_logits(s_neg, torch.zeros_like(s_neg)))
        with torch.no_grad():
            acc = ((s_pos > 0).float().sum() + (s_neg <= 0).float().sum()) / (s_pos.numel() + s_neg.numel())
        return {"loss": loss, "acc": acc}
