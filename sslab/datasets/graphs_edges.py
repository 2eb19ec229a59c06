"""Positive edges and sampled negative node pairs for edge-prediction pretraining (runs in DataLoader workers).

GraphSAGE's unsupervised loss (Hamilton et al., NeurIPS 2017, eq. 1) as used for the "EdgePred" baseline of
"Strategies for Pre-training GNNs" (Hu et al., ICLR 2020; their ``NegativeEdge`` transform): the positives
are a graph's existing (undirected) edges, the negatives are random node pairs **of the same graph** that are
not edges. The GNN sees the full graph (as in Hu et al.'s code), so the task is: do the embeddings of two
nodes say whether they are adjacent.

Negative sampling policy (tested): ``round(neg_ratio * m_g)`` negatives for a graph with ``m_g`` undirected
edges (at least one when ``m_g > 0``), drawn uniformly from the ordered pairs ``u != v`` that are not edges
(rejection sampling, then exact enumeration of the non-edges for very dense graphs). A negative is never a
self-loop and never an existing edge. A graph with no non-edge at all (a complete graph) gets no negatives;
those missing negatives are counted in ``batch.neg_missing`` (never silently). Duplicate negatives can occur
(sampling with replacement).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:  # torch_geometric is imported lazily: plugin discovery must stay cheap
    from torch_geometric.data import Batch, Data

from sslab.datasets.graphs_augment import _strip


def undirected_edges(edge_index: Tensor) -> Tensor:
    """Unique undirected edges ``[2, m]`` with ``u < v`` (self-loops dropped)."""
    if edge_index.numel() == 0:
        return edge_index.new_zeros((2, 0))
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    keep = lo != hi
    pairs = torch.stack([lo[keep], hi[keep]])
    return torch.unique(pairs, dim=1)


def sample_negative_pairs(edge_index: Tensor, num_nodes: int, num: int, max_rounds: int = 20) -> Tensor:
    """``[2, k]`` random node pairs ``u != v`` of one graph that are not edges (``k <= num``; ``k < num`` only
    if the graph has no non-edge). Uses torch's global RNG."""
    n = int(num_nodes)
    if num <= 0 or n < 2:
        return torch.zeros((2, 0), dtype=torch.long)
    und = undirected_edges(edge_index)
    edge_keys = torch.cat([und[0] * n + und[1], und[1] * n + und[0]])
    if edge_keys.numel() >= n * (n - 1):  # complete graph: no non-edge exists
        return torch.zeros((2, 0), dtype=torch.long)
    out = []
    need = num
    for _ in range(max_rounds):
        u = torch.randint(0, n, (2 * need + 4,))
        v = (u + torch.randint(1, n, (u.numel(),))) % n  # never a self-loop
        ok = ~torch.isin(u * n + v, edge_keys)
        good = torch.stack([u[ok], v[ok]])[:, :need]
        out.append(good)
        need -= good.size(1)
        if need == 0:
            return torch.cat(out, dim=1)
    # very dense graph: enumerate its non-edges and draw the rest from them
    allu, allv = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    allu, allv = allu.reshape(-1), allv.reshape(-1)
    free = (allu != allv) & ~torch.isin(allu * n + allv, edge_keys)
    cand = torch.stack([allu[free], allv[free]])
    out.append(cand[:, torch.randint(0, cand.size(1), (need,))])
    return torch.cat(out, dim=1)


class GraphEdgeCollator:
    """Batch graphs; add ``pos_edge_index`` (every undirected edge once) and ``neg_edge_index`` (sampled
    non-edges of the same graph, ``neg_ratio`` per positive), both in batch node numbering."""

    def __init__(self, neg_ratio: float = 1.0) -> None:
        if not neg_ratio > 0:
            raise ValueError(f"neg_ratio must be positive, got {neg_ratio}")
        self.neg_ratio = float(neg_ratio)

    def __call__(self, graphs: Sequence[Data]) -> Batch:
        from torch_geometric.data import Batch

        batch = Batch.from_data_list([_strip(g) for g in graphs])
        pos, neg, missing, offset = [], [], 0, 0
        for g in graphs:
            und = undirected_edges(g.edge_index)
            m = und.size(1)
            want = max(1, round(self.neg_ratio * m)) if m else 0
            ng = sample_negative_pairs(g.edge_index, g.num_nodes, want)
            missing += want - ng.size(1)
            pos.append(und + offset)
            neg.append(ng + offset)
            offset += int(g.num_nodes)
        batch.pos_edge_index = torch.cat(pos, dim=1)
        batch.neg_edge_index = torch.cat(neg, dim=1)
        batch.neg_missing = missing
        return batch
