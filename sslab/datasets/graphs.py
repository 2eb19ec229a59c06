"""Graph readers: TU raw-text folders (no download), folders of PyG ``Data`` files, validation.

The TU layout (Morris et al., 2020, "TUDataset: A collection of benchmark datasets for learning with
graphs") is ``<root>/<NAME>/<NAME>_A.txt`` (1-based ``i, j`` edge lines, both directions),
``_graph_indicator.txt`` (graph id per node), ``_graph_labels.txt`` and optional ``_node_labels.txt``,
``_node_attributes.txt``, ``_edge_labels.txt``. We parse the files ourselves (instead of
``torch_geometric.io.read_tu_data``) so that every inconsistency is reported with the file and the
offending line/graph, and nothing is silently dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:  # torch_geometric is imported lazily: plugin discovery must stay cheap
    from torch_geometric.data import Data

from sslab.core.registry import DATASETS


class GraphDataError(ValueError):
    """A graph file or graph object is malformed; the message names the file/item and the problem."""


# ----------------------------------------------------------------------------------------- validation
def validate_graph(data: Data, where: str) -> Data:
    """Check one graph: >= 1 node, ``edge_index`` of shape [2, E] with ids in [0, n), finite features.

    ``where`` names the item (file and graph index) in the error message.
    """
    n = data.num_nodes
    if n is None or int(n) <= 0:
        raise GraphDataError(f"{where}: empty graph (0 nodes); a graph needs at least one node")
    ei = data.edge_index
    if ei is None:
        raise GraphDataError(f"{where}: missing edge_index")
    if ei.dim() != 2 or ei.size(0) != 2:
        raise GraphDataError(f"{where}: edge_index must have shape [2, E], got {tuple(ei.shape)}")
    if ei.dtype != torch.long:
        raise GraphDataError(f"{where}: edge_index must be int64, got {ei.dtype}")
    if ei.numel() > 0:
        lo, hi = int(ei.min()), int(ei.max())
        if lo < 0 or hi >= int(n):
            bad = int(((ei < 0) | (ei >= int(n))).any(dim=0).nonzero()[0])
            raise GraphDataError(
                f"{where}: edge {bad} = ({int(ei[0, bad])}, {int(ei[1, bad])}) is out of range for a graph "
                f"with {int(n)} nodes (valid ids 0..{int(n) - 1})"
            )
    x = getattr(data, "x", None)
    if x is not None:
        if x.size(0) != int(n):
            raise GraphDataError(f"{where}: x has {x.size(0)} rows but the graph has {int(n)} nodes")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise GraphDataError(f"{where}: node features contain NaN or Inf")
    return data


# ----------------------------------------------------------------------------------------- TU reader
def _read_table(path: Path, dtype: type, ncols: Optional[int] = None) -> np.ndarray:
    """Read a comma-separated numeric text file (TU style, spaces allowed); errors name the file."""
    try:
        df = pd.read_csv(path, header=None, sep=",", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise GraphDataError(f"{path}: file is empty") from None
    except Exception as err:  # pandas parser errors
        raise GraphDataError(f"{path}: cannot parse ({err})") from err
    df = df.dropna(axis=1, how="all")
    if ncols is not None and df.shape[1] != ncols:
        raise GraphDataError(f"{path}: expected {ncols} column(s), found {df.shape[1]}")
    if df.isna().any().any():
        row = int(df.isna().any(axis=1).to_numpy().nonzero()[0][0])
        raise GraphDataError(f"{path}: missing value on line {row + 1}")
    try:
        arr = df.to_numpy(dtype=dtype)
    except (ValueError, TypeError) as err:
        raise GraphDataError(f"{path}: non-numeric value ({err})") from err
    return arr


def _read_edges(path: Path) -> np.ndarray:
    """``<NAME>_A.txt``: lines ``i, j`` (1-based)."""
    try:
        df = pd.read_csv(path, header=None, sep=",", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        return np.zeros((0, 2), dtype=np.int64)
    except Exception as err:
        raise GraphDataError(f"{path}: cannot parse edge list ({err})") from err
    if df.shape[1] != 2:
        raise GraphDataError(f"{path}: edge lines must be 'i, j'; found {df.shape[1]} columns")
    if df.isna().any().any():
        row = int(df.isna().any(axis=1).to_numpy().nonzero()[0][0])
        raise GraphDataError(f"{path}: malformed edge on line {row + 1}")
    try:
        return df.to_numpy(dtype=np.int64)
    except (ValueError, TypeError) as err:
        raise GraphDataError(f"{path}: non-integer node id ({err})") from err


@dataclass
class GraphSet:
    """A named list of graphs with label metadata (what a loader returns)."""

    name: str
    graphs: List[Data]
    num_classes: int = 0
    label_values: List[float] = field(default_factory=list)
    task: str = "multiclass"  # multiclass | regression | none
    info: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def avg_nodes(self) -> float:
        return float(np.mean([g.num_nodes for g in self.graphs])) if self.graphs else 0.0


def read_tu_raw(root: str | Path, name: str) -> GraphSet:
    """Read a TU dataset from ``root/name/name_*.txt`` without downloading anything.

    Node labels become ``node_label`` (0-based long), node attributes ``node_attr`` (float),
    edge labels ``edge_label``; graph labels ``y`` are mapped to ``0..C-1`` in sorted order of the
    raw values (``GraphSet.label_values`` keeps the raw values).
    """
    folder = Path(root) / name
    if not folder.is_dir():
        raise FileNotFoundError(f"TU dataset folder not found: {folder} (expected {name}_A.txt etc. inside)")
    f = lambda suffix: folder / f"{name}_{suffix}.txt"  # noqa: E731
    for req in ("A", "graph_indicator"):
        if not f(req).exists():
            raise FileNotFoundError(f"{f(req)}: required TU file is missing")

    ind = _read_table(f("graph_indicator"), np.int64, 1)[:, 0]
    n_total = len(ind)
    if n_total == 0:
        raise GraphDataError(f"{f('graph_indicator')}: no nodes")
    if ind.min() < 1:
        raise GraphDataError(f"{f('graph_indicator')}: graph ids must start at 1, found {ind.min()}")
    if np.any(np.diff(ind) < 0):
        line = int(np.nonzero(np.diff(ind) < 0)[0][0]) + 2
        raise GraphDataError(f"{f('graph_indicator')}: graph ids must be sorted; line {line} goes backwards")
    num_graphs = int(ind.max())
    counts = np.bincount(ind, minlength=num_graphs + 1)[1:]
    if np.any(counts == 0):
        gid = int(np.nonzero(counts == 0)[0][0]) + 1
        raise GraphDataError(f"{folder}: graph {gid} is empty (no node has graph id {gid} in graph_indicator)")
    starts = np.concatenate([[0], np.cumsum(counts)])

    edges = _read_edges(f("A"))
    if len(edges):
        bad = (edges < 1) | (edges > n_total)
        if bad.any():
            row = int(np.nonzero(bad.any(axis=1))[0][0])
            raise GraphDataError(
                f"{f('A')}: line {row + 1}: edge ({edges[row, 0]}, {edges[row, 1]}) is out of range "
                f"(node ids are 1..{n_total})"
            )
    e0 = edges - 1
    eg = ind[e0[:, 0]] if len(e0) else np.zeros(0, dtype=np.int64)
    if len(e0):
        cross = eg != ind[e0[:, 1]]
        if cross.any():
            row = int(np.nonzero(cross)[0][0])
            raise GraphDataError(
                f"{f('A')}: line {row + 1}: edge ({edges[row, 0]}, {edges[row, 1]}) joins graphs "
                f"{ind[e0[row, 0]]} and {ind[e0[row, 1]]}"
            )

    node_labels = _read_table(f("node_labels"), np.int64, 1)[:, 0] if f("node_labels").exists() else None
    node_attr = _read_table(f("node_attributes"), np.float32) if f("node_attributes").exists() else None
    edge_labels = _read_table(f("edge_labels"), np.int64, 1)[:, 0] if f("edge_labels").exists() else None
    for arr, suffix, want in ((node_labels, "node_labels", n_total), (node_attr, "node_attributes", n_total),
                              (edge_labels, "edge_labels", len(edges))):
        if arr is not None and len(arr) != want:
            raise GraphDataError(f"{f(suffix)}: has {len(arr)} lines, expected {want}")
    if node_attr is not None and not np.isfinite(node_attr).all():
        raise GraphDataError(f"{f('node_attributes')}: contains NaN or Inf")
    label_offset = 0
    if node_labels is not None:
        label_offset = int(node_labels.min())
        node_labels = node_labels - label_offset

    y = None
    label_values: List[float] = []
    if f("graph_labels").exists():
        raw = _read_table(f("graph_labels"), np.float64, 1)[:, 0]
        if len(raw) != num_graphs:
            raise GraphDataError(f"{f('graph_labels')}: has {len(raw)} lines, expected {num_graphs} graphs")
        label_values = sorted(set(raw.tolist()))
        lut = {v: i for i, v in enumerate(label_values)}
        y = np.array([lut[v] for v in raw], dtype=np.int64)

    order = np.argsort(eg, kind="stable")
    e_sorted = e0[order]
    e_counts = np.bincount(eg, minlength=num_graphs + 1)[1:]
    e_starts = np.concatenate([[0], np.cumsum(e_counts)])
    from torch_geometric.data import Data

    graphs: List[Data] = []
    for g in range(num_graphs):
        s, t = starts[g], starts[g + 1]
        es, et = e_starts[g], e_starts[g + 1]
        ei = torch.from_numpy((e_sorted[es:et] - s).T.copy()).long().reshape(2, -1)
        d = Data(edge_index=ei, num_nodes=int(t - s))
        if node_labels is not None:
            d.node_label = torch.from_numpy(node_labels[s:t].copy())
        if node_attr is not None:
            d.node_attr = torch.from_numpy(node_attr[s:t].copy())
        if edge_labels is not None:
            d.edge_label = torch.from_numpy(edge_labels[order[es:et]].copy())
        if y is not None:
            d.y = torch.tensor([int(y[g])])
        graphs.append(validate_graph(d, f"{folder} graph {g + 1}"))
    return GraphSet(name=name, graphs=graphs, num_classes=len(label_values), label_values=label_values,
                    task="multiclass" if y is not None else "none",
                    info={"num_node_labels": int(node_labels.max()) + 1 if node_labels is not None else 0,
                          "node_label_offset": label_offset, "source": str(folder)})


# ----------------------------------------------------------------------------------------- PyG folder
def load_pyg_folder(path: str | Path, name: Optional[str] = None) -> GraphSet:
    """Load every ``*.pt`` file in ``path`` (each a ``Data`` or a list of ``Data``), sorted by file name.

    Uses ``torch.load(weights_only=False)``: only load folders you trust.
    """
    folder = Path(path)
    files = sorted(folder.glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.pt files with torch_geometric Data objects")
    from torch_geometric.data import Data

    graphs: List[Data] = []
    for fp in files:
        obj = torch.load(fp, weights_only=False)
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        for i, d in enumerate(items):
            if not isinstance(d, Data):
                raise GraphDataError(f"{fp} item {i}: expected torch_geometric Data, got {type(d).__name__}")
            graphs.append(validate_graph(d, f"{fp} item {i}"))
    ys = [int(g.y.view(-1)[0]) for g in graphs if getattr(g, "y", None) is not None]
    if ys and len(ys) != len(graphs):
        raise GraphDataError(f"{folder}: {len(graphs) - len(ys)} graphs have no label y while others do")
    values = sorted(set(ys))
    return GraphSet(name=name or folder.name, graphs=graphs, num_classes=len(values),
                    label_values=[float(v) for v in values], task="multiclass" if ys else "none",
                    info={"source": str(folder)})


# ----------------------------------------------------------------------------------------- features
def degrees(data: Data) -> torch.Tensor:
    """Out-degree of every node (edge lines are directed; TU files list both directions)."""
    return torch.bincount(data.edge_index[0], minlength=data.num_nodes)


def element_index(atomic_num: torch.Tensor) -> torch.Tensor:
    """Index into :data:`ELEMENTS` per node; ``len(ELEMENTS)`` ("other") for any other element."""
    idx = torch.full_like(atomic_num.long(), len(ELEMENTS))
    for i, z in enumerate(ELEMENTS):
        idx[atomic_num.long() == z] = i
    return idx


PERIODIC = ("H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
            "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
            "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr").split()
"""Element symbols by atomic number - 1."""

_ATOM_LINE = re.compile(r"^\s*(\d+)\s*[:=]?\s+([A-Z][a-z]?)\s*$")


def read_atom_table(folder: str | Path) -> Optional[Dict[int, str]]:
    """Raw TU node label -> element symbol from the ``Node labels:`` section of ``folder/README*.txt``
    (lines like ``  0  C``; MUTAG, PTC_MR, NCI1 style), or ``None`` when the README has no atom table."""
    folder = Path(folder)
    readmes = sorted(folder.glob("README*"))
    if not readmes:
        return None
    table: Dict[int, str] = {}
    inside = False
    for line in readmes[0].read_text(errors="replace").splitlines():
        if line.strip().lower().startswith("node labels"):
            inside = True
            continue
        if inside:
            m = _ATOM_LINE.match(line)
            if m and m.group(2) in PERIODIC:
                table[int(m.group(1))] = m.group(2)
            elif line.strip() and table:  # first non-table line after the entries ends the section
                break
    return table or None


def atom_symbols(gs: "GraphSet") -> Optional[List[str]]:
    """Element symbol of each 0-based node label of a TU set (README atom table), or ``None``."""
    if "atom_symbols" in gs.info:
        return list(gs.info["atom_symbols"])  # type: ignore[arg-type]
    if gs.name in TU_ATOMIC_NUMBERS:
        return [PERIODIC[z - 1] for z in TU_ATOMIC_NUMBERS[gs.name]]
    return None


def attach_atomic_numbers(gs: "GraphSet") -> "GraphSet":
    """Set ``atomic_num`` (and ``info["atom_symbols"]``) on every graph of a TU set whose atoms are known:
    :data:`TU_ATOMIC_NUMBERS`, or the atom table of the folder's README (:func:`read_atom_table`). Sets
    without either are returned unchanged."""
    table = TU_ATOMIC_NUMBERS.get(gs.name)
    if table is None and gs.info.get("source") and gs.info.get("num_node_labels"):
        raw = read_atom_table(str(gs.info["source"]))
        if raw is not None:
            offset = int(gs.info.get("node_label_offset", 0))  # type: ignore[arg-type]
            n = int(gs.info["num_node_labels"])  # type: ignore[arg-type]
            missing = [i + offset for i in range(n) if i + offset not in raw]
            if missing:
                raise GraphDataError(f"{gs.info['source']}: README atom table has no entry for node label(s) "
                                     f"{missing[:5]}")
            symbols = [raw[i + offset] for i in range(n)]
            gs.info["atom_symbols"] = symbols
            table = tuple(PERIODIC.index(s) + 1 for s in symbols)
    if table is None:
        return gs
    gs.info.setdefault("atom_symbols", [PERIODIC[z - 1] for z in table])
    lut = torch.tensor(table)
    for i, g in enumerate(gs.graphs):
        if getattr(g, "node_label", None) is None or int(g.node_label.max()) >= len(lut):
            raise GraphDataError(f"{gs.name} graph {i}: node labels do not match the known atom table {table}")
        g.atomic_num = lut[g.node_label.long()]
    return gs


def _one_hot(idx: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(idx.clamp(max=n - 1), n).float()


FEATURE_KINDS = ("degree", "constant", "node_labels", "node_labels+degree", "atoms", "atoms+degree", "attributes")

ELEMENTS = (6, 7, 8, 9, 53, 17, 35)
"""Atomic numbers of the shared element vocabulary of the ``atoms`` features, in MUTAG's label order
(C, N, O, F, I, Cl, Br); every other element falls into one extra "other" bin. This makes molecules from
different sources (MUTAG's TU labels, RDKit's NCI sample) share one input space for transfer."""

TU_ATOMIC_NUMBERS = {"MUTAG": ELEMENTS}
"""TU node label index -> atomic number known without a README (MUTAG README: 0 C, 1 N, 2 O, 3 F, 4 I, 5 Cl,
6 Br); other TU sets get theirs from the README's ``Node labels:`` atom table (:func:`read_atom_table`)."""


