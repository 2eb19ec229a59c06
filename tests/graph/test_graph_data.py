"""Graph readers: TU raw folders (published counts), synthetic families, NCI sample, features, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from sslab.datasets.graphs import (
    FeatureSpec,
    GraphDataError,
    add_node_features,
    load_pyg_folder,
    read_tu_raw,
    validate_graph,
)
from sslab.datasets.graphs_sources import load_graph_source
from sslab.datasets.graphs_synthetic import generate_family


@pytest.fixture(scope="module")
def tu_root(shared_data) -> Path:
    return shared_data / "graphs"


@pytest.mark.parametrize("name,graphs,nodes,edge_lines,classes", [
    ("MUTAG", 188, 3371, 7442, {0: 63, 1: 125}),
    ("PROTEINS", 1113, 43471, 162088, {0: 663, 1: 450}),
    ("IMDB-BINARY", 1000, 19773, 386124, {0: 500, 1: 500}),
])
def test_tu_counts_match_published(tu_root, name, graphs, nodes, edge_lines, classes):
    gs = read_tu_raw(tu_root, name)
    assert len(gs) == graphs
    assert sum(g.num_nodes for g in gs.graphs) == nodes
    assert sum(g.num_edges for g in gs.graphs) == edge_lines
    ys = torch.cat([g.y for g in gs.graphs])
    assert {int(k): int(v) for k, v in zip(*torch.unique(ys, return_counts=True))} == classes


def test_mutag_details(tu_root):
    gs = read_tu_raw(tu_root, "MUTAG")
    assert gs.avg_nodes == pytest.approx(17.93, abs=0.005)
    assert gs.label_values == [-1.0, 1.0]
    assert gs.info["num_node_labels"] == 7
    g = gs.graphs[0]
    assert g.num_nodes == 17 and g.edge_label.shape[0] == g.num_edges
    spec = add_node_features(gs.graphs, FeatureSpec("node_labels+degree", max_degree=4))
    assert spec.groups() == [7, 5]
    assert g.x.shape == (17, 12) and torch.all(g.x.sum(1) == 2)
    # degree block agrees with the edge list
    assert torch.equal(g.x[:, 7:].argmax(1), torch.bincount(g.edge_index[0], minlength=17).clamp(max=4))


def _write_tu(tmp: Path, name: str, edges: str, indicator: str, labels: str = "1\n-1\n") -> Path:
    d = tmp / name
    d.mkdir()
    (d / f"{name}_A.txt").write_text(edges)
    (d / f"{name}_graph_indicator.txt").write_text(indicator)
    (d / f"{name}_graph_labels.txt").write_text(labels)
    return tmp


def test_tu_tiny_roundtrip(tmp_path):
    root = _write_tu(tmp_path, "T", "1, 2\n2, 1\n3, 4\n4, 3\n4, 5\n5, 4\n", "1\n1\n2\n2\n2\n")
    gs = read_tu_raw(root, "T")
    assert [g.num_nodes for g in gs.graphs] == [2, 3]
    assert gs.graphs[1].edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert [int(g.y) for g in gs.graphs] == [1, 0]  # -1 -> 0, 1 -> 1


def test_tu_out_of_range_edge_is_named(tmp_path):
    root = _write_tu(tmp_path, "T", "1, 2\n2, 9\n", "1\n1\n2\n")
    with pytest.raises(GraphDataError, match=r"T_A.txt: line 2: edge \(2, 9\) is out of range"):
        read_tu_raw(root, "T")


def test_tu_empty_graph_is_named(tmp_path):
    root = _write_tu(tmp_path, "T", "1, 2\n2, 1\n", "1\n1\n3\n", labels="1\n1\n-1\n")
    with pytest.raises(GraphDataError, match="graph 2 is empty"):
        read_tu_raw(root, "T")


def test_tu_edge_between_graphs_and_bad_label_count(tmp_path):
    root = _write_tu(tmp_path, "T", "1, 3\n3, 1\n", "1\n1\n2\n")
    with pytest.raises(GraphDataError, match="joins graphs 1 and 2"):
        read_tu_raw(root, "T")
    root2 = _write_tu(tmp_path / "b", "U", "1, 2\n", "1\n1\n2\n", labels="1\n") if (tmp_path / "b").mkdir() is None \
        else None
    with pytest.raises(GraphDataError, match="U_graph_labels.txt: has 1 lines, expected 2"):
        read_tu_raw(root2, "U")


def test_tu_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="TU dataset folder not found"):
        read_tu_raw(tmp_path, "NOPE")
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "X_A.txt").write_text("1, 2\n")
    with pytest.raises(FileNotFoundError, match="X_graph_indicator.txt: required TU file is missing"):
        read_tu_raw(tmp_path, "X")


def test_validate_graph_errors():
    with pytest.raises(GraphDataError, match="item 3: empty graph"):
        validate_graph(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=0), "item 3")
    with pytest.raises(GraphDataError, match=r"edge 1 = \(2, 5\) is out of range for a graph with 4 nodes"):
        validate_graph(Data(edge_index=torch.tensor([[0, 2], [1, 5]]), num_nodes=4), "g")
    with pytest.raises(GraphDataError, match="NaN or Inf"):
        validate_graph(Data(x=torch.tensor([[float("nan")], [0.0]]), edge_index=torch.tensor([[0], [1]])), "g")
    with pytest.raises(GraphDataError, match=r"shape \[2, E\]"):
        validate_graph(Data(edge_index=torch.zeros(3, 2, dtype=torch.long), num_nodes=3), "g")


def test_pyg_folder(tmp_path):
    gs = generate_family("er", num_graphs=5, seed=0)
    torch.save(gs.graphs[:3], tmp_path / "a.pt")
    torch.save(gs.graphs[3], tmp_path / "b.pt")
    loaded = load_pyg_folder(tmp_path)
    assert len(loaded) == 4
    assert torch.equal(loaded.graphs[3].edge_index, gs.graphs[3].edge_index)
    torch.save(Data(edge_index=torch.tensor([[0], [7]]), num_nodes=2), tmp_path / "c.pt")
    with pytest.raises(GraphDataError, match="c.pt item 0: edge 0"):
        load_pyg_folder(tmp_path)


def test_synthetic_families_are_seeded_and_have_their_structure():
    a = generate_family("er", num_graphs=50, num_nodes=(30, 30), seed=3, p=[0.1, 0.3])
    b = generate_family("er", num_graphs=50, num_nodes=(30, 30), seed=3, p=[0.1, 0.3])
    assert all(torch.equal(x.edge_index, y.edge_index) for x, y in zip(a.graphs, b.graphs))
    assert a.num_classes == 2
    dens = {c: np.mean([g.num_edges / (30 * 29) for g in a.graphs if int(g.y) == c]) for c in (0, 1)}
    assert dens[0] == pytest.approx(0.1, abs=0.015) and dens[1] == pytest.approx(0.3, abs=0.02)
    ba = generate_family("ba", num_graphs=10, num_nodes=(40, 40), seed=0, m=2)
    assert all(g.num_edges == 2 * 2 * (40 - 2) for g in ba.graphs)  # m (n - m) undirected edges
    ws = generate_family("ws", num_graphs=5, num_nodes=(30, 30), seed=0, k=4, p=0.0)
    assert all(torch.all(torch.bincount(g.edge_index[0]) == 4) for g in ws.graphs)  # ring lattice
    with pytest.raises(ValueError, match="unknown parameter"):
        generate_family("er", q=0.1)
    with pytest.raises(ValueError, match="unknown synthetic graph family"):
        generate_family("lattice")


def test_sources_and_nci():
    gs = load_graph_source("synthetic:sbm:num_graphs=7,seed=2,num_nodes=[10,12]")
    assert len(gs) == 7 and all(10 <= g.num_nodes <= 12 for g in gs.graphs)
    nci = load_graph_source("nci:limit=40")
    assert len(nci) + nci.info["skipped"] == 40 and nci.task == "regression"
    spec = add_node_features(nci.graphs, FeatureSpec("node_labels", num_node_labels=119))
    assert nci.graphs[0].x.shape[1] == 119 and spec.groups() == [119]
    from sslab.datasets.graphs_molecules import smiles_to_graphs

    with pytest.raises(GraphDataError, match=r"x.smi line 2: invalid or empty SMILES 'C1CC'"):
        smiles_to_graphs(["CCO", "C1CC"], "x.smi")
    graphs, kept = smiles_to_graphs(["CCO", "C1CC", "c1ccccc1"], "x.smi", on_invalid="skip")
    assert kept == [0, 2] and [g.num_nodes for g in graphs] == [3, 6]
    with pytest.raises(FileNotFoundError, match="not a TU folder"):
        load_graph_source("NOT-A-DATASET", tu_root="/nonexistent")


def test_degree_and_constant_features_need_no_labels():
    gs = generate_family("ba", num_graphs=3, seed=0)
    add_node_features(gs.graphs, FeatureSpec("constant"))
    assert gs.graphs[0].x.shape == (gs.graphs[0].num_nodes, 1)
    with pytest.raises(GraphDataError, match="has no node labels"):
        add_node_features(gs.graphs, FeatureSpec("node_labels"))


def test_atom_features_share_one_element_vocabulary(tu_root):
    """``atoms`` features: MUTAG's TU labels and NCI's atomic numbers land in the same one-hot columns."""
    mutag = load_graph_source("MUTAG", tu_root=tu_root)
    spec = add_node_features(mutag.graphs, FeatureSpec("atoms+degree", max_degree=4))
    assert spec.groups() == [8, 5]
    x = torch.cat([g.x for g in mutag.graphs])
    # MUTAG README: 0 C, 1 N, 2 O, 3 F, 4 I, 5 Cl, 6 Br -> same column order; nothing falls into "other"
    labels = torch.cat([g.node_label for g in mutag.graphs])
    assert torch.equal(x[:, :8].argmax(1), labels) and x[:, 7].sum() == 0
    nci = load_graph_source("nci:limit=40")
    add_node_features(nci.graphs, FeatureSpec("atoms+degree", max_degree=4))
    z = torch.cat([g.atomic_num for g in nci.graphs])
    col = torch.cat([g.x for g in nci.graphs])[:, :8].argmax(1)
    assert torch.equal(col[z == 6], torch.zeros(int((z == 6).sum()), dtype=torch.long))  # carbon -> C column
    assert torch.all(col[z == 8] == 2) and torch.all(col[z == 17] == 5)
    other = (z == 16) | (z == 15)  # S, P (present in the first 40 molecules) -> "other"
    assert int(other.sum()) > 0 and torch.all(col[other] == 7)
    with pytest.raises(GraphDataError, match="needs atomic numbers"):
        add_node_features(generate_family("ba", num_graphs=2, seed=0).graphs, FeatureSpec("atoms"))
