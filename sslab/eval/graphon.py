"""Step-function graphons from sets of graphs, graph statistics, and (fused) Gromov-Wasserstein distances.

A graph with n nodes sorted by degree (descending) is the step function W_G(x, y) = A[u, v] for
x in [u/n, (u+1)/n), y in [v/n, (v+1)/n). At resolution K we integrate it exactly over the K x K grid:
W_K = K^2 M^T A M with M[u, k] = |I_u ∩ B_k| (the overlap of node u's interval with bin k), so graphs of
any size land on one grid without padding. A set of graphs gets the average of the per-graph grids
(the aligned-average of G-Mixup, Han et al., ICML 2022) - one pass, linear in the number of graphs.

Node-level estimators applied to each graph before the projection:

- ``sas``: the adjacency itself, then total-variation smoothing of the averaged K x K histogram -
  "sorting-and-smoothing" (Chan & Airoldi, ICML 2014: degree sort, block-average histogram, TV denoise).
- ``usvt``: universal singular value thresholding (Chatterjee, Ann. Stat. 2015): keep singular values of
  A above (2 + eta) sqrt(n * rho(1 - rho)) (rho = edge density; the noise scale of a Bernoulli
  matrix), reconstruct, clip to [0, 1].
- ``largest_gap``: the largest-gap SBM estimator (Channarond, Daudin & Robin, EJS 2012): sort normalised
  degrees, cut at the ``k - 1`` largest gaps, replace A by the block edge densities.

Distances: POT's Gromov-Wasserstein (Memoli 2011; Peyre et al., ICML 2016) with the square loss between
the two K x K matrices under uniform measures, or fused GW (Vayer et al., ICML 2019) whose feature is the
degree function d(x) = ∫ W(x, y) dy. Values are the GW objective (squared-loss discrepancy), which is 0
for identical graphons; the non-convex solver is started from several couplings and the best is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path
from tqdm.auto import tqdm

from sslab.core.progress import show_progress
from sslab.datasets.graphs import GraphDataError

if TYPE_CHECKING:
    from torch_geometric.data import Data


# ----------------------------------------------------------------------------------- graph -> matrices
DENSE_MAX_NODES = 1000
"""Graphs up to this many nodes get a dense numpy adjacency: building a scipy CSR matrix costs ~1 ms per
graph, which dominated graphon estimation and graph statistics on TU sets (tens of nodes per graph)."""


def adjacency(g: Data, where: str = "graph", dense: Optional[bool] = None) -> sp.csr_matrix | np.ndarray:
    """Symmetric binary adjacency (no self-loops); empty graphs raise. Dense ``float64`` array for graphs of
    at most :data:`DENSE_MAX_NODES` nodes (``dense=None``), else CSR; both hold the same 0/1 entries."""
    n = int(g.num_nodes or 0)
    if n <= 0:
        raise GraphDataError(f"{where}: empty graph (0 nodes) cannot be turned into a graphon")
    ei = g.edge_index.cpu().numpy()
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise GraphDataError(f"{where}: edge index out of range for {n} nodes")
    keep = ei[0] != ei[1]  # self-loops carry no pair information
    if (n <= DENSE_MAX_NODES) if dense is None else dense:
        a = np.zeros((n, n))
        a[ei[0, keep], ei[1, keep]] = 1.0  # duplicates collapse; binary
        a[ei[1, keep], ei[0, keep]] = 1.0
        return a
    r = np.concatenate([ei[0, keep], ei[1, keep]])
    c = np.concatenate([ei[1, keep], ei[0, keep]])
    a = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    a.data[:] = 1.0  # duplicates were summed; binarise
    return a


def overlap_matrix(n: int, resolution: int) -> np.ndarray:
    """M[u, k] = |[u/n, (u+1)/n) ∩ [k/K, (k+1)/K)| for n nodes and K bins (rows sum to 1/n)."""
    u = np.arange(n)[:, None]
    k = np.arange(resolution)[None, :]
    lo = np.maximum(u / n, k / resolution)
    hi = np.minimum((u + 1) / n, (k + 1) / resolution)
    return np.clip(hi - lo, 0.0, None)


def degree_order(a: sp.csr_matrix | np.ndarray) -> np.ndarray:
    """Node order by degree, descending (stable, so ties keep their input order)."""
    deg = np.asarray(a.sum(axis=1)).ravel()
    return np.argsort(-deg, kind="stable")


def project(p: sp.spmatrix | np.ndarray, order: np.ndarray, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """Edge mass and pair mass of the step function of ``p`` (nodes in ``order``) on the K x K grid.

    Returns ``(M^T P M, M^T (J - I) M)``: their ratio is the block average of ``p`` over node pairs
    u != v (self-pairs carry no information), i.e. the SAS histogram of Chan & Airoldi (2014).
    """
    n = p.shape[0]
    m = overlap_matrix(n, resolution)
    inv = np.empty_like(order)
    inv[order] = np.arange(n)
    m = m[inv]  # node u sits at rank inv[u]
    edge_mass = m.T @ np.asarray(p @ m)
    colsum = m.sum(axis=0)
    pair_mass = np.outer(colsum, colsum) - m.T @ m
    return edge_mass, pair_mass


# ----------------------------------------------------------------------------------- node-level estimators
def _est_sas(a: sp.csr_matrix, **_: float) -> sp.csr_matrix:
    return a


def _dense(a: sp.spmatrix | np.ndarray) -> np.ndarray:
    return a.toarray() if sp.issparse(a) else np.asarray(a)


def _est_usvt(a: sp.csr_matrix, eta: float = 0.01, **_: float) -> np.ndarray:
    n = a.shape[0]
    if n < 2:
        return _dense(a)
    from threadpoolctl import threadpool_limits  # scikit-learn dependency

    dense = _dense(a)
    rho = dense.sum() / (n * (n - 1))
    sigma = np.sqrt(max(rho * (1 - rho), 1.0 / n))
    with threadpool_limits(1):  # many small SVDs: BLAS threads only oversubscribe (30x slower measured)
        u, s, vt = np.linalg.svd(dense)
    keep = s >= (2 + eta) * np.sqrt(n) * sigma
    est = (u[:, keep] * s[keep]) @ vt[keep]
    return np.clip(est, 0.0, 1.0)


def _est_largest_gap(a: sp.csr_matrix, k: int = 3, **_: float) -> np.ndarray:
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).ravel() / max(n - 1, 1)
    order = np.argsort(-deg, kind="stable")
    k = int(min(k, n))
    gaps = -np.diff(deg[order])  # >= 0
    cuts = np.sort(np.argsort(-gaps, kind="stable")[: k - 1]) + 1 if k > 1 else np.array([], dtype=int)
    labels = np.zeros(n, dtype=int)
    for c in cuts:
        labels[order[c:]] += 1
    onehot = np.eye(labels.max() + 1)[labels]  # n x k
    sizes = onehot.sum(0)
    edges = onehot.T @ (a @ onehot)
    pairs = np.outer(sizes, sizes) - np.diag(sizes)
    dens = np.divide(edges, pairs, out=np.zeros_like(edges), where=pairs > 0)
    return onehot @ dens @ onehot.T


ESTIMATORS: Dict[str, Callable[..., sp.spmatrix | np.ndarray]] = {
    "sas": _est_sas, "usvt": _est_usvt, "largest_gap": _est_largest_gap,
}


# ----------------------------------------------------------------------------------- smoothing
def tv_denoise(img: np.ndarray, weight: float, n_iter: int = 100) -> np.ndarray:
    """Isotropic total-variation denoising, Chambolle's projection algorithm (J. Math. Imaging Vis. 2004).

    Solves min_u ||u - img||^2 / 2 + weight * TV(u).
    """
    if weight <= 0:
        return img.copy()
    px = np.zeros_like(img)
    py = np.zeros_like(img)
    tau = 0.125
    u = img
    for _ in range(n_iter):
        div = np.zeros_like(img)
        div[:, 0] = px[:, 0]
        div[:, 1:] = px[:, 1:] - px[:, :-1]
        div[0, :] += py[0, :]
        div[1:, :] += py[1:, :] - py[:-1, :]
        u = img + weight * div
        gx = np.zeros_like(img)
        gy = np.zeros_like(img)
        gx[:, :-1] = u[:, 1:] - u[:, :-1]
        gy[:-1, :] = u[1:, :] - u[:-1, :]
        norm = np.sqrt(gx ** 2 + gy ** 2)
        denom = 1.0 + tau / weight * norm
        px = (px + tau / weight * gx) / denom
        py = (py + tau / weight * gy) / denom
    return u


# ----------------------------------------------------------------------------------- graphon estimation
@dataclass
class Graphon:
    """A K x K step-function graphon estimated from ``num_graphs`` graphs."""

    W: np.ndarray
    name: str = "graphon"
    num_graphs: int = 0
    estimator: str = "sas"
    meta: Dict[str, object] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.W.shape[0])

    def degree(self) -> np.ndarray:
        """Degree function d(x) = ∫ W(x, y) dy on the grid."""
        return self.W.mean(axis=1)


def combine(bases: Sequence[Graphon], weights: Sequence[float], name: str = "generator") -> Graphon:
    """Convex combination sum_m w_m B_m of graphons on the same grid (W2PGNN generator space)."""
    w = np.asarray(weights, dtype=float)
    if len(w) != len(bases):
        raise ValueError(f"{len(w)} weights for {len(bases)} bases")
    if np.any(w < -1e-9) or abs(w.sum() - 1) > 1e-6:
        raise ValueError(f"weights must lie on the simplex (>= 0, sum 1), got {w}")
    res = {b.resolution for b in bases}
    if len(res) != 1:
        raise ValueError(f"bases have different resolutions {sorted(res)}")
    W = np.tensordot(w, np.stack([b.W for b in bases]), axes=1)
    return Graphon(W, name, sum(b.num_graphs for b in bases), bases[0].estimator)


def _check_estimator(estimator: str, resolution: int) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown graphon estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")


def graph_masses(g: Data, resolution: int, estimator: str = "sas", where: str = "graph",
                 **est_kwargs: float) -> Tuple[np.ndarray, np.ndarray]:
    """One graph's ``(edge mass, pair mass)`` on the K x K grid (:func:`project` of the estimator's output)."""
    a = adjacency(g, where)
    return project(ESTIMATORS[estimator](a, **est_kwargs), degree_order(a), resolution)


def finish_graphon(edge_acc: np.ndarray, pair_acc: np.ndarray, num_graphs: int, estimator: str = "sas",
                   smoothing: Optional[float] = None, name: str = "graphon") -> Graphon:
    """Pooled block average of accumulated masses, TV smoothing, clipping, symmetrisation."""
    resolution = edge_acc.shape[0]
    # pooled block average over all (graph, u != v) pairs falling in a cell; a cell that only ever holds
    # self-pairs (all graphs smaller than the grid) is 0, as in the graph's own step function
    W = np.divide(edge_acc, pair_acc, out=np.zeros_like(edge_acc), where=pair_acc > 1e-12)
    weight = (0.02 if estimator == "sas" else 0.0) if smoothing is None else float(smoothing)
    W = np.clip(tv_denoise(W, weight), 0.0, 1.0)
    W = (W + W.T) / 2
    return Graphon(W, name, num_graphs, estimator, {"resolution": resolution, "smoothing": weight})


def estimate_graphon(graphs: Sequence[Data], resolution: int = 32, estimator: str = "sas",
                     smoothing: Optional[float] = None, name: str = "graphon", progress: Optional[bool] = None,
                     **est_kwargs: float) -> Graphon:
    """Average degree-sorted step function of ``graphs`` at ``resolution`` bins per axis.

    ``smoothing``: TV weight applied to the averaged grid (default 0.02 for ``sas``, 0 otherwise).
    """
    return estimate_graphons(graphs, {name: range(len(graphs))}, resolution, estimator, smoothing, progress,
                             **est_kwargs)[0]


def estimate_graphons(graphs: Sequence[Data], groups: Dict[str, Sequence[int]], resolution: int = 32,
                      estimator: str = "sas", smoothing: Optional[float] = None, progress: Optional[bool] = None,
                      **est_kwargs: float) -> List[Graphon]:
    """Several graphons from one pass over ``graphs``: ``groups`` maps a graphon name to the indices of its
    graphs. Each graph is projected once and added to every group holding it, in graph order, so each
    graphon equals ``estimate_graphon`` of its graphs exactly (W2PGNN's integrated and topological bases
    share their graphs: one projection instead of two)."""
    _check_estimator(estimator, resolution)
    member = np.zeros((len(graphs), len(groups)), dtype=bool)
    for j, (name, idx) in enumerate(groups.items()):
        member[np.asarray(list(idx), dtype=int), j] = True
        if not member[:, j].any():
            raise GraphDataError(f"{name}: no graphs to estimate a graphon from")
    k = len(groups)
    edge_acc = np.zeros((k, resolution, resolution))
    pair_acc = np.zeros((k, resolution, resolution))
    label = next(iter(groups)) if k == 1 else "bases"
    for i, g in enumerate(tqdm(graphs, desc=f"graphon {label}", disable=not show_progress(progress), leave=False)):
        which = np.flatnonzero(member[i])
        if not len(which):
            continue
        e, pm = graph_masses(g, resolution, estimator, f"{label} graph {i}", **est_kwargs)
        for j in which:
            edge_acc[j] += e
            pair_acc[j] += pm
    return [finish_graphon(edge_acc[j], pair_acc[j], int(member[:, j].sum()), estimator, smoothing, name)
            for j, name in enumerate(groups)]


# ----------------------------------------------------------------------------------- graph statistics
STAT_NAMES = ("log_nodes", "density", "clustering", "degree_mean", "degree_std", "degree_skew", "diameter")


def _bfs(a: np.ndarray, source: int) -> np.ndarray:
    """Hop distances from ``source`` in a dense 0/1 adjacency (``inf`` where unreachable)."""
    n = a.shape[0]
    dist = np.full(n, np.inf)
    dist[source] = 0
    frontier = np.zeros(n, dtype=bool)
    frontier[source] = True
    seen = frontier.copy()
    hop = 0
    adj = a > 0
    while frontier.any():
        hop += 1
        frontier = adj[frontier].any(axis=0) & ~seen
        dist[frontier] = hop
        seen |= frontier
    return dist


def graph_statistics(g: Data, where: str = "graph") -> np.ndarray:
    """Topological statistics of one graph, in ``STAT_NAMES`` order.

    ``diameter`` is the double-sweep BFS lower bound (exact on trees, usually exact in practice), computed
    from the highest-degree node's component so the cost stays O(E) per graph (dense graphs: a numpy BFS,
    the same hop counts as scipy's ``shortest_path``).
    """
    a = adjacency(g, where)
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).ravel()
    density = deg.sum() / (n * (n - 1)) if n > 1 else 0.0
    if sp.issparse(a):
        tri = np.asarray((a @ a).multiply(a).sum(axis=1)).ravel() / 2
    else:
        tri = ((a @ a) * a).sum(axis=1) / 2
    pairs = deg * (deg - 1) / 2
    clustering = float(np.mean(np.divide(tri, pairs, out=np.zeros_like(tri), where=pairs > 0)))
    sd = deg.std()
    skew = float(((deg - deg.mean()) ** 3).mean() / sd ** 3) if sd > 0 else 0.0
    diameter = 0.0
    if n > 1 and deg.sum() > 0:
        if sp.issparse(a):
            sweep = lambda i: shortest_path(a, unweighted=True, directed=False, indices=i)  # noqa: E731
        else:
            sweep = lambda i: _bfs(a, i)  # noqa: E731
        d0 = sweep(int(np.argmax(deg)))
        far = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
        d1 = sweep(far)
        diameter = float(np.max(d1[np.isfinite(d1)]))
    return np.array([np.log(n), density, clustering, deg.mean(), sd, skew, diameter])


# ----------------------------------------------------------------------------------- GW distances
def _couplings(p: np.ndarray, q: np.ndarray) -> List[np.ndarray]:
    """Start couplings: independent, monotone (north-west corner) and anti-monotone."""
    import ot

    out = [np.outer(p, q)]
    out.append(ot.emd_1d(np.arange(len(p)) / len(p), np.arange(len(q)) / len(q), p, q))
    out.append(ot.emd_1d(np.arange(len(p)) / len(p), -np.arange(len(q)) / len(q), p, q))
    return out


def gw_objective(C1: np.ndarray, C2: np.ndarray, T: np.ndarray, M: Optional[np.ndarray] = None,
                 alpha: float = 1.0) -> float:
    """(1 - alpha) <M, T> + alpha * sum_{ijkl} (C1_ik - C2_jl)^2 T_ij T_kl."""
    p, q = T.sum(1), T.sum(0)
    gw = (C1 ** 2 @ p) @ p + (C2 ** 2 @ q) @ q - 2 * np.sum(C1 * (T @ C2 @ T.T))
    if M is None:
        return float(gw)
    return float((1 - alpha) * np.sum(M * T) + alpha * gw)


def assignment_lp(a: np.ndarray, b: np.ndarray, M: np.ndarray, *args: object, **kwargs: object):
    """Drop-in for ``ot.emd(a, b, M, ..., log=True)`` inside POT's conditional gradient when both marginals
    are uniform over the same number of points: the LP is then an assignment problem (the coupling polytope
    is the Birkhoff polytope / K, whose vertices are permutations / K), solved exactly by scipy's
    Jonker-Volgenant ``linear_sum_assignment`` (~0.05 ms vs ~1 ms for the network simplex at K = 50).
    Any other marginals go to ``ot.emd``. Both return an optimal vertex; only ties may break differently."""
    import ot

    n = len(a)
    if n == len(b) and np.all(a == a[0]) and np.all(b == b[0]) and np.isclose(a[0] * n, 1.0):
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(M)
        G = np.zeros((n, n))
        G[rows, cols] = 1.0 / n
        log = {"cost": float(M[rows, cols].sum() / n), "warning": None, "result_code": 1}
        return (G, log) if kwargs.get("log") or (len(args) > 1 and args[1]) else G
    return ot.lp.emd(a, b, M, *args, **kwargs)


class _AssignmentLP:
    """Context: POT's conditional-gradient LP step (``ot.optim.emd``) becomes :func:`assignment_lp`."""

    def __enter__(self) -> None:
        import ot.optim

        self._saved = ot.optim.emd
        ot.optim.emd = assignment_lp

    def __exit__(self, *exc: object) -> None:
        import ot.optim

        ot.optim.emd = self._saved


