"""RDKit's bundled NCI sample (about 5,000 SMILES, ``RDConfig.RDDataDir/NCI/first_5K.smi``) as PyG graphs.

Conversion by ``torch_geometric.utils.from_smiles`` (9 categorical atom features, 3 bond features).
The label is the topological polar surface area from ``first_5k.tpsa.csv`` (Ertl et al., 2000), a
regression target that ships in the same folder. No download: the files are part of the rdkit wheel.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch

from sslab.core.registry import DATASETS
from sslab.datasets.graphs import GraphDataError, GraphSet, validate_graph


def nci_dir() -> Path:
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir) / "NCI"


def smiles_to_graphs(smiles: List[str], where: str, on_invalid: str = "error") -> tuple[list, list[int]]:
    """Convert SMILES to PyG graphs. ``on_invalid``: 'error' (default) or 'skip' (skips are counted).

    Returns (graphs, kept indices). The node feature ``x`` is the 9 categorical atom features as float;
    ``node_label`` and ``atomic_num`` are the atomic number (first feature).
    """
    from rdkit import Chem, RDLogger
    from torch_geometric.utils import from_smiles

    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    RDLogger.DisableLog("rdApp.*")
    graphs, kept = [], []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        if mol is None or mol.GetNumAtoms() == 0:
            if on_invalid == "error":
                raise GraphDataError(f"{where} line {i + 1}: invalid or empty SMILES {s!r}")
            continue
        d = from_smiles(s)
        d.node_label = d.x[:, 0].long()
        d.atomic_num = d.node_label.clone()
        d.x = None  # features are built by add_node_features, like for every other source
        graphs.append(validate_graph(d, f"{where} line {i + 1}"))
        kept.append(i)
    return graphs, kept


def load_nci_sample(limit: Optional[int] = None, on_invalid: str = "skip") -> GraphSet:
    """The RDKit NCI sample; ``y`` = TPSA (float). ``info['skipped']`` counts invalid SMILES."""
    folder = nci_dir()
    smi = folder / "first_5K.smi"
    if not smi.exists():
        raise FileNotFoundError(f"{smi}: RDKit NCI sample not found (is rdkit installed?)")
    lines = [ln.split()[0] for ln in smi.read_text().splitlines() if ln.strip()]
    tpsa = {}
    csv = folder / "first_5k.tpsa.csv"
    if csv.exists():
        for ln in csv.read_text().splitlines():
            if ln.startswith("#") or "," not in ln:
                continue
            s, v = ln.rsplit(",", 1)
            tpsa[s] = float(v)
    if limit is not None:
        lines = lines[: int(limit)]
    graphs, kept = smiles_to_graphs(lines, str(smi), on_invalid=on_invalid)
    have = all(lines[k] in tpsa for k in kept)
    for g, k in zip(graphs, kept):
        g.smiles = lines[k]
        if have:
            g.y = torch.tensor([tpsa[lines[k]]], dtype=torch.float)
    return GraphSet(name="NCI", graphs=graphs, task="regression" if have else "none",
                    info={"skipped": len(lines) - len(kept), "source": str(smi),
                          "num_node_labels": 119})


@DATASETS.register("nci")
def nci_dataset(limit: Optional[int] = None, on_invalid: str = "skip") -> GraphSet:
    """RDKit NCI sample (see :func:`load_nci_sample`)."""
    return load_nci_sample(limit=limit, on_invalid=on_invalid)
