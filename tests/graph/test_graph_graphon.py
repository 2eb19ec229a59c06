"""Graphon estimators, GW distances and W2PGNN feasibility on synthetic families (fixed seeds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from sslab.datasets.graphs import GraphDataError
from sslab.datasets.graphs_synthetic import generate_family
from sslab.eval.feasibility import (
    FeasibilityConfig,
    feasibility,
    fit_generator,
    project_simplex,
    rank_pretraining_sets,
    simplex_qp,
)
from sslab.eval.graphon import Graphon, combine, estimate_graphon, graph_statistics, gw_distance, tv_denoise

P = [[0.6, 0.1, 0.05], [0.1, 0.35, 0.1], [0.05, 0.1, 0.15]]
F = [0.5, 0.3, 0.2]  # expected degrees 0.34 n > 0.175 n > 0.085 n: degree order = block order


@pytest.fixture(scope="module")
def sbm_graphs():
    return generate_family("sbm", num_graphs=5, num_nodes=(400, 400), seed=0, block_fractions=F, probs=P).graphs


def _true_grid(K: int):
    bounds = np.cumsum([0] + F)
    centers = np.arange(K) / K + 0.5 / K
    blk = np.searchsorted(bounds, centers, side="right") - 1
    interior = np.ones(K, bool)
    for b in bounds:
        interior &= np.abs(centers - b) > 1.0 / K
    return np.array(P)[blk][:, blk], np.ix_(interior, interior)


@pytest.mark.parametrize("estimator,max_err,mean_err", [("sas", 0.10, 0.02), ("largest_gap", 0.05, 0.015),
                                                        ("usvt", 0.15, 0.025)])
def test_sbm_block_probabilities_recovered(sbm_graphs, estimator, max_err, mean_err):
    G = estimate_graphon(sbm_graphs, resolution=20, estimator=estimator)
    W, interior = _true_grid(20)
    err = np.abs(G.W - W)[interior]
    assert err.max() < max_err and err.mean() < mean_err, (estimator, err.max(), err.mean())
    assert np.allclose(G.W, G.W.T)


def test_step_function_of_one_graph_is_exact():
    # path 0-1-2-3: degrees 1,2,2,1 -> order [1, 2, 0, 3]; at resolution 4 the grid is the sorted adjacency
    g = Data(edge_index=torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]), num_nodes=4)
    G = estimate_graphon([g], resolution=4, smoothing=0)
    A = np.zeros((4, 4))
    for u, v in [(0, 1), (1, 2), (2, 3)]:
        A[u, v] = A[v, u] = 1
    order = [1, 2, 0, 3]
    assert np.array_equal(G.W, A[np.ix_(order, order)])
    # at resolution 2 each cell is the density over the u != v pairs inside it
    G2 = estimate_graphon([g], resolution=2, smoothing=0)
    assert np.allclose(G2.W, [[1.0, 0.5], [0.5, 0.0]])


def test_tv_denoise_reduces_noise_and_keeps_edges():
    rng = np.random.default_rng(0)
    clean = np.zeros((32, 32))
    clean[:16, :16] = 0.6
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    den = tv_denoise(noisy, 0.1)
    assert np.abs(den - clean).mean() < 0.5 * np.abs(noisy - clean).mean()
    assert den[:14, :14].mean() - den[18:, 18:].mean() > 0.5


def test_empty_graph_rejected_by_graphon():
    with pytest.raises(GraphDataError, match="ds graph 0: empty graph"):
        estimate_graphon([Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=0)], name="ds")
    with pytest.raises(GraphDataError, match="no graphs"):
        estimate_graphon([], name="ds")


def test_gw_self_zero_symmetric_and_ordered():
    er = estimate_graphon(generate_family("er", 40, (20, 40), seed=1, p=0.2).graphs, 24, name="er")
    er2 = estimate_graphon(generate_family("er", 40, (20, 40), seed=2, p=0.2).graphs, 24, name="er2")
    ba = estimate_graphon(generate_family("ba", 40, (20, 40), seed=3).graphs, 24, name="ba")
    for alpha in (None, 0.5):
        assert gw_distance(er, er, alpha) < 1e-10
        ab, ba_ = gw_distance(er, ba, alpha), gw_distance(ba, er, alpha)
        assert ab == pytest.approx(ba_, rel=1e-6)
        assert gw_distance(er, er2, alpha) < 0.2 * ab  # same family is much closer than another family
    # invariant to relabelling the grid (GW compares metric-measure spaces, not aligned matrices)
    perm = np.random.default_rng(0).permutation(24)
    assert gw_distance(ba, Graphon(ba.W[np.ix_(perm, perm)])) < 1e-8


def test_simplex_tools():
    assert np.allclose(project_simplex(np.array([0.5, 0.5, 0.5])), 1 / 3)
    assert np.allclose(project_simplex(np.array([2.0, 0.0, -1.0])), [1, 0, 0])
    H = np.diag([1.0, 2.0])
    x = simplex_qp(H, np.zeros(2), np.array([1.0, 0.0]))
    assert np.allclose(x, [2 / 3, 1 / 3], atol=1e-6)  # argmin x1^2 + 2 x2^2 on the simplex


def test_generator_recovers_mixture_weights():
    """A target that *is* a convex combination of the bases is fit with distance ~0 and the right weights."""
    rng = np.random.default_rng(0)
    K = 16
    x = (np.arange(K) + 0.5) / K
    B1 = Graphon(np.outer(1 - x, 1 - x) * 0.8, "B1")  # degree-sorted-like monotone graphons
    B2 = Graphon(np.full((K, K), 0.3), "B2")
    B3 = Graphon(np.where(np.add.outer(x, x) < 1, 0.7, 0.05), "B3")
    w = np.array([0.5, 0.2, 0.3])
    target = combine([B1, B2, B3], w)
    for alpha in (None, 0.5):
        fit = fit_generator([B1, B2, B3], target, alpha)
        assert fit.distance < 1e-6
        assert np.allclose(fit.weights, w, atol=0.03), fit.weights
        assert all(a >= b - 1e-12 for a, b in zip(fit.history, fit.history[1:]))  # monotone
    del rng


@pytest.fixture(scope="module")
def families():
    return {f: generate_family(f, num_graphs=40, num_nodes=(20, 40), seed=i).graphs
            for i, f in enumerate(["er", "sbm", "ba", "ws"])}


@pytest.mark.parametrize("family", ["er", "sbm", "ba", "ws"])
def test_feasibility_ranks_same_family_first(families, family):
    down = generate_family(family, num_graphs=30, num_nodes=(20, 40), seed=100).graphs
    cfg = FeasibilityConfig(resolution=16, bases=("integrated", "topological"), num_topological=2)
    ranking = rank_pretraining_sets(families, down, cfg)
    assert ranking[0][0] == family, [(n, r.feasibility) for n, r in ranking]
    assert all(r.feasibility <= 0 for _, r in ranking)


def test_feasibility_weights_point_at_the_matching_domain(families):
    down = generate_family("ba", num_graphs=30, num_nodes=(20, 40), seed=100).graphs
    res = feasibility(families, down, FeasibilityConfig(resolution=16, bases=("domain",)))
    assert max(res.weights, key=res.weights.get) == "domain:ba", res.weights
    assert sum(res.weights.values()) == pytest.approx(1.0)
    assert res.feasibility == pytest.approx(-res.distance)


def test_graph_statistics_on_known_graphs():
    # triangle + pendant: 0-1, 1-2, 2-0, 2-3
    e = [(0, 1), (1, 2), (2, 0), (2, 3)]
    ei = torch.tensor([[u for u, v in e] + [v for u, v in e], [v for u, v in e] + [u for u, v in e]])
    s = graph_statistics(Data(edge_index=ei, num_nodes=4))
    names = ["log_nodes", "density", "clustering", "degree_mean", "degree_std", "degree_skew", "diameter"]
    st = dict(zip(names, s))
    assert st["density"] == pytest.approx(8 / 12)
    assert st["clustering"] == pytest.approx((1 + 1 + 1 / 3 + 0) / 4)
    assert st["degree_mean"] == pytest.approx(2.0)
    assert st["diameter"] == 2
