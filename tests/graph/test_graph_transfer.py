"""Issue 19, graphs: pretrain on one TU set, probe on another; node-label vocabularies aligned by atom symbol
(README atom tables, MUTAG -> PTC_MR style) or refused before pretraining, naming both sets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sslab.core.config import ConfigError, load_experiment
from sslab.datasets.graphs import read_atom_table
from sslab.datasets.graphs_sources import load_graph_source
from sslab.modalities.graph import GraphModality
from sslab.run import pretrain, probe

torch.set_num_threads(1)

README = """README for dataset {name}

=== Description of the dataset ===

Vertices are atoms.

Node labels:

{table}

Edge labels:

  0  aromatic
  1  single
"""


def write_tu(root, name, symbols, n_graphs=24, seed=0, readme=True, raw_offset=0):
    """A tiny TU folder: path graphs of 4-7 atoms; class 1 graphs contain the last atom symbol."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    edges, ind, labels, glabels = [], [], [], []
    node = 0
    for g in range(n_graphs):
        n = int(rng.integers(4, 8))
        y = g % 2
        lab = rng.integers(0, len(symbols) - 1, n)
        if y:
            lab[0] = len(symbols) - 1
        for i in range(n):
            ind.append(g + 1)
            labels.append(int(lab[i]) + raw_offset)
            if i:
                edges += [(node + i, node + i + 1), (node + i + 1, node + i)]
        node += n
        glabels.append(1 if y else -1)
    (folder / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (folder / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in ind))
    (folder / f"{name}_node_labels.txt").write_text("".join(f"{v}\n" for v in labels))
    (folder / f"{name}_graph_labels.txt").write_text("".join(f"{v}\n" for v in glabels))
    if readme:
        table = "\n".join(f"  {i + raw_offset}  {s}" for i, s in enumerate(symbols))
        (folder / "README.txt").write_text(README.format(name=name, table=table))
    return folder


def _cfg(tmp_path, probe, features="node_labels", source="PRE"):
    return load_experiment(base={
        "modality": "graph", "seed": 0, "name": "g", "output_dir": str(tmp_path / "runs"),
        "data": {"source": source, "tu_root": str(tmp_path), "features": features, "probe": probe},
        "encoder": {"name": "gin", "dim": 8, "num_layers": 2}, "objective": {"name": "graph_attr_mask"},
        "train": {"steps": 2, "batch_size": 8, "progress": False}})


def test_readme_atom_table_is_parsed(tmp_path):
    folder = write_tu(tmp_path, "PTCX", ["N", "C", "Cl", "O"], raw_offset=1)
    assert read_atom_table(folder) == {1: "N", 2: "C", 3: "Cl", 4: "O"}
    gs = load_graph_source("PTCX", tmp_path)  # atomic numbers from the README, not a built-in table
    assert gs.info["atom_symbols"] == ["N", "C", "Cl", "O"]
    z = {int(v) for g in gs.graphs for v in g.atomic_num}
    assert z <= {7, 6, 17, 8}


def test_pretrain_on_one_tu_set_probe_on_another_with_labels_mapped_by_atom(tmp_path):
    write_tu(tmp_path, "PRE", ["C", "N", "O", "F", "Cl", "Br"])
    write_tu(tmp_path, "DOWN", ["O", "C", "N", "Br"], seed=1)  # another order, a subset of PRE's atoms
    cfg = _cfg(tmp_path, {"source": "DOWN"})
    modality = GraphModality(cfg)
    modality.check_probe_compatible()
    task = modality.probe_tasks()[0]
    pre, down = load_graph_source("PRE", tmp_path), load_graph_source("DOWN", tmp_path)
    g_raw, g_feat = down.graphs[0], task.train.dataset.graphs[0]
    # node i of DOWN graph 0 has DOWN label l = symbol DOWN[l]; its one-hot sits at PRE's index of that symbol
    syms_down, syms_pre = ["O", "C", "N", "Br"], ["C", "N", "O", "F", "Cl", "Br"]
    want = torch.tensor([syms_pre.index(syms_down[int(v)]) for v in g_raw.node_label])
    assert g_feat.x.shape[1] == pre.info["num_node_labels"] == 6
    assert torch.equal(g_feat.x.argmax(1), want)
    run = pretrain(cfg)
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"DOWN"} and all("auc" in r or "degenerate" in r for r in rows)
    # the legacy key still works and means the same
    legacy = _cfg(tmp_path, {})
    legacy.data["probe_source"] = "DOWN"
    assert GraphModality(legacy).probe_tasks()[0].name == "DOWN"


@pytest.mark.parametrize("down_symbols, readme, features, match", [
    (["O", "C", "P", "S"], True, "node_labels",
     r"DOWN \(probe\) map to PRE's \(pretraining\) by atom symbol, but (P|S) \(\d+ nodes\), (P|S) .* have no PRE label"),
    (["O", "C", "N"], False, "node_labels", r"no atom table for DOWN"),
    (["O", "C", "N"], False, "atoms", r"DOWN \(probe\) cannot get the node features of PRE .*needs atomic numbers"),
])
def test_incompatible_node_features_are_refused_before_pretraining(tmp_path, down_symbols, readme, features, match):
    write_tu(tmp_path, "PRE", ["C", "N", "O", "F", "Cl", "Br"])
    write_tu(tmp_path, "DOWN", down_symbols, seed=1, readme=readme)
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path, {"source": "DOWN"}, features=features))
    assert not (tmp_path / "runs").exists()


def test_atoms_features_work_for_any_tu_set_with_a_readme_table(tmp_path):
    write_tu(tmp_path, "PRE", ["C", "N", "O", "F", "Cl", "Br"])
    write_tu(tmp_path, "DOWN", ["O", "C", "P", "S"], seed=1)  # P and S fall into the 'other' bin
    modality = GraphModality(_cfg(tmp_path, {"source": "DOWN"}, features="atoms"))
    modality.check_probe_compatible()
    assert modality.probe_tasks()[0].train.dataset.graphs[0].x.shape[1] == 8
