"""W2PGNN pretraining feasibility (Cao et al., "When to Pre-Train Graph Neural Networks? From Data
Generation Perspective!", KDD 2023).

1. Graphon bases from the pretraining data (Sec. 4.1 of the paper):
   ``integrated`` - one graphon of all pretraining graphs; ``domain`` - one per pretraining dataset;
   ``topological`` - k-means on per-graph topology statistics (:data:`STAT_NAMES`), one graphon per cluster.
2. Generator space: convex combinations B(lam) = sum_m lam_m B_m, lam on the simplex (Sec. 4.2).
3. Feasibility of a downstream set with graphon W_D (Sec. 4.3): zeta = - min_lam dist(B(lam), W_D), dist =
   plain or fused Gromov-Wasserstein (:mod:`sslab.eval.graphon`).

Optimiser (ours; the paper does not fix one). The square-loss GW objective with coupling T fixed is
a quadratic in lam, because B(lam) is linear in lam:
   GW(lam, T) = lam^T Q lam - 2 lam^T b(T) + c,  Q_mn = p^T (B_m ∘ B_n) p,  b_m = <B_m, T W_D T^T>,
and the fused feature term sum_ik T_ik (d_i(lam) - d'_k)^2, d(lam) = sum_m lam_m B_m p, is quadratic too.
So we alternate exactly between (a) T-step: POT's conditional-gradient (F)GW solver warm-started from the
previous coupling, and (b) lam-step: the simplex-constrained QP solved by accelerated projected
gradient (FISTA, Beck & Teboulle 2009) with Euclidean simplex projection (Duchi et al., ICML 2008).
Both steps do not increase the objective, so it decreases monotonically; we restart from every vertex
e_m and from the barycentre (GW is non-convex) and keep the best.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from sslab.core.progress import show_progress

from sslab.eval.graphon import (
    STAT_NAMES,
    Graphon,
    _couplings,
    combine,
    estimate_graphon,
    estimate_graphons,
    feature_cost,
    graph_statistics,
    gw_objective,
    solve_gw,
)

BASIS_KINDS = ("integrated", "domain", "topological")

if TYPE_CHECKING:
    from torch_geometric.data import Data


@dataclass
class FeasibilityConfig:
    """Settings of one feasibility analysis."""

    resolution: int = 32
    estimator: str = "sas"  # sas | usvt | largest_gap
    smoothing: Optional[float] = None  # TV weight; None = estimator default
    bases: Tuple[str, ...] = BASIS_KINDS
    num_topological: int = 4  # k-means clusters for topological bases
    alpha: Optional[float] = None  # None: plain GW; in [0, 1]: fused GW with degree features
    max_iter: int = 30  # alternating (T, lam) rounds per restart
    tol: float = 1e-9
    seed: int = 0
    progress: Optional[bool] = None  # None: only on a terminal


# ----------------------------------------------------------------------------------- simplex QP
def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {x >= 0, sum x = 1} (Duchi et al. 2008, Fig. 1)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1
    idx = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / idx > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


EXACT_QP_MAX_DIM = 10
"""Up to this many bases the simplex QP is solved exactly by enumerating faces (2^m - 1 small KKT systems);
FISTA's ~200 projected steps per call were the largest cost of a feasibility fit."""


def simplex_qp_faces(H: np.ndarray, c: np.ndarray) -> np.ndarray:
    """argmin_{x in simplex} x^T H x - 2 c^T x for convex (PSD ``H``) problems, exactly: on every face
    (support S) solve the equality-constrained KKT system [2 H_SS, 1; 1^T, 0][x; nu] = [2 c_S; 1] and keep
    the feasible (x >= 0) solution of least objective. The minimiser lies in the relative interior of some
    face, where it solves that face's KKT system, so the best feasible face solution is the minimum."""
    m = len(c)
    Hs = (H + H.T) / 2
    best, best_val = None, np.inf
    for mask in range(1, 1 << m):
        S = [i for i in range(m) if mask >> i & 1]
        k = len(S)
        A = np.zeros((k + 1, k + 1))
        A[:k, :k] = 2 * Hs[np.ix_(S, S)]
        A[:k, k] = A[k, :k] = 1.0
        rhs = np.concatenate([2 * c[S], [1.0]])
        sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
        xs = sol[:k]
        if xs.min() < -1e-12 or abs(xs.sum() - 1) > 1e-9:
            continue
        x = np.zeros(m)
        x[S] = np.maximum(xs, 0.0)
        x /= x.sum()
        val = float(x @ Hs @ x - 2 * c @ x)
        if val < best_val - 1e-15:
            best, best_val = x, val
    assert best is not None  # every vertex is feasible
    return best


