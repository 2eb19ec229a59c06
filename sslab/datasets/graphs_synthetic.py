"""Synthetic graph families with controllable parameters: Erdos-Renyi, SBM, Barabasi-Albert, Watts-Strogatz.

Every parameter may be a scalar or a list; with a list, each graph draws one of the values uniformly and
its index becomes the graph label ``y`` (so a family with ``p: [0.1, 0.3]`` is a 2-class task). The
generators are networkx's (``gnp_random_graph``, ``stochastic_block_model``, ``barabasi_albert_graph``,
``watts_strogatz_graph``), seeded from one ``numpy`` Generator: the same ``seed`` gives the same graphs.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

if TYPE_CHECKING:
    import networkx as nx
    from torch_geometric.data import Data

from sslab.core.registry import DATASETS
from sslab.datasets.graphs import GraphSet, validate_graph

Generator = Callable[[int, Dict[str, Any], int], "nx.Graph"]


def _er(n: int, p: Dict[str, Any], seed: int) -> nx.Graph:
    import networkx as nx

    return nx.gnp_random_graph(n, float(p["p"]), seed=seed)


def _sbm(n: int, p: Dict[str, Any], seed: int) -> nx.Graph:
    import networkx as nx

    frac = np.asarray(p["block_fractions"], dtype=float)
    if frac.ndim != 1 or np.any(frac <= 0):
        raise ValueError(f"sbm: block_fractions must be positive, got {p['block_fractions']}")
    frac = frac / frac.sum()
    sizes = np.floor(frac * n).astype(int)
    sizes[: n - sizes.sum()] += 1  # distribute the remainder, keep sum == n
    probs = np.asarray(p["probs"], dtype=float)
    if probs.shape != (len(frac), len(frac)) or not np.allclose(probs, probs.T):
        raise ValueError(f"sbm: probs must be a symmetric {len(frac)}x{len(frac)} matrix, got {p['probs']}")
    return nx.stochastic_block_model(sizes.tolist(), probs.tolist(), seed=seed)


def _ba(n: int, p: Dict[str, Any], seed: int) -> nx.Graph:
    import networkx as nx

    return nx.barabasi_albert_graph(n, min(int(p["m"]), n - 1), seed=seed)


def _ws(n: int, p: Dict[str, Any], seed: int) -> nx.Graph:
    import networkx as nx

    return nx.watts_strogatz_graph(n, min(int(p["k"]), n - 1), float(p["p"]), seed=seed)


FAMILIES: Dict[str, Tuple[Generator, Dict[str, Any]]] = {
    "er": (_er, {"p": 0.2}),
    "sbm": (_sbm, {"block_fractions": [0.5, 0.5], "probs": [[0.5, 0.05], [0.05, 0.5]]}),
    "ba": (_ba, {"m": 2}),
    "ws": (_ws, {"k": 4, "p": 0.1}),
}
"""name -> (generator, default parameters)."""


def _choices(params: Dict[str, Any]) -> List[Tuple[str, List[Any]]]:
    """Parameters given as lists of alternatives (for SBM, nested lists are the value itself)."""
    out = []
    for k, v in params.items():
        is_alt = isinstance(v, (list, tuple)) and k not in ("block_fractions", "probs")
        is_alt = is_alt or (k == "block_fractions" and isinstance(v, (list, tuple)) and v
                            and isinstance(v[0], (list, tuple)))
        is_alt = is_alt or (k == "probs" and isinstance(v, (list, tuple)) and v and isinstance(v[0], (list, tuple))
                            and v[0] and isinstance(v[0][0], (list, tuple)))
        out.append((k, list(v) if is_alt else [v]))
    return out


def generate_family(family: str, num_graphs: int = 100, num_nodes: Sequence[int] = (20, 40), seed: int = 0,
                    **params: Any) -> GraphSet:
    """Generate ``num_graphs`` graphs of one family with node counts uniform in ``num_nodes`` (inclusive).

    Label ``y`` = index of the drawn combination of list-valued parameters (0 if all are scalars).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic graph family {family!r}; choose one of {sorted(FAMILIES)}")
    gen, defaults = FAMILIES[family]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"synthetic {family}: unknown parameter(s) {sorted(unknown)}; known: {sorted(defaults)}")
    if num_graphs <= 0:
        raise ValueError(f"synthetic {family}: num_graphs must be positive, got {num_graphs}")
    lo, hi = (int(num_nodes), int(num_nodes)) if isinstance(num_nodes, (int, np.integer)) else map(int, num_nodes)
    if lo < 2 or hi < lo:
        raise ValueError(f"synthetic {family}: num_nodes range must satisfy 2 <= lo <= hi, got {num_nodes}")
    merged = {**defaults, **params}
    keys, alts = zip(*_choices(merged))
    combos = list(itertools.product(*alts))
    from torch_geometric.data import Data

    rng = np.random.default_rng(seed)
    graphs: List[Data] = []
    for i in range(num_graphs):
        label = int(rng.integers(len(combos)))
        n = int(rng.integers(lo, hi + 1))
        g = gen(n, dict(zip(keys, combos[label])), int(rng.integers(2**31 - 1)))
        edges = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2)
        ei = torch.from_numpy(np.concatenate([edges, edges[:, ::-1]]).T.copy())
        d = Data(edge_index=ei, num_nodes=n, y=torch.tensor([label]))
        graphs.append(validate_graph(d, f"synthetic {family} graph {i}"))
    return GraphSet(name=f"synthetic-{family}", graphs=graphs, num_classes=len(combos),
                    label_values=[float(j) for j in range(len(combos))],
                    task="multiclass" if len(combos) > 1 else "none",
                    info={"family": family, "params": merged, "seed": seed})


@DATASETS.register("synthetic_graphs")
def synthetic_graphs(family: str, num_graphs: int = 100, num_nodes: Sequence[int] = (20, 40), seed: int = 0,
                     **params: Any) -> GraphSet:
    """Registry entry for :func:`generate_family`."""
    return generate_family(family, num_graphs=num_graphs, num_nodes=num_nodes, seed=seed, **params)
