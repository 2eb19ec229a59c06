"""Table modality plugin: UniTabE pretraining across several tables, probing on a held-out table.

``data:`` section (validated by :class:`TableDataConfig`):

* ``pretrain``: table sources pretrained on *together* (rows of all tables mixed in each batch, each
  row padded to the widest table): ``shared:<adult|german_credit|titanic>`` (from ``root``),
  ``sklearn:<breast_cancer|diabetes|wine|iris>``, or ``csv:<name>`` with ``csv.<name>`` holding
  :func:`~sslab.datasets.tables.read_csv_table` arguments (``path``, ``target``, ``types``, ...).
* ``eval``: the table probed (a split of it); ideally not among ``pretrain``. The transfer convention's
  spelling is ``probe: {source: <spec>}``; ``eval`` stays as its alias (``data.probe.source`` wins when both
  are given). ``probe: {source: csv:<name>, path: x.csv, target: y}`` is short for ``csv.<name>: {path, target}``;
  other keys of ``data.probe`` (``test_fraction``, ``split_seed``, ``csv``, ``root``) override the section.
* Transfer checks before pretraining (:meth:`TableModality.check_probe_compatible`): the probe table must
  load and have a target column; it is tokenised with the run's tokenizer, so ``data.probe`` may not change
  ``digits``/``vocab_size``/``include_targets``. Any column schema is accepted otherwise (UniTabE reads
  column names and values as text); a probe table that is also a pretraining table is logged as a warning.
* The shared WordPiece tokenizer is trained on the pretraining tables only and stored inside the
  encoder's spec (``encoder.json``), so an exported encoder carries its tokenizer.

``probe.finetune: {steps, lr, head_lr, batch_size}`` adds rows ``"<table>:finetune"``: a copy of each probed
encoder fine-tuned end to end (:mod:`sslab.objectives.tabular_finetune`) on the linear probe's label subsample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from sslab.core.config import from_dict
from sslab.core.export import build_encoder
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import MODALITIES
from sslab.datasets.tables import (
    SHARED_TABLES, SKLEARN_TABLES, Table, TableError, load_shared_table, load_sklearn_table, read_csv_table,
)
from sslab.datasets.tables_tokenize import TableCollator, TableRows, TableTokenizer, TokenizedTable
from sslab.eval.floors import Scorer
from sslab.eval.table_baselines import split_indices


@dataclass
class TableDataConfig:
    root: str = "../shared/data"
    pretrain: List[str] = field(default_factory=lambda: [
        "shared:adult", "shared:german_credit", "sklearn:breast_cancer", "sklearn:diabetes", "sklearn:wine"])
    eval: str = "shared:titanic"
    csv: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    include_targets: bool = False  # pretrain on the target columns of pretraining tables too
    max_rows_per_table: int = 0  # 0: all rows; else a fixed random subset per table
    vocab_size: int = 4000
    digits: int = 4
    mask_ratio: float = 0.35
    n_views: int = 2
    view_ratio: float = 0.6
    test_fraction: float = 0.3
    split_seed: int = 0
    probe: Dict[str, Any] = field(default_factory=dict)  # transfer: {source, path, target, ...}


TOKENIZER_KEYS = ("digits", "vocab_size", "include_targets")


def resolve_root(root: str) -> Path:
    """``root`` as given, else relative to the repository root (so tests/notebooks work from anywhere)."""
    p = Path(root)
    if p.is_dir():
        return p
    alt = Path(__file__).resolve().parents[2] / root
    if alt.is_dir():
        return alt
    raise TableError(f"table data root {root!r} not found (also tried {alt})")


def load_source(spec: str, cfg: TableDataConfig) -> Table:
    """``shared:<name>``, ``sklearn:<name>`` or ``csv:<name>`` -> :class:`Table`."""
    kind, _, name = spec.partition(":")
    if kind == "shared":
        return load_shared_table(name, resolve_root(cfg.root))
    if kind == "sklearn":
        return load_sklearn_table(name)
    if kind == "csv":
        if name not in cfg.csv:
            raise TableError(f"table source {spec!r}: add data.csv.{name} with read_csv_table arguments (path, ...)")
        kwargs = dict(cfg.csv[name])
        path = kwargs.pop("path", None)
        if path is None:
            raise TableError(f"data.csv.{name} needs a 'path'")
        return read_csv_table(path, name=name, **kwargs)
    raise TableError(f"table source {spec!r} must be shared:<{'|'.join(SHARED_TABLES)}>, "
                     f"sklearn:<{'|'.join(SKLEARN_TABLES)}> or csv:<name>")


def with_target_as_feature(table: Table) -> Table:
    """Copy of ``table`` whose target column is also a (categorical/numeric) feature column."""
    from sslab.datasets.tables import table_from_frame

    if table.target is None:
        return table
    frame = table.frame.copy()
    frame[table.schema.target] = table.target.astype(str) if table.schema.task != "regression" else table.target
    types = {c.name: c.type for c in table.schema.columns}
    return table_from_frame(frame, name=table.name, types=types, source=table.source)


def finetune_metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> Dict[str, Any]:
    """:func:`~sslab.eval.table_baselines.table_metrics` of fine-tuned predictions (binary: P(class 1)), plus for
    classification balanced accuracy and macro-F1 as the floor rows have them, so that
    :func:`sslab.eval.probe.headline` picks AUC (binary) or balanced accuracy (more classes)."""
    from sslab.eval.floors import classification_metrics
    from sslab.eval.table_baselines import table_metrics

    res = table_metrics(y_true, scores, task)
    if task == "regression" or "degenerate" in res:
        return res
    proba = np.stack([1 - scores, scores], 1) if task == "binary" else np.asarray(scores)
    return {**classification_metrics(y_true, proba.argmax(1), proba, np.arange(proba.shape[1])), **res}


@MODALITIES.register("table")
class TableModality(Modality):
    """UniTabE: TabUnit encoder pretrained with masked-cell + column-partition contrastive objectives."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.data = from_dict(TableDataConfig, cfg.data, path="data")
        self._pretrain_tables: Optional[List[Table]] = None
        self._tokenizer: Optional[TableTokenizer] = None

    # ---------------------------------------------------------------- transfer
    def probe_data_config(self) -> Optional[Dict[str, Any]]:
        """``data`` with ``data.probe`` merged in: ``source`` -> ``eval``, ``path``/``target`` -> ``csv.<name>``."""
        from sslab.core.config import ConfigError
        from sslab.core.modality import probe_section

        section = probe_section(self.cfg.data)
        if not section:
            return None
        merged = {k: v for k, v in self.cfg.data.items() if k != "probe"}
        source = section.pop("source", None)
        if source is not None:
            merged["eval"] = source
        shorthand = {k: section.pop(k) for k in ("path", "target") if k in section}
        if shorthand:
            spec = str(merged.get("eval", TableDataConfig.eval))
            kind, _, name = spec.partition(":")
            if kind != "csv":
                raise ConfigError(f"data.probe.{'/'.join(shorthand)}: only for a csv:<name> probe source, got {spec!r}")
            csv = {k: dict(v) for k, v in (merged.get("csv") or {}).items()}
            csv[name] = {**csv.get(name, {}), **shorthand}
            merged["csv"] = csv
        merged.update(section)
        return merged

    def check_probe_compatible(self) -> None:
        from sslab.core.config import ConfigError

        merged = self.probe_data_config()
        if merged is None:
            return
        t = from_dict(TableDataConfig, merged, path="data.probe")
        for key in TOKENIZER_KEYS:
            if getattr(t, key) != getattr(self.data, key):
                raise ConfigError(f"data.probe.{key}={getattr(t, key)!r} differs from the pretraining data.{key}="
                                  f"{getattr(self.data, key)!r}: the probe table is tokenised with the run's tokenizer")
        try:
            table = load_source(t.eval, t)
        except (TableError, FileNotFoundError, ValueError) as err:
            raise ConfigError(f"data.probe.source={t.eval!r}: cannot load the probe table ({err})") from err
        if table.target is None or table.schema.task is None:
            raise ConfigError(f"data.probe: the probe table {t.eval} ({table.source}) has no target column to probe "
                              f"(columns: {', '.join(table.schema.names)}); set data.probe.target")
        if t.eval in self.data.pretrain:
            import logging

            logging.getLogger(__name__).warning("data.probe: %s is also a pretraining table (%s)", t.eval,
                                                ", ".join(self.data.pretrain))
        self.probe_twin()

    # ---------------------------------------------------------------- data
    def pretrain_tables(self) -> List[Table]:
        if self._pretrain_tables is None:
            if not self.data.pretrain:
                raise TableError("data.pretrain lists no tables")
            tables = []
            rng = np.random.default_rng(self.data.split_seed)
            for spec in self.data.pretrain:
                t = load_source(spec, self.data)
                if self.data.include_targets:
                    t = with_target_as_feature(t)
                if self.data.max_rows_per_table and len(t) > self.data.max_rows_per_table:
                    t = t.subset(np.sort(rng.choice(len(t), self.data.max_rows_per_table, replace=False)))
                tables.append(t)
            self._pretrain_tables = tables
        return self._pretrain_tables

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.cfg.run_dir) / "tokenizer.json"

    @property
    def tokenizer(self) -> TableTokenizer:
        """The run's tokenizer: ``<run_dir>/tokenizer.json`` when it exists (probe, resume), else trained on
        ``data.pretrain`` (WordPiece training breaks frequency ties arbitrarily, so the file, not a
        retraining, is the reference once a run has started)."""
        if self._tokenizer is None:
            if self.tokenizer_path.is_file():
                self._tokenizer = TableTokenizer.from_str(self.tokenizer_path.read_text(), self.data.digits)
            else:
                self._tokenizer = TableTokenizer.train(self.pretrain_tables(), self.data.vocab_size, self.data.digits)
        return self._tokenizer

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable[[Sequence[Any]], Any]]]:
        rows = TableRows([TokenizedTable(t, self.tokenizer) for t in self.pretrain_tables()])
        d = self.data
        return rows, TableCollator(d.mask_ratio, d.n_views, d.view_ratio)

    def eval_table(self) -> Table:
        return load_source(self.data.eval, self.data)

    def labelled_split(self, table: Optional[Table] = None) -> Tuple[Table, Table]:
        table = table if table is not None else self.eval_table()
        tr, te = split_indices(table, self.data.test_fraction, self.data.split_seed)
        return table.subset(tr), table.subset(te)

    def labelled_rows(self, table: Table, classes: Optional[List[str]] = None,
                      num_stats: Optional[Dict[str, Tuple[float, float]]] = None) -> TableRows:
        """Labelled rows of ``table`` (class indices follow ``classes``; numeric standardisation uses
        ``num_stats``, e.g. the training split's, when given)."""
        if table.schema.task == "regression":
            y = table.labels()[0]
        else:
            classes = classes or table.labels()[1]
            index = {c: i for i, c in enumerate(classes)}
            y = np.array([index[str(v)] for v in table.target])
        return TableRows([TokenizedTable(table, self.tokenizer, num_stats)], labels=y)

    def probe_tasks(self) -> List[ProbeTask]:
        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        train, test = self.labelled_split()
        task = "regression" if train.schema.task == "regression" else "multiclass"
        classes = None if task == "regression" else train.labels()[1]
        train_rows = self.labelled_rows(train, classes)
        test_rows = self.labelled_rows(test, classes, train_rows.tables[0].num_stats)
        return [ProbeTask(train.name, task, train_rows, test_rows, collate_fn=TableCollator(), class_names=classes)]

    def floor_features(self, task: ProbeTask) -> Dict[str, Any]:
        """The raw table with no pretraining: logistic/ridge regression on imputed, standardised,
        one-hot columns (``logreg``) and histogram gradient boosting (``gbdt``), as in
        :mod:`sslab.eval.table_baselines`; each is its own model, fitted on the probe's training rows."""
        if not isinstance(task.train, TableRows) or not isinstance(task.test, TableRows):
            return {}
        from sslab.eval.floors import Floor, model_scorer
        from sslab.eval.table_baselines import BASELINES, raw_frames

        Xtr, Xte, num, cat = raw_frames(task.train.tables[0].table, task.test.tables[0].table)
        out: Dict[str, Any] = {}
        for name, key in (("logreg", "linear"), ("gbdt", "hgb")):
            build = BASELINES[key]
            out[name] = Floor(Xtr, Xte, model_scorer(
                lambda kind, seed, _b=build: _b(num, cat, "regression" if kind == "regression" else "multiclass", seed)))
        return out

    # ---------------------------------------------------------------- probe.finetune
    def finetune_options(self, options: Mapping[str, Any]) -> Any:
        """``probe.finetune: {steps: 150, lr: 3e-4, head_lr: 3e-3, batch_size: 64}`` (encoder / head AdamW lr)."""
        from sslab.objectives.tabular_finetune import StepBudget

        return from_dict(StepBudget, options, path="probe.finetune")

    def finetune_scorer(self, task: ProbeTask, encoder: nn.Module, options: Any) -> Scorer:
        """Fine-tune a copy of ``encoder`` with a linear head on [CLS]
        (:func:`~sslab.objectives.tabular_finetune.finetune`) on the task's rows ``train_idx`` for
        ``options.steps`` steps, then score its predictions on rows ``test_idx`` with
        :func:`finetune_metrics`."""
        from sslab.objectives.tabular_finetune import LabelledSubset, finetune, predict

        if not isinstance(task.train, TableRows) or not isinstance(task.test, TableRows):
            raise TableError(f"probe.finetune: probe task {task.name!r} has no labelled table rows")
        pool = ConcatDataset([task.train, task.test])
        labels = np.concatenate([task.train.labels, task.test.labels])
        kind = task.train.tables[0].table.schema.task or task.task
        n_out = len(task.class_names or []) or 1

        def score(train_idx: np.ndarray, ytr: np.ndarray, test_idx: np.ndarray, yte: np.ndarray, _kind: str,
                  seed: int) -> Dict[str, Any]:
            model = finetune(encoder, LabelledSubset(pool, train_idx, labels), kind, n_out,
                             options.config(len(train_idx)), seed=seed, progress=self.cfg.train.progress)
            return finetune_metrics(yte, predict(model, LabelledSubset(pool, test_idx, labels)), kind)

        return score

    # ---------------------------------------------------------------- encoder artifact (issue 14)
    def read_options(self) -> Dict[str, Any]:
        """How the probed table's CSV is read (separator, header, missing markers, dropped columns, code maps)."""
        from sslab.datasets.tables import DEFAULT_MISSING, SHARED_TABLES, load_schema_json, parse_names_codes

        kind, _, name = self.data.eval.partition(":")
        opts: Dict[str, Any] = {"separator": ",", "header": True, "missing": list(DEFAULT_MISSING), "drop": []}
        if kind == "csv":
            opts.update({k: v for k, v in self.data.csv.get(name, {}).items()
                         if k in ("separator", "header", "missing", "drop", "value_maps")})
        elif kind == "shared":
            info = SHARED_TABLES.get(name, {})
            root = resolve_root(self.data.root)
            base = root / "tables" if (root / "tables").is_dir() else root
            if "schema" in info:
                kw = load_schema_json(base / info["schema"])
                opts.update({k: v for k, v in kw.items() if k in ("separator", "header", "missing")})
                if "names_codes" in info:
                    codes = parse_names_codes(base / info["names_codes"])
                    opts["value_maps"] = {c: codes for c, t in kw["types"].items() if t == "categorical"}
            opts["drop"] = list(info.get("drop", []))
        opts["missing"] = list(opts["missing"])
        return opts

    def input_pipeline(self) -> Dict[str, Any]:
        """The probed table's schema and CSV reading options, the tokenizer (file copied into the encoder
        folder), the numeric standardisation of the probe's training split, [CLS] pooling."""
        train, _ = self.labelled_split()
        stats = TokenizedTable(train, self.tokenizer).num_stats
        s = train.schema
        return {"kind": "table", "table": self.data.eval,
                "schema": {"columns": [{"name": c.name, "type": c.type} for c in s.columns], "target": s.target,
                           "task": s.task},
                "read": self.read_options(), "tokenizer": "tokenizer.json", "digits": self.data.digits,
                "num_stats": {k: [float(m), float(sd)] for k, (m, sd) in stats.items()},
                "num_stats_from": f"the training split of {self.data.eval} ({len(train)} rows)",
                "pooling": "[CLS] token of the row encoder"}

    def pipeline_files(self) -> Dict[str, Path]:
        if not self.tokenizer_path.is_file():
            from sslab.core.io import atomic_write_text

            self.tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.tokenizer_path, self.tokenizer.to_str())
        return {"tokenizer.json": self.tokenizer_path}

    # ---------------------------------------------------------------- model
    def build_encoder(self) -> nn.Module:
        spec = dict(self.cfg.encoder)
        spec.setdefault("name", "tabunit")
        spec["tokenizer"] = self.tokenizer.to_str()
        if not self.tokenizer_path.is_file():
            from sslab.core.io import atomic_write_text

            self.tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.tokenizer_path, spec["tokenizer"])
        spec["digits"] = self.data.digits
        spec.pop("vocab_size", None)
        return build_encoder(spec)

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        theirs = getattr(encoder, "_tokenizer_json", None)
        if theirs is not None and id(encoder) not in getattr(self, "_checked", set()):
            if theirs != self.tokenizer.to_str():
                raise TableError(f"the encoder's tokenizer differs from {self.tokenizer_path} (or, without that "
                                 "file, from one trained on data.pretrain): probe through the encoder's run dir")
            self._checked = getattr(self, "_checked", set()) | {id(encoder)}
        return encoder.pool(encoder(inputs))