def simplex_qp(H: np.ndarray, c: np.ndarray, x0: np.ndarray, iters: int = 500,
               exact: Optional[bool] = None) -> np.ndarray:
    """argmin_{x in simplex} x^T H x - 2 c^T x: exact face enumeration (:func:`simplex_qp_faces`) for up to
    :data:`EXACT_QP_MAX_DIM` variables (``exact=None``), else FISTA with step 1 / (2 ||H||_2) from ``x0``."""
    if exact or (exact is None and len(c) <= EXACT_QP_MAX_DIM):
        return simplex_qp_faces(H, c)
    L = 2 * max(np.linalg.eigvalsh((H + H.T) / 2).max(), 1e-12)
    x = y = project_simplex(x0)
    t = 1.0
    for _ in range(iters):
        x_new = project_simplex(y - (2 * H @ y - 2 * c) / L)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x_new + (t - 1) / t_new * (x_new - x)
        if np.abs(x_new - x).max() < 1e-12:
            x = x_new
            break
        x, t = x_new, t_new
    return x


# ----------------------------------------------------------------------------------- generator fit
@dataclass
class GeneratorFit:
    distance: float
    weights: np.ndarray
    coupling: np.ndarray
    history: List[float] = field(default_factory=list)


def _quadratic(bases: np.ndarray, target: np.ndarray, T: np.ndarray, alpha: Optional[float]
               ) -> Tuple[np.ndarray, np.ndarray]:
    """(H, c) of the objective in lam for fixed coupling T (module docstring)."""
    p = T.sum(1)
    m = bases.shape[0]
    flat = bases.reshape(m, -1)
    pp = np.outer(p, p).ravel()
    Q = (flat * pp) @ flat.T
    b = flat @ (T @ target @ T.T).ravel()
    if alpha is None:
        return Q, b
    F = bases @ p  # [m, K]: degree functions d_m(x) = sum_y B_m(x, y) p_y
    g = target @ T.sum(0)
    Hf = (F * p) @ F.T
    cf = F @ (T @ g)
    return alpha * Q + (1 - alpha) * Hf, alpha * b + (1 - alpha) * cf


def _objective(bases: np.ndarray, target: np.ndarray, lam: np.ndarray, T: np.ndarray,
               alpha: Optional[float]) -> float:
    C1 = np.tensordot(lam, bases, axes=1)
    if alpha is None:
        return gw_objective(C1, target, T)
    M = feature_cost(C1 @ T.sum(1), target @ T.sum(0))
    return gw_objective(C1, target, T, M, alpha)


def _solve_T(C1: np.ndarray, target: np.ndarray, G0: np.ndarray, alpha: Optional[float]
             ) -> Tuple[float, np.ndarray]:
    M = None if alpha is None else feature_cost(C1.mean(1), target.mean(1))
    return solve_gw(C1, target, G0, alpha, M)


