"""Graph augmentations and collators for graph self-supervision (run in DataLoader workers).

Augmentations follow GraphCL (You et al., NeurIPS 2020, Sec. 3.1 / Table 1): node dropping, edge
perturbation, subgraph, attribute masking, each with ratio ``r`` (default 0.2). They use torch's global
RNG, which the core trainer seeds per batch. Collators:

- :class:`GraphMaskCollator` - attribute masking of Hu et al. (ICLR 2020, Sec. 3.1.1): a ``mask_ratio``
  share of nodes per graph (at least one) gets ``batch.mask = True``; the encoder swaps their input for a
  learned mask token and the objective predicts their original features.
- :class:`GraphViewsCollator` - two independently augmented views per graph for GraphCL.
- :func:`collate_labelled` - ``(Data, y)`` items for probing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

if TYPE_CHECKING:  # torch_geometric is imported lazily: plugin discovery must stay cheap
    from torch_geometric.data import Batch, Data


def _keep_nodes(data: Data, keep: Tensor) -> Data:
    """Induced subgraph on the sorted node ids ``keep`` (relabelled to 0..k-1); node tensors sliced."""
    from torch_geometric.data import Data
    from torch_geometric.utils import subgraph as pyg_subgraph

    keep = keep.sort().values
    ei, _ = pyg_subgraph(keep, data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes)
    out = Data(edge_index=ei, num_nodes=int(keep.numel()))
    for key in ("x", "node_label"):
        if getattr(data, key, None) is not None:
            out[key] = data[key][keep]
    return out


def node_drop(data: Data, ratio: float = 0.2) -> Data:
    """Drop floor(ratio * n) random nodes and their edges (at least one node survives)."""
    n = data.num_nodes
    k = max(1, n - int(n * ratio))
    return _keep_nodes(data, torch.randperm(n)[:k])


def edge_perturb(data: Data, ratio: float = 0.2) -> Data:
    """Remove ratio * |E| random undirected edges and add as many random new ones (GraphCL)."""
    from torch_geometric.data import Data
    from torch_geometric.utils import coalesce, to_undirected

    n = data.num_nodes
    ei = data.edge_index
    und = ei[:, ei[0] < ei[1]]
    m = und.size(1)
    k = int(m * ratio)
    kept = und[:, torch.randperm(m)[: m - k]] if m else und
    if n > 1 and k > 0:
        src = torch.randint(0, n, (k,))
        dst = (src + torch.randint(1, n, (k,))) % n  # never a self-loop
        kept = torch.cat([kept, torch.stack([src, dst])], dim=1)
    new = coalesce(to_undirected(kept, num_nodes=n), num_nodes=n)
    out = Data(edge_index=new, num_nodes=n)
    for key in ("x", "node_label"):
        if getattr(data, key, None) is not None:
            out[key] = data[key]
    return out


def subgraph(data: Data, ratio: float = 0.2) -> Data:
    """Connected subgraph of ~(1 - ratio) * n nodes grown by random neighbour expansion from a random seed."""
    n = data.num_nodes
    target = max(1, n - int(n * ratio))
    ei = data.edge_index
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[int(torch.randint(0, n, (1,)))] = True
    while int(chosen.sum()) < target:
        frontier = ei[1, chosen[ei[0]] & ~chosen[ei[1]]].unique()
        if frontier.numel() == 0:  # component exhausted: jump to a random unchosen node
            rest = (~chosen).nonzero().view(-1)
            chosen[rest[torch.randint(0, rest.numel(), (1,))]] = True
            continue
        need = target - int(chosen.sum())
        pick = frontier[torch.randperm(frontier.numel())[:need]]
        chosen[pick] = True
    return _keep_nodes(data, chosen.nonzero().view(-1))


def attr_mask(data: Data, ratio: float = 0.2) -> Data:
    """Zero the features of ratio * n random nodes (GraphCL's attribute masking)."""
    out = data.clone()
    n = data.num_nodes
    k = int(n * ratio)
    if k and out.x is not None:
        out.x = out.x.clone()
        out.x[torch.randperm(n)[:k]] = 0
    return out


def identity(data: Data, ratio: float = 0.0) -> Data:
    return data


AUGMENTATIONS: Dict[str, Callable[[Data, float], Data]] = {
    "node_drop": node_drop, "edge_perturb": edge_perturb, "subgraph": subgraph, "attr_mask": attr_mask,
    "identity": identity,
}


def _strip(data: Data) -> Data:
    """Only what the encoder needs (drops labels of different dtypes that would upset batching)."""
    from torch_geometric.data import Data

    return Data(x=data.x, edge_index=data.edge_index, num_nodes=data.num_nodes)


class GraphViewsCollator:
    """Two GraphCL views per graph: each view applies one augmentation drawn uniformly from ``augmentations``."""

    def __init__(self, augmentations: Sequence[str] = ("node_drop", "edge_perturb", "subgraph", "attr_mask"),
                 ratio: float = 0.2) -> None:
        unknown = [a for a in augmentations if a not in AUGMENTATIONS]
        if unknown or not augmentations:
            raise ValueError(f"unknown graph augmentation(s) {unknown}; choose from {sorted(AUGMENTATIONS)}")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"augmentation ratio must be in [0, 1), got {ratio}")
        self.augs = [AUGMENTATIONS[a] for a in augmentations]
        self.ratio = ratio

    def _view(self, g: Data) -> Data:
        aug = self.augs[int(torch.randint(0, len(self.augs), (1,)))]
        return _strip(aug(g, self.ratio))

    def __call__(self, graphs: Sequence[Data]) -> Dict[str, Batch]:
        from torch_geometric.data import Batch

        return {"view1": Batch.from_data_list([self._view(g) for g in graphs]),
                "view2": Batch.from_data_list([self._view(g) for g in graphs])}


class GraphMaskCollator:
    """Batch graphs and mark ``mask_ratio`` of each graph's nodes (at least one) in ``batch.mask``."""

    def __init__(self, mask_ratio: float = 0.15) -> None:
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio

    def __call__(self, graphs: Sequence[Data]) -> Batch:
        from torch_geometric.data import Batch

        batch = Batch.from_data_list([_strip(g) for g in graphs])
        masks: List[Tensor] = []
        for g in graphs:
            n = g.num_nodes
            k = max(1, round(n * self.mask_ratio))
            m = torch.zeros(n, dtype=torch.bool)
            m[torch.randperm(n)[:k]] = True
            masks.append(m)
        batch.mask = torch.cat(masks)
        return batch


def collate_labelled(items: Sequence[Tuple[Data, Tensor]]) -> Tuple[Batch, Tensor]:
    """Probe collate: ``(Batch of graphs, labels)``."""
    from torch_geometric.data import Batch

    graphs, ys = zip(*items)
    return Batch.from_data_list([_strip(g) for g in graphs]), torch.stack([torch.as_tensor(y) for y in ys])
