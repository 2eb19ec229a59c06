"""Issue 19, W2PGNN speed: the fast paths give the same numbers as the plain ones (cache across pairs,
dense small-graph adjacency, assignment-problem LP step, exact simplex QP)."""
from __future__ import annotations

import numpy as np
import pytest

from sslab.datasets.graphs_synthetic import generate_family
from sslab.eval import graphon as G
from sslab.eval.feasibility import (FeasibilityConfig, GraphonCache, feasibility, rank_pretraining_sets,
                                    simplex_qp)


@pytest.fixture(scope="module")
def sets():
    return {f: generate_family(f, num_graphs=24, seed=1).graphs for f in ("er", "sbm", "ba")}


def test_cached_pairs_give_the_same_numbers_and_reuse_per_dataset_work(sets):
    cfg = FeasibilityConfig(resolution=12, num_topological=2)
    down = sets["sbm"]
    plain = {p: feasibility({p: gs}, down, cfg) for p, gs in sets.items()}
    cache = GraphonCache()
    cached = {p: feasibility({p: gs}, down, cfg, cache=cache) for p, gs in sets.items()}
    again = rank_pretraining_sets(sets, down, cfg, cache)  # second pass: every graphon from the cache
    for p in sets:
        assert cached[p].distance == plain[p].distance and cached[p].weights == plain[p].weights
    assert {n: r.distance for n, r in again} == {p: plain[p].distance for p in sets}
    assert cache.misses == 2 * len(sets) + 1 and cache.hits >= 2 * len(sets)  # stats+bases per set, 1 target
    other = FeasibilityConfig(resolution=10, num_topological=2)  # another setting is another cache entry
    assert feasibility({"er": sets["er"]}, down, other, cache=cache).config["resolution"] == 10


def test_dense_adjacency_gives_the_same_graphons_and_statistics(sets, monkeypatch):
    graphs = sets["ba"] + sets["sbm"]
    dense_stats = np.stack([G.graph_statistics(g) for g in graphs])
    dense_W = {e: G.estimate_graphon(graphs, 12, e).W for e in ("sas", "usvt", "largest_gap")}
    orig = G.adjacency
    monkeypatch.setattr(G, "adjacency", lambda g, where="graph", dense=None: orig(g, where, dense=False))
    assert np.array_equal(np.stack([G.graph_statistics(g) for g in graphs]), dense_stats)
    for e, W in dense_W.items():
        np.testing.assert_allclose(G.estimate_graphon(graphs, 12, e).W, W, rtol=0, atol=1e-12)


def test_assignment_lp_matches_the_network_simplex():
    import ot

    rng = np.random.default_rng(0)
    for n in (3, 10, 25):
        M = rng.random((n, n))
        a = np.full(n, 1.0 / n)
        G_fast, log = G.assignment_lp(a, a, M, 100000, log=True)
        assert np.isclose((G_fast * M).sum(), (ot.lp.emd(a, a, M) * M).sum(), rtol=1e-12)
        np.testing.assert_allclose(G_fast.sum(0), a)
        assert log["cost"] == pytest.approx((G_fast * M).sum())
    b = np.array([0.5, 0.3, 0.2])  # non-uniform marginals go to ot.emd
    np.testing.assert_allclose(G.assignment_lp(b, b, M[:3, :3]), ot.lp.emd(b, b, M[:3, :3]))


def test_exact_simplex_qp_is_at_least_as_good_as_fista():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = int(rng.integers(1, 6))
        B = rng.normal(size=(m, m + 1))
        H, c = B @ B.T, rng.normal(size=m)
        x = simplex_qp(H, c, np.full(m, 1 / m))
        y = simplex_qp(H, c, np.full(m, 1 / m), iters=5000, exact=False)
        assert x.min() >= 0 and abs(x.sum() - 1) < 1e-12
        assert x @ H @ x - 2 * c @ x <= y @ H @ y - 2 * c @ y + 1e-12