def fit_generator(bases: Sequence[Graphon], target: Graphon, alpha: Optional[float] = None,
                  max_iter: int = 30, tol: float = 1e-9) -> GeneratorFit:
    """min over simplex weights lam and couplings T of (F)GW(sum_m lam_m B_m, target) - see module docstring."""
    B = np.stack([b.W for b in bases])
    W = target.W
    m = len(bases)
    p = np.full(B.shape[1], 1.0 / B.shape[1])
    q = np.full(W.shape[0], 1.0 / W.shape[0])
    starts = [np.eye(m)[i] for i in range(m)] + ([np.full(m, 1.0 / m)] if m > 1 else [])
    best: Optional[GeneratorFit] = None
    for lam in starts:
        C1 = np.tensordot(lam, B, axes=1)
        val, T = min((_solve_T(C1, W, G0, alpha) for G0 in _couplings(p, q)), key=lambda r: r[0])
        hist = [val]
        for _ in range(max_iter if m > 1 else 0):
            H, c = _quadratic(B, W, T, alpha)
            lam = simplex_qp(H, c, lam)
            val = _objective(B, W, lam, T, alpha)  # lam-step: exact QP minimiser, never ascends
            val_T, T_new = _solve_T(np.tensordot(lam, B, axes=1), W, T, alpha)
            if val_T <= val:  # T-step: warm-started conditional gradient; keep T if it did not help
                val, T = val_T, T_new
            hist.append(val)
            if hist[-2] - hist[-1] < tol:
                break
        if best is None or hist[-1] < best.distance:
            best = GeneratorFit(max(hist[-1], 0.0), lam.copy(), T, hist)
    assert best is not None
    return best


# ----------------------------------------------------------------------------------- bases
def topology_features(graphs: Sequence[Data], name: str = "graphs", progress: Optional[bool] = None) -> np.ndarray:
    """[num_graphs, len(STAT_NAMES)] statistics used for topological bases."""
    return np.stack([graph_statistics(g, f"{name} graph {i}")
                     for i, g in enumerate(tqdm(graphs, desc=f"stats {name}", disable=not show_progress(progress), leave=False))])


