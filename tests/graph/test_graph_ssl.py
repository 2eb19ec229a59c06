"""GIN/GCN encoders, augmentations, attribute masking and GraphCL objectives, and the graph plugin."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import is_undirected

from sslab.core.config import ExperimentConfig, from_dict
from sslab.core.export import build_encoder, load_encoder, save_encoder
from sslab.core.registry import OBJECTIVES
from sslab.datasets.graphs import FeatureSpec, add_node_features
from sslab.datasets.graphs_augment import (
    GraphMaskCollator,
    GraphViewsCollator,
    attr_mask,
    edge_perturb,
    node_drop,
    subgraph,
)
from sslab.datasets.graphs_synthetic import generate_family
from sslab.objectives.graph_contrastive import graphcl_nt_xent

torch.set_num_threads(1)


def _graphs(n=32, family="sbm", seed=0, features="degree"):
    gs = generate_family(family, num_graphs=n, num_nodes=(15, 30), seed=seed)
    add_node_features(gs.graphs, FeatureSpec(features, max_degree=16))
    return gs.graphs


def test_encoders_shapes_pooling_and_export(tmp_path):
    graphs = _graphs(4)
    batch = Batch.from_data_list(graphs)
    for name in ("gin", "gcn"):
        enc = build_encoder({"name": name, "in_dim": 17, "dim": 24, "num_layers": 3}).eval()
        tokens = enc(batch)
        assert tokens.shape == (batch.num_nodes, 24) and enc.dim == 24
        pooled = enc.pool(tokens, batch)
        assert pooled.shape == (4, 24)
        # mean pooling of graph 1 equals the mean of its node tokens
        assert torch.allclose(pooled[1], tokens[batch.batch == 1].mean(0), atol=1e-6)
        save_encoder(enc, tmp_path / name)
        again = load_encoder(tmp_path / name).eval()
        assert torch.allclose(again.pool(again(batch), batch), pooled, atol=1e-6)
    default = build_encoder({"name": "gin", "in_dim": 17})
    assert default.dim == 300 and default.num_layers == 5  # Hu et al. 2020 defaults
    with pytest.raises(ValueError, match="node features have 17 dims, encoder in_dim=5"):
        build_encoder({"name": "gin", "in_dim": 5, "dim": 8, "num_layers": 1})(batch)


def test_mask_token_routing():
    graphs = _graphs(4)
    batch = Batch.from_data_list(graphs)
    enc = build_encoder({"name": "gin", "in_dim": 17, "dim": 16, "num_layers": 2})
    enc(batch).sum().backward()
    assert enc.mask_token.grad is None  # unused without a mask
    mask = torch.zeros(batch.num_nodes, dtype=torch.bool)
    mask[3] = True
    enc.zero_grad()
    enc(batch, mask=mask).sum().backward()
    assert enc.mask_token.grad is not None and enc.mask_token.grad.abs().sum() > 0
    # a masked node's own features cannot influence the output
    x2 = batch.clone()
    x2.x = batch.x.clone()
    x2.x[3] = torch.rand(17)
    enc.eval()
    assert torch.allclose(enc(batch, mask=mask), enc(x2, mask=mask))
    assert not torch.allclose(enc(batch), enc(x2))


def test_mask_collator_statistics_and_seeding():
    graphs = _graphs(64)
    torch.manual_seed(0)
    b = GraphMaskCollator(0.15)(graphs)
    per_graph = torch.zeros(64).index_add_(0, b.batch, b.mask.float())
    sizes = torch.bincount(b.batch).float()
    assert torch.all(per_graph == torch.clamp(torch.round(sizes * 0.15), min=1))
    assert abs(float(b.mask.float().mean()) - 0.15) < 0.02
    torch.manual_seed(0)
    assert torch.equal(GraphMaskCollator(0.15)(graphs).mask, b.mask)
    with pytest.raises(ValueError, match="mask_ratio"):
        GraphMaskCollator(0.0)


def test_augmentations():
    torch.manual_seed(0)
    g = _graphs(1, family="er")[0]
    n, e = g.num_nodes, g.num_edges
    d = node_drop(g, 0.2)
    assert d.num_nodes == n - int(n * 0.2) and d.x.shape[0] == d.num_nodes
    assert d.edge_index.max() < d.num_nodes
    p = edge_perturb(g, 0.2)
    assert p.num_nodes == n and is_undirected(p.edge_index)
    assert not bool((p.edge_index[0] == p.edge_index[1]).any())
    assert abs(p.num_edges - e) <= 0.2 * e + 2  # removed k, added k (a few may coincide)
    s = subgraph(g, 0.2)
    assert s.num_nodes == n - int(n * 0.2)
    m = attr_mask(g, 0.2)
    assert int((m.x.abs().sum(1) == 0).sum()) == int(n * 0.2) and g.x.abs().sum(1).min() > 0
    views = GraphViewsCollator(ratio=0.2)(_graphs(8))
    assert views["view1"].num_graphs == views["view2"].num_graphs == 8
    with pytest.raises(ValueError, match="unknown graph augmentation"):
        GraphViewsCollator(["rotate"])


def test_nt_xent_closed_form():
    z = torch.eye(4)
    tau = 0.5
    # positives have cosine 1, negatives 0: l = -1/tau + log(N - 1)
    assert graphcl_nt_xent(z, z, tau).item() == pytest.approx(-1 / tau + math.log(3), abs=1e-6)
    assert graphcl_nt_xent(z, z.roll(1, 0), tau) > graphcl_nt_xent(z, z, tau)
    with pytest.raises(ValueError, match="at least 2 graphs"):
        graphcl_nt_xent(z[:1], z[:1])


def _train(objective, collate, graphs, steps=40, bs=32, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        idx = torch.randperm(len(graphs))[:bs].tolist()
        out = objective(collate([graphs[i] for i in idx]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


def test_attribute_masking_loss_falls():
    gs = generate_family("sbm", num_graphs=96, num_nodes=(15, 30), seed=1)
    add_node_features(gs.graphs, FeatureSpec("degree", max_degree=16))
    torch.manual_seed(0)
    enc = build_encoder({"name": "gin", "in_dim": 17, "dim": 32, "num_layers": 3})
    obj = OBJECTIVES.build("graph_attr_mask", encoder=enc, categorical_groups=[17])
    losses = _train(obj, GraphMaskCollator(0.15), gs.graphs, steps=60)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > math.log(17) * 0.8  # starts near chance over 17 degree bins
    assert last < 0.6 * first, (first, last)
    with pytest.raises(ValueError, match="sum to 10"):
        OBJECTIVES.build("graph_attr_mask", encoder=enc, categorical_groups=[5, 5])
    with pytest.raises(ValueError, match="needs batches with a node mask"):
        obj(Batch.from_data_list(gs.graphs[:2]))


def test_graphcl_loss_falls():
    graphs = _graphs(96, family="ba", seed=2) + _graphs(96, family="ws", seed=3)
    torch.manual_seed(0)
    enc = build_encoder({"name": "gin", "in_dim": 17, "dim": 32, "num_layers": 3})
    obj = OBJECTIVES.build("graphcl", encoder=enc, proj_dim=32, temperature=0.2)
    losses = _train(obj, GraphViewsCollator(ratio=0.2), graphs, steps=50)
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < first - 0.3, (first, last)


def test_plugin_pretrain_and_probe_with_core(tmp_path, shared_data):
    from sslab.run import pretrain, probe

    cfg = from_dict(ExperimentConfig, {
        "name": "mutag", "modality": "graph", "output_dir": str(tmp_path),
        "data": {"source": "MUTAG", "tu_root": str(shared_data / "graphs"), "features": "node_labels+degree", "max_degree": 4,
                 "probe_folds": 3},
        "encoder": {"name": "gin", "dim": 16, "num_layers": 2},
        "objective": {"name": "graph_attr_mask"},
        "train": {"steps": 20, "batch_size": 32, "log_every": 5, "progress": False},
        "probe": {"knn_k": 5},
    })
    run = pretrain(cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    res = probe(run, progress=False)
    tasks = {r["task"] for r in res["rows"]}
    assert tasks == {"MUTAG/fold0", "MUTAG/fold1", "MUTAG/fold2"}
    assert {r["encoder"] for r in res["rows"]} == {"pretrained", "random_init", "floor:pooled_node_features"}
    from sslab.modalities.graph import summarize_folds

    summ = summarize_folds(res["rows"])
    assert summ["MUTAG|pretrained"]["folds"] == 3 and 0.5 < summ["MUTAG|pretrained"]["mean"] <= 1.0
    bad = from_dict(ExperimentConfig, {"modality": "graph", "data": {"sourc": "MUTAG"}})
    from sslab.core.config import ConfigError
    from sslab.core.modality import build_modality

    with pytest.raises(ConfigError, match="data.sourc"):
        build_modality(bad)
