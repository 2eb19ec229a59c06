"""One string names a graph source, for the CLI, experiments and the modality plugin.

Grammar (``key=value`` options separated by commas; values parsed as YAML):

- ``MUTAG`` or ``tu:MUTAG``           -> TU raw folder ``<tu_root>/MUTAG``
- ``synthetic:sbm`` / ``synthetic:er:p=0.3,num_graphs=200,seed=1`` -> :func:`generate_family`
- ``nci`` / ``nci:limit=500``         -> RDKit NCI sample
- ``pyg:/path/to/folder``             -> folder of ``*.pt`` PyG Data files
- an existing directory path          -> TU folder if it holds ``<dirname>_A.txt``, else a PyG folder
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from sslab.datasets.graphs import GraphSet, attach_atomic_numbers, load_pyg_folder, read_tu_raw
from sslab.datasets.graphs_molecules import load_nci_sample
from sslab.datasets.graphs_synthetic import generate_family


def default_tu_root() -> Path:
    """``$SSLAB_GRAPH_ROOT`` or ``../shared/data/graphs`` relative to the repository root."""
    env = os.environ.get("SSLAB_GRAPH_ROOT")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for cand in (repo.parent / "shared" / "data" / "graphs", repo / "shared" / "data" / "graphs"):
        if cand.is_dir():
            return cand
    return Path("../shared/data/graphs")


def _parse_opts(text: str) -> Dict[str, Any]:
    opts: Dict[str, Any] = {}
    if not text:
        return opts
    depth, cur, parts = 0, "", []
    for ch in text:  # split on commas outside brackets
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        if "=" not in p:
            raise ValueError(f"graph source option {p!r} must be key=value")
        k, v = p.split("=", 1)
        opts[k.strip()] = yaml.safe_load(v)
    return opts


def load_graph_source(spec: str, tu_root: Optional[str | Path] = None) -> GraphSet:
    """Load the graphs named by ``spec`` (see module docstring)."""
    root = Path(tu_root) if tu_root else default_tu_root()
    if spec.startswith("synthetic:"):
        rest = spec[len("synthetic:"):]
        family, _, opts = rest.partition(":")
        gs = generate_family(family, **_parse_opts(opts))
        gs.name = spec if opts else f"synthetic-{family}"
        return gs
    if spec == "nci" or spec.startswith("nci:"):
        return load_nci_sample(**_parse_opts(spec[4:]))
    if spec.startswith("pyg:"):
        return load_pyg_folder(spec[4:])
    if spec.startswith("tu:"):
        return attach_atomic_numbers(read_tu_raw(root, spec[3:]))
    p = Path(spec)
    if p.is_dir():
        if (p / f"{p.name}_A.txt").exists():
            return attach_atomic_numbers(read_tu_raw(p.parent, p.name))
        return load_pyg_folder(p)
    if (root / spec).is_dir():
        return attach_atomic_numbers(read_tu_raw(root, spec))
    raise FileNotFoundError(
        f"graph source {spec!r}: not a TU folder under {root}, not a directory, and not one of "
        "'synthetic:<er|sbm|ba|ws>[:k=v,...]', 'nci[:limit=N]', 'pyg:<folder>'"
    )