def align_node_labels(probe: "GraphSet", ref: "GraphSet") -> Dict[str, int]:
    """Re-index ``probe``'s node labels into ``ref``'s label vocabulary by element symbol (both README atom
    tables), in place, so one-hot ``node_labels`` features mean the same atom in both sets (MUTAG -> PTC_MR).
    Returns the symbol -> ref index map. Atoms of ``probe`` absent from ``ref`` are refused (they have no
    input column; nothing is dropped silently)."""
    ps, rs = atom_symbols(probe), atom_symbols(ref)
    if ps is None or rs is None:
        lacking = " and ".join(g.name for g, s in ((probe, ps), (ref, rs)) if s is None)
        raise GraphDataError(f"cannot align the node labels of {probe.name} (probe) with {ref.name} (pretraining): "
                             f"no atom table for {lacking} (README 'Node labels:' section); use "
                             "features=degree/constant, or atoms when both are molecules with known atoms")
    index = {s: i for i, s in enumerate(rs)}
    counts: Dict[str, int] = {}
    for g in probe.graphs:
        for lab in g.node_label.tolist():
            if ps[lab] not in index:
                counts[ps[lab]] = counts.get(ps[lab], 0) + 1
    if counts:
        listed = ", ".join(f"{s} ({n} nodes)" for s, n in sorted(counts.items(), key=lambda t: -t[1]))
        raise GraphDataError(f"node labels of {probe.name} (probe) map to {ref.name}'s (pretraining) by atom symbol, "
                             f"but {listed} have no {ref.name} label ({ref.name} atoms: {' '.join(rs)}); use "
                             "features=atoms (shared element vocabulary with an 'other' bin)")
    lut = torch.tensor([index[s] for s in ps])
    for g in probe.graphs:
        g.node_label = lut[g.node_label.long()]
    probe.info["atom_symbols"] = list(rs)
    probe.info["num_node_labels"] = len(rs)
    return index