def solve_gw(C1: np.ndarray, C2: np.ndarray, G0: Optional[np.ndarray] = None, alpha: Optional[float] = None,
             M: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
    """One POT solve (conditional gradient) from ``G0``; plain GW if ``alpha`` is None, else fused. The LP
    step runs as an assignment problem (:func:`assignment_lp`; graphons share one uniform grid)."""
    import ot

    p = np.full(C1.shape[0], 1.0 / C1.shape[0])
    q = np.full(C2.shape[0], 1.0 / C2.shape[0])
    with _AssignmentLP():
        if alpha is None:
            T = ot.gromov.gromov_wasserstein(C1, C2, p, q, loss_fun="square_loss", G0=G0, max_iter=200,
                                             tol_rel=1e-7, tol_abs=1e-10)
            return gw_objective(C1, C2, T), T
        T = ot.gromov.fused_gromov_wasserstein(M, C1, C2, p, q, loss_fun="square_loss", alpha=alpha, G0=G0,
                                               max_iter=1000, tol_rel=1e-7, tol_abs=1e-10)
    return gw_objective(C1, C2, T, M, alpha), T


def feature_cost(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Squared difference of degree functions, the fused-GW feature cost."""
    return (d1[:, None] - d2[None, :]) ** 2


def gw_distance(W1: Graphon | np.ndarray, W2: Graphon | np.ndarray, alpha: Optional[float] = None,
                return_coupling: bool = False):
    """(Fused) GW discrepancy between two graphons, best of several starts (see :func:`_couplings`).

    ``alpha=None``: plain GW; ``alpha in [0, 1]``: fused GW with structure weight ``alpha`` and the
    degree-function feature cost.
    """
    A = W1.W if isinstance(W1, Graphon) else np.asarray(W1, dtype=float)
    B = W2.W if isinstance(W2, Graphon) else np.asarray(W2, dtype=float)
    M = feature_cost(A.mean(1), B.mean(1)) if alpha is not None else None
    p = np.full(A.shape[0], 1.0 / A.shape[0])
    q = np.full(B.shape[0], 1.0 / B.shape[0])
    best = (np.inf, None)
    for G0 in _couplings(p, q):
        val, T = solve_gw(A, B, G0, alpha, M)
        if val < best[0]:
            best = (val, T)
    val = max(best[0], 0.0)
    return (val, best[1]) if return_coupling else val


# ----------------------------------------------------------------------------------- plotting
def plot_graphons(graphons: Sequence[Graphon], path: str, titles: Optional[Sequence[str]] = None) -> str:
    """Heatmaps of graphons side by side (shared colour scale 0..max) saved to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(graphons)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.8, 2.8), squeeze=False)
    vmax = max(float(g.W.max()) for g in graphons) or 1.0
    im = None
    for ax, g, t in zip(axes[0], graphons, titles or [g.name for g in graphons]):
        im = ax.imshow(g.W, vmin=0, vmax=vmax, cmap="viridis", interpolation="nearest")
        ax.set_title(t, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="edge probability")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
