"""``graph`` pipeline: TU folder or SMILES file -> node features as in training (one-hot degree capped at
``max_degree``, node-label / element vocabularies, ...) -> GNN node tokens -> the probe's graph pooling."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

from torch import nn

from sslab.core.pipeline import InputMismatch, InputPipeline, PathLike
from sslab.core.registry import PIPELINES

SMILES_SUFFIXES = (".smi", ".smiles", ".txt")


@PIPELINES.register("graph")
class GraphPipeline(InputPipeline):
    """Spec keys: ``features`` (degree | constant | node_labels[+degree] | atoms[+degree] | attributes),
    ``max_degree``, ``num_node_labels`` (the training vocabulary), ``elements`` (atoms), ``in_dim``,
    ``pooling``, ``layers``. A node label outside the vocabulary or another feature width is an error."""

    usage = 'enc.embed_raw(graphs)   # torch_geometric Data / SMILES, or a list'

    def featurize(self, graphs: List[Any], where: str) -> List[Any]:
        from sslab.datasets.graphs import FeatureSpec, add_node_features

        s = self.spec
        kind = s["features"]
        if "node_labels" in kind:
            n = int(s["num_node_labels"])
            for i, g in enumerate(graphs):
                lab = getattr(g, "node_label", None)
                if lab is not None and lab.numel() and int(lab.max()) >= n:
                    raise InputMismatch(f"{where} graph {i}: node label {int(lab.max())} is outside the encoder's "
                                        f"vocabulary of {n} node labels (0..{n - 1})")
        add_node_features(graphs, FeatureSpec(kind, int(s["max_degree"]), int(s.get("num_node_labels") or 0)),
                          where=where)
        want = int(s["in_dim"])
        for i, g in enumerate(graphs):
            if g.x.size(1) != want:
                raise InputMismatch(f"{where} graph {i}: {g.x.size(1)} node features, the encoder expects {want} "
                                    f"({kind})")
        return graphs

    def preprocess(self, raw: Any, **meta: Any) -> List[Any]:
        """``raw``: a PyG ``Data`` (with ``edge_index`` and, per the features, ``node_label`` / ``atomic_num`` /
        ``node_attr``), a SMILES string, or a list of either."""
        from sslab.datasets.graphs import validate_graph

        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        graphs = []
        for i, g in enumerate(items):
            if isinstance(g, str):
                graphs += self._smiles([g], "SMILES input")
            else:
                graphs.append(validate_graph(g.clone(), f"graph input {i}"))
        return self.featurize(graphs, "graph input")

    def _smiles(self, lines: List[str], where: str) -> List[Any]:
        from sslab.datasets.graphs_molecules import smiles_to_graphs

        if "node_labels" in self.spec["features"]:
            raise InputMismatch(f"{where}: SMILES molecules have atomic numbers, but this encoder's node features "
                                f"are {self.spec['features']!r} (a TU label vocabulary); use TU input")
        graphs, _ = smiles_to_graphs(lines, where, on_invalid="error")
        return graphs

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """TU folders (``<NAME>/<NAME>_A.txt`` ...; rows ``folder:i``) and SMILES files (one per line, optional
        name after whitespace; rows ``file:line``)."""
        from sslab.datasets.graphs import attach_atomic_numbers, read_tu_raw

        for p in map(Path, paths):
            if p.is_dir():
                if not (p / f"{p.name}_A.txt").is_file():
                    raise FileNotFoundError(f"{p}: not a TU dataset folder (no {p.name}_A.txt)")
                gs = attach_atomic_numbers(read_tu_raw(p.parent, p.name))
                for i, g in enumerate(self.featurize(gs.graphs, str(p))):
                    yield f"{p}:{i}", g
            elif p.is_file() and p.suffix.lower() in SMILES_SUFFIXES:
                lines = [(n, ln.split()[0]) for n, ln in enumerate(p.read_text().splitlines(), start=1) if ln.strip()]
                graphs = self.featurize(self._smiles([s for _, s in lines], str(p)), str(p))
                for (n, _), g in zip(lines, graphs):
                    yield f"{p}:{n}", g
            else:
                raise FileNotFoundError(f"{p}: not a TU folder or a SMILES file ({', '.join(SMILES_SUFFIXES)})")

    def collate(self, items: Sequence[Any]) -> Any:
        from torch_geometric.data import Batch

        from sslab.datasets.graphs_augment import _strip

        return Batch.from_data_list([_strip(g) for g in items])

    def embed(self, encoder: nn.Module, inputs: Any):
        from sslab.modalities.graph import graph_embedding

        return graph_embedding(encoder, inputs, self.spec.get("pooling") or "", self.spec.get("layers", "last"))

    def describe(self) -> List[str]:
        s = self.spec
        return [f"- node features `{s['features']}` ({s['in_dim']} dims): degree one-hot capped at {s['max_degree']}"
                + (f", {s['num_node_labels']} node labels" if "node_labels" in s["features"] else "")
                + (f", elements {s.get('elements')} + other" if "atoms" in s["features"] else ""),
                f"- features: {s.get('layers')} layer(s), pooling {s.get('pooling') or 'the encoder default'}"]