@dataclass
class FeatureSpec:
    """Which node features to build. ``groups`` lists the one-hot block sizes (for masked prediction)."""

    kind: str = "degree"
    max_degree: int = 32  # degree one-hot has max_degree + 1 bins; larger degrees share the last bin
    num_node_labels: int = 0  # 0: infer from the data

    def groups(self) -> List[int]:
        if self.kind == "degree":
            return [self.max_degree + 1]
        if self.kind == "constant":
            return []
        if self.kind == "node_labels":
            return [self.num_node_labels]
        if self.kind == "node_labels+degree":
            return [self.num_node_labels, self.max_degree + 1]
        if self.kind == "atoms":
            return [len(ELEMENTS) + 1]
        if self.kind == "atoms+degree":
            return [len(ELEMENTS) + 1, self.max_degree + 1]
        return []


def add_node_features(graphs: Sequence[Data], spec: FeatureSpec, where: str = "graphs") -> FeatureSpec:
    """Set ``x`` on every graph in place according to ``spec``; returns the resolved spec.

    ``degree``: one-hot degree capped at ``max_degree`` (GIN/GraphCL convention for graphs without
    node labels); ``constant``: a single 1.0 per node; ``node_labels``: one-hot TU node labels;
    ``atoms``: one-hot element over :data:`ELEMENTS` + "other" (needs ``atomic_num``: NCI, MUTAG);
    ``attributes``: the TU continuous node attributes.
    """
    if spec.kind not in FEATURE_KINDS:
        raise ValueError(f"unknown node feature kind {spec.kind!r}; choose one of {FEATURE_KINDS}")
    if "node_labels" in spec.kind:
        missing = [i for i, g in enumerate(graphs) if getattr(g, "node_label", None) is None]
        if missing:
            raise GraphDataError(f"{where}: features={spec.kind!r} but graph {missing[0]} has no node labels "
                                 f"({len(missing)} graphs without); use 'degree' or 'constant'")
        if spec.num_node_labels <= 0:
            spec = FeatureSpec(spec.kind, spec.max_degree, max(int(g.node_label.max()) for g in graphs) + 1)
    if "atoms" in spec.kind:
        missing = [i for i, g in enumerate(graphs) if getattr(g, "atomic_num", None) is None]
        if missing:
            raise GraphDataError(f"{where}: features={spec.kind!r} needs atomic numbers, but graph {missing[0]} has "
                                 f"none ({len(missing)} graphs without; known for the NCI sample, "
                                 f"{', '.join(TU_ATOMIC_NUMBERS)} and TU folders whose README has a "
                                 "'Node labels:' atom table)")
    if spec.kind == "attributes":
        missing = [i for i, g in enumerate(graphs) if getattr(g, "node_attr", None) is None]
        if missing:
            raise GraphDataError(f"{where}: features='attributes' but graph {missing[0]} has no node_attr")
    for g in graphs:
        parts: List[torch.Tensor] = []
        if spec.kind == "constant":
            parts.append(torch.ones(g.num_nodes, 1))
        if "node_labels" in spec.kind:
            parts.append(_one_hot(g.node_label.long(), spec.num_node_labels))
        if "atoms" in spec.kind:
            parts.append(_one_hot(element_index(g.atomic_num), len(ELEMENTS) + 1))
        if "degree" in spec.kind:
            parts.append(_one_hot(degrees(g), spec.max_degree + 1))
        if spec.kind == "attributes":
            parts.append(g.node_attr.float().view(g.num_nodes, -1))
        g.x = torch.cat(parts, dim=1)
    return spec


class GraphListDataset(Dataset):
    """A ``Dataset`` over a list of PyG graphs; items are ``Data`` (or ``(Data, label)`` if ``with_labels``)."""

    def __init__(self, graphs: Sequence[Data], with_labels: bool = False) -> None:
        self.graphs = list(graphs)
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int):
        g = self.graphs[i]
        if self.with_labels:
            return g, g.y.view(-1)[0]
        return g


@DATASETS.register("tu")
def tu_dataset(root: str, name: str) -> GraphSet:
    """TU raw folder ``root/name`` (see :func:`read_tu_raw`)."""
    return read_tu_raw(root, name)


@DATASETS.register("pyg_folder")
def pyg_folder_dataset(path: str) -> GraphSet:
    """Folder of ``*.pt`` PyG ``Data`` files (see :func:`load_pyg_folder`)."""
    return load_pyg_folder(path)
