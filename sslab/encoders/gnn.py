"""Graph encoders on torch-geometric layers: GIN (Xu et al., ICLR 2019) and GCN (Kipf & Welling, ICLR 2017).

Defaults follow "Strategies for Pre-training Graph Neural Networks" (Hu et al., ICLR 2020): 5 layers,
300 hidden units, BatchNorm after every layer, ReLU on all but the last layer, mean graph pooling.

Token layout: ``forward(batch)`` returns **node tokens in PyG layout** ``[num_nodes_in_batch, dim]``
(not ``[B, N, D]``: graphs have different node counts); ``pool(tokens, batch)`` needs the PyG
``batch`` vector (or the ``Batch`` itself) and returns ``[num_graphs, dim]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # torch_geometric is imported lazily: plugin discovery must stay cheap
    from torch_geometric.data import Batch

from sslab.core.registry import ENCODERS


def _gin_conv(dim: int) -> nn.Module:
    """GIN update h' = MLP((1 + eps) h + sum_{u in N(v)} h_u)   (Xu et al. 2019, eq. 4.1)."""
    from torch_geometric.nn import GINConv

    mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
    return GINConv(mlp, train_eps=True)


def _gcn_conv(dim: int) -> nn.Module:
    """GCN update H' = D^-1/2 (A + I) D^-1/2 H W   (Kipf & Welling 2017, eq. 2)."""
    from torch_geometric.nn import GCNConv

    return GCNConv(dim, dim, add_self_loops=True, normalize=True)


CONVS: Dict[str, Callable[[int], nn.Module]] = {"gin": _gin_conv, "gcn": _gcn_conv}
POOLS = ("mean", "sum", "max")


class GNNEncoder(nn.Module):
    """Stack of message-passing layers over a linear input projection.

    ``mask`` (bool ``[num_nodes]``) replaces the input embedding of masked nodes by a learned
    ``mask_token`` (attribute masking of Hu et al. 2020, Sec. 3.1.1).
    """

    def __init__(self, conv: str = "gin", in_dim: int = 33, dim: int = 300, num_layers: int = 5,
                 dropout: float = 0.0, pooling: str = "mean", jk: str = "last") -> None:
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"unknown graph conv {conv!r}; choose one of {sorted(CONVS)}")
        if pooling not in POOLS:
            raise ValueError(f"unknown graph pooling {pooling!r}; choose one of {sorted(POOLS)}")
        if jk not in ("last", "sum", "concat"):
            raise ValueError(f"jk must be 'last', 'sum' or 'concat', got {jk!r}")
        if in_dim <= 0 or dim <= 0 or num_layers <= 0:
            raise ValueError(f"in_dim, dim and num_layers must be positive, got {in_dim}, {dim}, {num_layers}")
        self.in_dim, self.num_layers, self.pooling, self.jk = in_dim, num_layers, pooling, jk
        self.dim = dim * num_layers if jk == "concat" else dim
        self.input = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.convs = nn.ModuleList([CONVS[conv](dim) for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(dim) for _ in range(num_layers)])
        self.dropout = nn.Dropout(dropout)

    def layer_tokens(self, inputs: Batch, mask: Optional[Tensor] = None) -> List[Tensor]:
        """Node tokens after every layer, ``num_layers`` tensors ``[num_nodes, dim]`` (the last one without ReLU)."""
        x = getattr(inputs, "x", None)
        if x is None:
            raise ValueError("graph encoder: input graphs have no node features x (set data.features)")
        if x.size(-1) != self.in_dim:
            raise ValueError(f"graph encoder: node features have {x.size(-1)} dims, encoder in_dim={self.in_dim}")
        h = self.input(x.float())
        if mask is not None:
            if mask.shape != (h.size(0),) or mask.dtype != torch.bool:
                raise ValueError(f"graph encoder: mask must be bool [{h.size(0)}], got {mask.dtype} "
                                 f"{tuple(mask.shape)}")
            h = torch.where(mask[:, None], self.mask_token.to(h.dtype).expand_as(h), h)
        outs = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = norm(conv(h, inputs.edge_index))
            if i < self.num_layers - 1:
                h = torch.relu(h)
            h = self.dropout(h)
            outs.append(h)
        return outs

    def forward(self, inputs: Batch, mask: Optional[Tensor] = None) -> Tensor:
        """Node tokens ``[num_nodes, dim]`` for a PyG ``Batch`` (or ``Data``) with ``x`` and ``edge_index``."""
        outs = self.layer_tokens(inputs, mask)
        if self.jk == "last":
            return outs[-1]
        if self.jk == "sum":
            return torch.stack(outs).sum(0)
        return torch.cat(outs, dim=-1)

    def pool(self, tokens: Tensor, batch: Union[Tensor, Batch, None] = None, pooling: Optional[str] = None) -> Tensor:
        """Graph embeddings ``[num_graphs, dim]`` from node tokens and the PyG batch vector
        (``pooling`` overrides the encoder's own ``mean|sum|max``)."""
        from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

        pooling = pooling or self.pooling
        if pooling not in POOLS:
            raise ValueError(f"unknown graph pooling {pooling!r}; choose one of {sorted(POOLS)}")
        if hasattr(batch, "batch"):
            size = getattr(batch, "num_graphs", None)
            batch = batch.batch
        else:
            size = None
        if batch is None:
            batch = torch.zeros(tokens.size(0), dtype=torch.long, device=tokens.device)
            size = 1
        pool = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}[pooling]
        return pool(tokens, batch, size)

    def embed(self, inputs: Batch) -> Tensor:
        """``pool(forward(inputs), inputs)`` — graph-level features."""
        return self.pool(self(inputs), inputs)


@ENCODERS.register("gin")
def gin(in_dim: int = 33, dim: int = 300, num_layers: int = 5, dropout: float = 0.0, pooling: str = "mean",
        jk: str = "last") -> GNNEncoder:
    """GIN encoder (Hu et al. 2020 defaults: 5 x 300)."""
    return GNNEncoder("gin", in_dim, dim, num_layers, dropout, pooling, jk)


@ENCODERS.register("gcn")
def gcn(in_dim: int = 33, dim: int = 300, num_layers: int = 5, dropout: float = 0.0, pooling: str = "mean",
        jk: str = "last") -> GNNEncoder:
    """GCN encoder with the same layout as :func:`gin`."""
    return GNNEncoder("gcn", in_dim, dim, num_layers, dropout, pooling, jk)