def graphs_fingerprint(graphs: Sequence[Data]) -> str:
    """Content hash of a graph list (node counts and edge lists, in order): the cache key of its graphons."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for g in graphs:
        h.update(int(g.num_nodes or 0).to_bytes(8, "little"))
        ei = g.edge_index.cpu().numpy().astype(np.int64, copy=False)
        h.update(ei.shape[1].to_bytes(8, "little"))
        h.update(np.ascontiguousarray(ei).tobytes())
    return h.hexdigest()


class GraphonCache:
    """Per-dataset work shared across (downstream, pretraining) pairs: topology statistics, graphon bases
    and downstream graphons, keyed by the graphs' content (:func:`graphs_fingerprint`) and every setting that
    changes them. A cached result is the very object the uncached path computes (same numbers)."""

    def __init__(self) -> None:
        self.store: Dict[Tuple, object] = {}
        self.hits = 0
        self.misses = 0
        self._fp: Dict[int, Tuple[Sequence[Data], str]] = {}

    def fingerprint(self, graphs: Sequence[Data]) -> str:
        ref = self._fp.get(id(graphs))
        if ref is None or ref[0] is not graphs:  # keep the list alive so its id is not reused
            ref = (graphs, graphs_fingerprint(graphs))
            self._fp[id(graphs)] = ref
        return ref[1]

    def get(self, key: Tuple, make):  # type: ignore[no-untyped-def]
        if key in self.store:
            self.hits += 1
            return self.store[key]
        self.misses += 1
        value = make()
        self.store[key] = value
        return value


def _est_key(cfg: FeasibilityConfig) -> Tuple:
    return (cfg.resolution, cfg.estimator, cfg.smoothing)


def build_bases(pretrain: Mapping[str, Sequence[Data]], cfg: FeasibilityConfig,
                cache: Optional[GraphonCache] = None) -> List[Graphon]:
    """Graphon bases of the W2PGNN generator space from named pretraining sets.

    One pass over the graphs projects each graph once into every basis holding it (integrated, its
    domain, its topological cluster). ``cache`` reuses topology statistics and whole basis lists across
    calls (e.g. every downstream set of a ranking)."""
    unknown = set(cfg.bases) - set(BASIS_KINDS)
    if unknown or not cfg.bases:
        raise ValueError(f"bases must be a non-empty subset of {BASIS_KINDS}, got {cfg.bases}")
    if not pretrain:
        raise ValueError("no pretraining data given")
    if cache is not None:
        key = ("bases", tuple((n, cache.fingerprint(gs)) for n, gs in pretrain.items()), _est_key(cfg),
               tuple(cfg.bases), cfg.num_topological, cfg.seed)
        return cache.get(key, lambda: _build_bases(pretrain, cfg, cache))  # type: ignore[return-value]
    return _build_bases(pretrain, cfg, None)


def _topology(graphs: Sequence[Data], cfg: FeasibilityConfig, cache: Optional[GraphonCache]) -> np.ndarray:
    if cache is None:
        return topology_features(graphs, "pretraining", cfg.progress)
    return cache.get(("stats", cache.fingerprint(graphs)),  # type: ignore[return-value]
                     lambda: topology_features(graphs, "pretraining", cfg.progress))


def _build_bases(pretrain: Mapping[str, Sequence[Data]], cfg: FeasibilityConfig,
                 cache: Optional[GraphonCache]) -> List[Graphon]:
    all_graphs = [g for gs in pretrain.values() for g in gs]
    groups: Dict[str, List[int]] = {}
    if "integrated" in cfg.bases:
        groups["integrated"] = list(range(len(all_graphs)))
    if "domain" in cfg.bases and len(pretrain) > 1:
        start = 0
        for n, gs in pretrain.items():
            groups[f"domain:{n}"] = list(range(start, start + len(gs)))
            start += len(gs)
    centroids: Dict[str, Dict[str, float]] = {}
    if "topological" in cfg.bases:
        from sklearn.cluster import KMeans

        k = min(cfg.num_topological, len(all_graphs))
        if cache is not None and len(pretrain) > 1:  # per-set statistics are what recurs across analyses
            feats = np.concatenate([_topology(list(gs), cfg, cache) for gs in pretrain.values()])
        else:
            feats = _topology(all_graphs if len(pretrain) > 1 else next(iter(pretrain.values())), cfg, cache)
        z = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-12)
        labels = KMeans(n_clusters=k, n_init=10, random_state=cfg.seed).fit_predict(z)
        for c in range(k):
            idx = np.flatnonzero(labels == c).tolist()
            if idx:
                groups[f"topo:{c}"] = idx
                centroids[f"topo:{c}"] = dict(zip(STAT_NAMES, feats[labels == c].mean(0).round(4).tolist()))
    out = estimate_graphons(all_graphs, groups, cfg.resolution, cfg.estimator, cfg.smoothing, cfg.progress)
    for g in out:
        if g.name in centroids:
            g.meta["centroid"] = centroids[g.name]
    return out


def downstream_graphon(downstream: Sequence[Data], cfg: FeasibilityConfig,
                       cache: Optional[GraphonCache] = None) -> Graphon:
    """The downstream set's graphon (cached per set when ``cache`` is given)."""
    def make() -> Graphon:
        return estimate_graphon(downstream, resolution=cfg.resolution, estimator=cfg.estimator,
                                smoothing=cfg.smoothing, name="downstream", progress=cfg.progress)
    if cache is None:
        return make()
    return cache.get(("target", cache.fingerprint(downstream), _est_key(cfg)), make)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------- feasibility
@dataclass
class FeasibilityResult:
    feasibility: float  # = -distance; larger means pretraining is more feasible
    distance: float
    weights: Dict[str, float]
    bases: List[str]
    config: Dict[str, object]
    history: List[float] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def feasibility(pretrain: Mapping[str, Sequence[Data]], downstream: Sequence[Data],
                cfg: Optional[FeasibilityConfig] = None, return_graphons: bool = False,
                cache: Optional[GraphonCache] = None):
    """W2PGNN feasibility of pretraining on ``pretrain`` (name -> graphs) for ``downstream`` graphs.
    ``cache`` (a :class:`GraphonCache`) shares per-dataset graphons across calls; same numbers."""
    cfg = cfg or FeasibilityConfig()
    bases = build_bases(pretrain, cfg, cache)
    target = downstream_graphon(downstream, cfg, cache)
    fit = fit_generator(bases, target, cfg.alpha, cfg.max_iter, cfg.tol)
    res = FeasibilityResult(-fit.distance, fit.distance,
                            {b.name: float(w) for b, w in zip(bases, fit.weights)},
                            [b.name for b in bases], asdict(cfg), fit.history)
    if return_graphons:
        return res, bases, target, combine(bases, fit.weights, "best generator")
    return res


