"""Graph modality plugin: PyG graphs from TU folders, synthetic families, RDKit NCI or PyG folders.

Pretraining batches are PyG ``Batch`` objects (attribute masking; edge prediction, with ``pos_edge_index``
and ``neg_edge_index``) or ``{"view1", "view2"}`` dicts of them (GraphCL); all move with the core's
``move_to_device`` (``Batch.to``). Probing uses graph labels with a stratified split or k-fold cross-validation (``probe_folds: 10`` is the protocol of the graph-SSL
literature, e.g. GraphCL's unsupervised TU evaluation); :func:`summarize_folds` averages the fold rows.

``data:`` section (all optional)::

    source: MUTAG                # graph source string, see sslab.datasets.graphs_sources
    tu_root: ""                  # TU root folder; default ../shared/data/graphs
    features: degree             # degree | constant | node_labels[+degree] | atoms[+degree] | attributes
    max_degree: 32
    probe: {}                    # transfer: probe graphs, e.g. {source: PTC_MR} (+ tu_root, ... as above)
    probe_source: ""             # legacy alias of probe.source
    probe_folds: 0               # 0: one stratified split (probe_test_fraction); k >= 2: k-fold CV
    probe_test_fraction: 0.2
    probe_pooling: ""            # graph embedding for the probe: "" = the encoder's pooling | mean | sum | max
    probe_layers: last           # last: the encoder's output | all: concat of every layer's pooled nodes
    mask_ratio: 0.15             # graph_attr_mask
    neg_ratio: 1.0               # graph_edge_pred: sampled non-edges per positive edge
    augmentations: [node_drop, edge_perturb, subgraph, attr_mask]   # graphcl
    aug_ratio: 0.2
    finetune: {epochs: 20, batch_size: 32, lr: 0.001, weight_decay: 0.0}   # graph_finetune.finetune

Transfer (``data.probe``, or the legacy ``probe_source``): the probe graphs get the pretraining node
features. ``node_labels`` features of another TU set are re-indexed into the pretraining set's label
vocabulary by atom symbol when both READMEs carry the atom table (MUTAG -> PTC_MR); atoms the pretraining
set never saw, a missing atom table, another ``max_degree`` or another attribute width are refused before
pretraining (:meth:`GraphModality.check_probe_compatible`), naming both sets.

Supervised fine-tuning (encoder + linear head, cross-entropy, on the probe splits, pretrained vs random
init): :func:`finetune` (``sslab.modalities.graph_finetune``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from sslab.core.config import ConfigError, from_dict
from sslab.core.export import build_encoder
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import MODALITIES, OBJECTIVES
from sslab.datasets.graphs import (FeatureSpec, GraphDataError, GraphListDataset, GraphSet, add_node_features,
                                   align_node_labels)
from sslab.datasets.graphs_augment import GraphMaskCollator, GraphViewsCollator, collate_labelled
from sslab.datasets.graphs_edges import GraphEdgeCollator
from sslab.datasets.graphs_sources import load_graph_source
from sslab.modalities.graph_finetune import FinetuneConfig, finetune, finetune_task  # noqa: F401  (re-export)


@dataclass
class GraphDataConfig:
    source: str = "MUTAG"
    tu_root: str = ""
    features: str = "degree"
    max_degree: int = 32
    num_node_labels: int = 0
    probe: Dict[str, Any] = field(default_factory=dict)
    probe_source: str = ""
    probe_folds: int = 0
    probe_test_fraction: float = 0.2
    probe_pooling: str = ""
    probe_layers: str = "last"
    mask_ratio: float = 0.15
    neg_ratio: float = 1.0
    augmentations: List[str] = field(default_factory=lambda: ["node_drop", "edge_perturb", "subgraph",
                                                              "attr_mask"])
    aug_ratio: float = 0.2
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


COLLATORS: Dict[str, Callable[[GraphDataConfig], Callable]] = {
    "graph_attr_mask": lambda d: GraphMaskCollator(d.mask_ratio),
    "graphcl": lambda d: GraphViewsCollator(d.augmentations, d.aug_ratio),
    "graph_edge_pred": lambda d: GraphEdgeCollator(d.neg_ratio),
}
"""objective name -> collator factory."""


PROBE_LAYERS = ("last", "all")


def graph_embedding(encoder: nn.Module, batch: Any, pooling: str = "", layers: str = "last") -> torch.Tensor:
    """Frozen graph features ``[num_graphs, D]`` for probing.

    ``layers="last"``: ``pool(encoder(batch))`` (D = encoder.dim). ``layers="all"``: the pooled node tokens of
    every layer, concatenated (D = num_layers * dim) - the graph representation of the graph-SSL linear
    evaluations (InfoGraph, Sun et al. ICLR 2020, Sec. 4; GraphCL, You et al. 2020, unsupervised TU setting;
    the JK-concat readout of Xu et al. 2018). ``pooling`` overrides the encoder's pooling ("" keeps it).
    """
    if layers not in PROBE_LAYERS:
        raise ValueError(f"data.probe_layers must be one of {PROBE_LAYERS}, got {layers!r}")
    if layers == "last":
        return encoder.pool(encoder(batch), batch, pooling or None)
    if not hasattr(encoder, "layer_tokens"):
        raise ValueError(f"data.probe_layers='all' needs an encoder with layer_tokens(); "
                         f"{type(encoder).__name__} has none")
    return torch.cat([encoder.pool(t, batch, pooling or None) for t in encoder.layer_tokens(batch)], dim=-1)


def load_featured(spec: str, dcfg: GraphDataConfig, align_to: Optional[Tuple[GraphSet, FeatureSpec]] = None
                  ) -> Tuple[GraphSet, FeatureSpec]:
    """Load a graph source and give its graphs node features ``x`` as configured. ``align_to`` (the
    pretraining set and its resolved features): build the same input space, re-indexing ``node_labels`` of
    another set by atom symbol (:func:`~sslab.datasets.graphs.align_node_labels`)."""
    gs = load_graph_source(spec, dcfg.tu_root or None)
    fs = FeatureSpec(dcfg.features, dcfg.max_degree, dcfg.num_node_labels)
    if align_to is not None:
        ref, ref_spec = align_to
        if "node_labels" in dcfg.features and gs.name != ref.name:
            align_node_labels(gs, ref)
        if "node_labels" in dcfg.features:
            fs = FeatureSpec(dcfg.features, dcfg.max_degree, ref_spec.num_node_labels)
            too_big = [i for i, g in enumerate(gs.graphs) if int(g.node_label.max()) >= ref_spec.num_node_labels]
            if too_big:
                raise GraphDataError(f"{gs.name} (probe) graph {too_big[0]} has node label "
                                     f"{int(gs.graphs[too_big[0]].node_label.max())}, beyond the "
                                     f"{ref_spec.num_node_labels} labels of {ref.name} (pretraining)")
    fspec = add_node_features(gs.graphs, fs, where=gs.name)
    return gs, fspec


def graph_splits(gs: GraphSet, folds: int, test_fraction: float, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Stratified (classification) or plain (regression) train/test index splits."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    y = np.array([float(g.y.view(-1)[0]) for g in gs.graphs])
    idx = np.arange(len(y))
    strat = gs.task == "multiclass"
    if folds >= 2:
        kf = (StratifiedKFold if strat else KFold)(n_splits=folds, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in kf.split(idx, y if strat else None)]
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y if strat else None)
    return [(np.sort(tr), np.sort(te))]


def summarize_folds(rows: Sequence[Dict[str, Any]], metric: str = "accuracy") -> Dict[str, Dict[str, float]]:
    """Mean and std of ``metric`` over ``<task>/fold<k>`` rows, per (task, encoder)."""
    acc: Dict[str, List[float]] = {}
    for r in rows:
        if metric in r and r.get("label_fraction", 1.0) == 1.0:
            base = r["task"].split("/fold")[0]
            acc.setdefault(f"{base}|{r['encoder']}", []).append(float(r[metric]))
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "folds": len(v)} for k, v in acc.items()}


@MODALITIES.register("graph")
class GraphModality(Modality):
    """Graphs (see module docstring)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.data_cfg = from_dict(GraphDataConfig, cfg.data, path="data")
        if self.data_cfg.probe_layers not in PROBE_LAYERS:
            raise ValueError(f"data.probe_layers must be one of {PROBE_LAYERS}, got {self.data_cfg.probe_layers!r}")
        if self.data_cfg.probe_pooling not in ("", "mean", "sum", "max"):
            raise ValueError(f"data.probe_pooling must be '', 'mean', 'sum' or 'max', got "
                             f"{self.data_cfg.probe_pooling!r}")
        self._cache: Dict[str, Tuple[GraphSet, FeatureSpec]] = {}
        self._align_to: Optional[Tuple[GraphSet, FeatureSpec]] = None  # set on a probe twin

    probe_aliases = {"probe_source": "source"}

    def _load(self, spec: str) -> Tuple[GraphSet, FeatureSpec]:
        if spec not in self._cache:
            self._cache[spec] = load_featured(spec, self.data_cfg, self._align_to)
        return self._cache[spec]

    def probe_twin(self) -> Optional[Modality]:
        twin = super().probe_twin()
        if twin is not None and twin._align_to is None:  # type: ignore[attr-defined]
            twin._align_to = self._load(self.data_cfg.source)  # type: ignore[attr-defined]
        return twin

    def check_probe_compatible(self) -> None:
        """Load both graph sets with the pretraining features (aligning node labels by atom symbol) and
        compare the input widths; any mismatch is a ConfigError naming both sets."""
        merged = self.probe_data_config()
        if merged is None:
            return
        d = self.data_cfg
        t = from_dict(GraphDataConfig, merged, path="data.probe")
        for key in ("features", "max_degree", "num_node_labels"):
            if getattr(t, key) != getattr(d, key):
                raise ConfigError(f"data.probe.{key}={getattr(t, key)!r} differs from the pretraining "
                                  f"data.{key}={getattr(d, key)!r}: the encoder's node features are fixed")
        ref, _ = self._load(d.source)
        twin = self.probe_twin()
        assert isinstance(twin, GraphModality)
        try:
            gs, _ = twin._load(t.source)
        except GraphDataError as err:
            raise ConfigError(f"data.probe: {t.source} (probe) cannot get the node features of {d.source} "
                              f"(pretraining, features={d.features}): {err}") from err
        dims = (int(ref.graphs[0].x.size(1)), int(gs.graphs[0].x.size(1)))
        if dims[0] != dims[1]:
            raise ConfigError(f"data.probe: node features of {gs.name} (probe) have {dims[1]} dims, those of "
                              f"{ref.name} (pretraining, features={d.features}) {dims[0]}")
        if gs.task == "none":
            raise ConfigError(f"data.probe: {gs.name} (probe) has no graph labels")

    def _feature_dim(self) -> int:
        gs, _ = self._load(self.data_cfg.source)
        return int(gs.graphs[0].x.size(1))

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable]]:
        gs, _ = self._load(self.data_cfg.source)
        name = self.cfg.objective.get("name", "")
        if name not in COLLATORS:
            raise ValueError(f"graph modality: no collator for objective {name!r}; known: {sorted(COLLATORS)}")
        return GraphListDataset(gs.graphs), COLLATORS[name](self.data_cfg)

    def build_encoder(self) -> nn.Module:
        spec = dict(self.cfg.encoder)
        spec.setdefault("name", "gin")
        spec.setdefault("in_dim", self._feature_dim())
        return build_encoder(spec)

    def build_objective(self, encoder: nn.Module) -> nn.Module:
        spec = dict(self.cfg.objective)
        name = spec.pop("name", None)
        if name is None:
            raise ValueError(f"objective section needs a 'name' (one of: {', '.join(OBJECTIVES.names())})")
        if name == "graph_attr_mask" and "categorical_groups" not in spec:
            _, fspec = self._load(self.data_cfg.source)
            spec["categorical_groups"] = fspec.groups() or None
        return OBJECTIVES.build(name, encoder=encoder, **spec)

    def probe_tasks(self) -> List[ProbeTask]:
        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        spec = self.data_cfg.source
        gs, _ = self._load(spec)
        if gs.task == "none":
            raise ValueError(f"graph probe: {gs.name} has no graph labels; set data.probe.source")
        task = "multiclass" if gs.task == "multiclass" else "regression"
        ds = GraphListDataset(gs.graphs, with_labels=True)
        splits = graph_splits(gs, self.data_cfg.probe_folds, self.data_cfg.probe_test_fraction, self.cfg.seed)
        names = [str(v) for v in gs.label_values] if task == "multiclass" else None
        many = len(splits) > 1
        return [ProbeTask(f"{gs.name}/fold{i}" if many else gs.name, task, Subset(ds, tr.tolist()),
                          Subset(ds, te.tolist()), collate_labelled, names)
                for i, (tr, te) in enumerate(splits)]

    # ---------------------------------------------------------------- encoder artifact (issue 14)
    def input_pipeline(self) -> Dict[str, Any]:
        """The resolved node-feature specification (kind, degree cap, label vocabulary, elements), the input
        width and the probe's readout (pooling, layers)."""
        from sslab.datasets.graphs import ELEMENTS

        d = self.data_cfg
        _, fspec = self._load(d.source)
        return {"kind": "graph", "features": fspec.kind, "max_degree": fspec.max_degree,
                "num_node_labels": fspec.num_node_labels, "elements": list(ELEMENTS) if "atoms" in fspec.kind else None,
                "in_dim": int(self.cfg.encoder.get("in_dim", self._feature_dim())),
                "pooling": d.probe_pooling or self.cfg.encoder.get("pooling", "mean"), "layers": d.probe_layers}

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        return graph_embedding(encoder, inputs, self.data_cfg.probe_pooling, self.data_cfg.probe_layers)