def rank_pretraining_sets(candidates: Mapping[str, Sequence[Data]], downstream: Sequence[Data],
                          cfg: Optional[FeasibilityConfig] = None, cache: Optional[GraphonCache] = None
                          ) -> List[Tuple[str, FeasibilityResult]]:
    """Feasibility of each candidate pretraining set alone, best (highest) first."""
    cfg = cfg or FeasibilityConfig()
    cache = cache if cache is not None else GraphonCache()
    scored = [(name, feasibility({name: gs}, downstream, cfg, cache=cache)) for name, gs in candidates.items()]
    return sorted(scored, key=lambda t: -t[1].feasibility)


# ----------------------------------------------------------------------------------- validation experiment
def _spearman(x: Sequence[float], y: Sequence[float]) -> Dict[str, float]:
    from scipy.stats import spearmanr

    if len(x) < 3:
        return {"rho": float("nan"), "p": float("nan"), "n": len(x)}
    r = spearmanr(x, y)
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": len(x)}


def feasibility_vs_gain(spec: Mapping[str, object], out_dir: str, progress: Optional[bool] = None) -> Dict[str, object]:
    """The W2PGNN validation (paper Sec. 5.2): for every (pretraining set, downstream set) pair measure the
    gain of pretraining (linear probe with k-fold CV, pretrained minus the same encoder at random init,
    averaged over seeds) and the feasibility score, then their Spearman rank correlation.

    ``spec`` keys: ``pretrain``/``downstream`` (source strings), ``tu_root``, ``features``, ``max_degree``,
    ``encoder``, ``objective``, ``train``, ``optim`` (experiment sections), ``probe_folds``, ``seeds``,
    ``max_graphs`` (feasibility subsample), ``feasibility`` (:class:`FeasibilityConfig` fields).
    Pretraining runs go to ``out_dir/runs`` (rerunning resumes/reuses them); results to
    ``out_dir/results.json`` and ``out_dir/feasibility_vs_gain.png``.
    """
    import json
    import time
    from pathlib import Path

    import torch

    from sslab.core.config import ExperimentConfig, from_dict
    from sslab.core.export import build_encoder, load_encoder
    from sslab.core.modality import build_modality
    from sslab.eval.probe import extract_features, linear_probe
    from sslab.run import pretrain as run_pretrain
    from sslab.run import seed_everything

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(spec.get("seeds", [0]))  # type: ignore[arg-type]
    folds = int(spec.get("probe_folds", 10))  # type: ignore[arg-type]
    data_common = {"features": spec.get("features", "degree"), "max_degree": spec.get("max_degree", 32)}
    if spec.get("tu_root"):
        data_common["tu_root"] = spec["tu_root"]
    fcfg = FeasibilityConfig(**dict(spec.get("feasibility", {})))  # type: ignore[arg-type]
    slug = lambda s: "".join(c if c.isalnum() else "_" for c in s)  # noqa: E731

    def cfg_for(source: str, seed: int, probe_source: str = "") -> ExperimentConfig:
        return from_dict(ExperimentConfig, {
            "name": f"pre_{slug(source)}_s{seed}", "modality": "graph", "seed": seed,
            "output_dir": str(out / "runs"),
            "data": {**data_common, "source": source, "probe_source": probe_source, "probe_folds": folds},
            "encoder": dict(spec["encoder"]), "objective": dict(spec["objective"]),  # type: ignore[arg-type]
            "train": {**dict(spec.get("train", {})), "progress": progress},  # type: ignore[arg-type]
            "optim": dict(spec.get("optim", {})),  # type: ignore[arg-type]
        })

    timings: Dict[str, float] = {}
    encoders: Dict[Tuple[str, int], object] = {}
    for p in spec["pretrain"]:  # type: ignore[union-attr]
        for s in seeds:
            t0 = time.perf_counter()
            run_dir = run_pretrain(cfg_for(p, s))
            encoders[(p, s)] = load_encoder(run_dir)
            timings[f"pretrain {p} seed {s}"] = round(time.perf_counter() - t0, 1)

    def cv_accuracy(modality, encoder, seed: int) -> float:
        encoder = encoder.eval()
        task = modality.probe_tasks()
        ds = task[0].train.dataset  # all folds share the full labelled dataset
        with torch.no_grad():
            X, y = extract_features(lambda b: modality.embed(encoder, b), ds, task[0].collate_fn,
                                    torch.device("cpu"), 128)
        accs = [linear_probe(X[t.train.indices], y[t.train.indices], X[t.test.indices], y[t.test.indices],
                             "multiclass", seed=seed)["accuracy"] for t in task]
        return float(np.mean(accs))

    rows = []
    graphs_cache: Dict[str, list] = {}
    graphon_cache = GraphonCache()

    def graphs_of(source: str) -> list:
        if source not in graphs_cache:
            from sslab.datasets.graphs_sources import load_graph_source

            gs = load_graph_source(source, spec.get("tu_root") or None)  # type: ignore[arg-type]
            g = gs.graphs
            mg = spec.get("max_graphs")
            if mg and len(g) > int(mg):  # type: ignore[arg-type]
                idx = np.sort(np.random.default_rng(0).choice(len(g), int(mg), replace=False))  # type: ignore
                g = [g[i] for i in idx]
            graphs_cache[source] = g
        return graphs_cache[source]

    for d in spec["downstream"]:  # type: ignore[union-attr]
        base = {}
        for s in seeds:
            cfg = cfg_for(d, s, probe_source=d)
            modality = build_modality(cfg)
            seed_everything(s)
            rand = modality.build_encoder()  # the init every pretraining run with this seed started from
            base[s] = cv_accuracy(modality, rand, s)
        for p in spec["pretrain"]:  # type: ignore[union-attr]
            t0 = time.perf_counter()
            accs = {}
            for s in seeds:
                modality = build_modality(cfg_for(p, s, probe_source=d))
                accs[s] = cv_accuracy(modality, encoders[(p, s)], s)
            fz = feasibility({p: graphs_of(p)}, graphs_of(d), fcfg, cache=graphon_cache)
            row = {"pretrain": p, "downstream": d, "acc_pretrained": float(np.mean(list(accs.values()))),
                   "acc_random": float(np.mean(list(base.values()))),
                   "gain": float(np.mean([accs[s] - base[s] for s in seeds])),
                   "gain_per_seed": [accs[s] - base[s] for s in seeds],
                   "feasibility": fz.feasibility, "same_dataset": p == d}
            rows.append(row)
            timings[f"probe+feasibility {p} -> {d}"] = round(time.perf_counter() - t0, 1)
            if progress:
                print(f"{p:>28} -> {d:<12} acc {row['acc_pretrained']:.3f} vs random {row['acc_random']:.3f} "
                      f"gain {row['gain']:+.3f}  feasibility {row['feasibility']:.4g}", flush=True)

    cross = [r for r in rows if not r["same_dataset"]]
    summary = {
        "spearman_all_pairs": _spearman([r["feasibility"] for r in rows], [r["gain"] for r in rows]),
        "spearman_cross_pairs": _spearman([r["feasibility"] for r in cross], [r["gain"] for r in cross]),
        "spearman_per_downstream": {
            d: _spearman([r["feasibility"] for r in rows if r["downstream"] == d],
                         [r["gain"] for r in rows if r["downstream"] == d])
            for d in spec["downstream"]},  # type: ignore[union-attr]
    }
    result = {"spec": dict(spec), "rows": rows, "summary": summary, "timings_s": timings}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    plot_feasibility_vs_gain(rows, str(out / "feasibility_vs_gain.png"))
    return result


def plot_feasibility_vs_gain(rows: Sequence[Mapping[str, object]], path: str) -> str:
    """Scatter of measured gain vs feasibility, one colour per downstream set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for d in dict.fromkeys(r["downstream"] for r in rows):
        pts = [r for r in rows if r["downstream"] == d]
        ax.scatter([r["feasibility"] for r in pts], [r["gain"] for r in pts], label=f"downstream {d}")
        for r in pts:
            ax.annotate(str(r["pretrain"]).replace("synthetic:", "").split(":")[0], (r["feasibility"], r["gain"]),
                        fontsize=6, alpha=0.7)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("W2PGNN feasibility (-GW distance)")
    ax.set_ylabel("probe gain (pretrained - random init)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
