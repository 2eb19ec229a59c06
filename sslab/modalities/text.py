"""Text modality plugin: corpora -> WordPiece tokenizer -> token datasets; the collator is chosen by
the objective (every text objective exposes ``collator(tokenizer, **objective_kwargs)``).

``data:`` section (:class:`TextDataConfig`)::

    sources: [ptbxl, pydoc, path/to/folder, {path: x.jsonl, metadata_field: url, score_field: q}]
    shared_data: ../shared/data        where ecg/ptbxl lives (for source/probe "ptbxl")
    vocab_size: 2000                   tokenizer (trained on the pretraining corpus; saved in the run)
    max_len: 64                        tokens per document / packed block
    pack: false                        pack documents into max_len blocks (not for meco/conditional)
    curriculum: none                   none | score: pretraining documents ordered by quality score
    curriculum_order: ascending        ascending (low score first) | descending; needs train.shuffle: false
    probe: ptbxl                       ptbxl (report -> diagnostic superclass) | stdlib_docs (docstring ->
                                       top-level stdlib module) | none | a CSV path: shorthand for
                                       {source: ptbxl|stdlib_docs|none|csv, path: x.csv, ...} (transfer)
    probe_test_folds: [6, 7]           PTB-XL strat_fold values held out for the probe test split
    probe_min_per_class: 80            stdlib_docs: modules with fewer docstrings are left out (20 classes)

The probe on PTB-XL reports predicts the diagnostic superclass (NORM/MI/STTC/CD/HYP, highest SCP
likelihood) from the free-text report; the stdlib probe predicts which top-level standard-library module
a docstring documents (:mod:`sslab.datasets.text_stdlib`; a fixed stratified split, ``probe_test_fraction``
held out, split seed 0 so every run and seed is probed on the same texts); a CSV probe needs ``text`` and ``label`` columns (names
configurable) and optionally a ``split`` column (train/test), else a stratified random split.

Transfer (``data.probe`` as a mapping, issue 19): ``source`` (ptbxl | stdlib_docs | csv | none), ``path``
(csv), and probe options without their ``probe_`` prefix (``text_column``, ``label_column``, ``test_folds``,
``test_fraction``, ``min_per_class``) or data keys of the same meaning (``shared_data``, ``max_len``). Probe
texts are encoded with the run's tokenizer (trained on the pretraining corpus); refused before pretraining
(:meth:`TextModality.check_probe_compatible`): another ``lowercase``/``vocab_size`` (another tokenizer),
a ``max_len`` beyond the encoder's, a missing CSV or CSV columns, a missing PTB-XL folder.

Curriculum (issue 9, "curriculum and averaging"): with ``curriculum: score`` the pretraining dataset
holds the documents sorted by ``TextDocument.score`` (stable; documents without a score first, counted
in a warning) and the core feeds it in that order every epoch, which requires ``train.shuffle: false``
and no ``train.length_bucketing`` (both would reorder batches); either is a :class:`ConfigError`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from sslab.core.config import ConfigError, from_dict
from sslab.core.export import build_encoder
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import MODALITIES, OBJECTIVES
from sslab.datasets.text import (CorpusError, TextDocument, load_documents, order_by_score, ptbxl_fold,
                                 ptbxl_reports)
from sslab.datasets.text_packing import DocumentDataset, PackedDataset, pad_ids
from sslab.datasets.text_tokenizer import PAD_ID, cached_tokenizer, load_tokenizer, save_tokenizer

PER_DOCUMENT_OBJECTIVES = ("meco", "conditional")
CURRICULA = ("none", "score")
CURRICULUM_ORDERS = ("ascending", "descending")


@dataclass
class TextDataConfig:
    sources: List[Any] = field(default_factory=lambda: ["ptbxl"])
    shared_data: str = "../shared/data"
    vocab_size: int = 2000
    lowercase: bool = True
    max_len: int = 64
    pack: bool = False
    curriculum: str = "none"
    curriculum_order: str = "ascending"
    tokenizer_cache: str = ".cache/text_tokenizers"
    probe: Any = "ptbxl"  # a name / CSV path, or {source, path, ...} (see module docstring)
    probe_text_column: str = "text"
    probe_label_column: str = "label"
    probe_test_folds: List[int] = field(default_factory=lambda: [6, 7])
    probe_test_fraction: float = 0.25
    probe_min_per_class: int = 80


class LabeledTexts(Dataset):
    """Probe items ``({"input_ids": [...]}, class index)``."""

    def __init__(self, ids: List[List[int]], labels: List[int]) -> None:
        if len(ids) != len(labels):
            raise ValueError("texts and labels differ in length")
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Tuple[Dict[str, List[int]], int]:
        return {"input_ids": self.ids[i]}, self.labels[i]


def collate_labeled(items: Sequence[Tuple[Dict[str, List[int]], int]]) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    batch = pad_ids([it[0]["input_ids"] for it in items], PAD_ID)
    return batch, torch.tensor([it[1] for it in items], dtype=torch.long)


def _split_task(name: str, ids: List[List[int]], y: List[int], train_idx: Sequence[int], test_idx: Sequence[int],
                classes: List[str]) -> ProbeTask:
    """A multiclass probe task from encoded texts, labels and the train/test indices."""
    return ProbeTask(name, "multiclass", LabeledTexts([ids[i] for i in train_idx], [y[i] for i in train_idx]),
                     LabeledTexts([ids[i] for i in test_idx], [y[i] for i in test_idx]), collate_fn=collate_labeled,
                     class_names=classes)


def _encoder_spec_base(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The text_transformer part of a (possibly ``adapted``) encoder spec."""
    return spec["base"] if spec.get("name") == "adapted" and isinstance(spec.get("base"), dict) else spec


PROBE_BUILTINS = ("ptbxl", "stdlib_docs", "none")
PROBE_OPTIONS = ("text_column", "label_column", "test_folds", "test_fraction", "min_per_class")
"""``data.probe`` keys that set ``data.probe_<key>``."""
TOKENIZER_KEYS = ("lowercase", "vocab_size")


def probe_spec(data: TextDataConfig) -> Tuple[str, Optional[str], Dict[str, Any]]:
    """``(source, csv path or None, other data keys)`` from ``data.probe`` (string shorthand or mapping)."""
    raw = data.probe
    if isinstance(raw, str):
        return (raw, None, {}) if raw in PROBE_BUILTINS else ("csv", raw, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"data.probe: a probe name, a CSV path or a mapping {{source, path, ...}}, got {raw!r}")
    rest = dict(raw)
    source = str(rest.pop("source", "csv" if "path" in rest else "ptbxl"))
    path = rest.pop("path", None)
    if source not in (*PROBE_BUILTINS, "csv"):
        raise ConfigError(f"data.probe.source: one of {[*PROBE_BUILTINS, 'csv']}, got {source!r}")
    if source == "csv" and not path:
        raise ConfigError("data.probe.path: a csv probe needs the CSV file")
    options = {(f"probe_{k}" if k in PROBE_OPTIONS else k): v for k, v in rest.items()}
    return source, None if path is None else str(path), options


@MODALITIES.register("text")
class TextModality(Modality):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.data: TextDataConfig = from_dict(TextDataConfig, cfg.data, path="data")
        self.probe_source, self.probe_path, options = probe_spec(self.data)
        base = {k: v for k, v in cfg.data.items() if k != "probe"}
        self.probe_data: TextDataConfig = from_dict(TextDataConfig, {**base, **options}, path="data.probe")
        if self.data.curriculum not in CURRICULA:
            raise ConfigError(f"data.curriculum={self.data.curriculum!r}: use one of {', '.join(CURRICULA)}")
        if self.data.curriculum_order not in CURRICULUM_ORDERS:
            raise ConfigError(f"data.curriculum_order={self.data.curriculum_order!r}: "
                              f"use one of {', '.join(CURRICULUM_ORDERS)}")
        self._tokenizer: Any = None
        self._docs: Optional[List[TextDocument]] = None

    # ------------------------------------------------------------------ corpus + tokenizer
    def documents(self) -> List[TextDocument]:
        if self._docs is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the one blank PTB-XL report is counted, not an error
                self._docs = load_documents(self.data.sources, shared_data=self.data.shared_data)
        return self._docs

    def tokenizer(self) -> Any:
        """The run's tokenizer: ``<run>/tokenizer.json`` if present, else trained on the corpus."""
        if self._tokenizer is None:
            saved = self.cfg.run_dir / "tokenizer.json"
            if saved.is_file():
                self._tokenizer = load_tokenizer(saved)
            else:
                # metadata strings are part of the tokenizer corpus so MeCo prefixes tokenize compactly
                docs = self.documents()
                texts = [d.text for d in docs] + sorted({d.metadata for d in docs if d.metadata})
                cache = self.data.tokenizer_cache or None
                self._tokenizer = cached_tokenizer(texts, self.data.vocab_size, cache, self.data.lowercase)
        return self._tokenizer

    def curriculum_documents(self) -> List[TextDocument]:
        """The pretraining documents in training order: corpus order, or sorted by quality score
        (``data.curriculum: score``). The tokenizer always sees the corpus order."""
        docs = self.documents()
        if self.data.curriculum == "none":
            return docs
        train = self.cfg.train
        if train.shuffle:
            raise ConfigError("data.curriculum='score' orders the documents, but train.shuffle is true and the "
                              "trainer would shuffle them; set train.shuffle: false (or data.curriculum: none)")
        if train.length_bucketing:
            raise ConfigError(f"data.curriculum='score' needs train.length_bucketing: 0 (it is "
                              f"{train.length_bucketing}; bucketing shuffles the batches)")
        unscored = sum(d.score is None for d in docs)
        if unscored == len(docs):
            raise ConfigError(f"data.curriculum='score': none of the {len(docs)} documents has a score "
                              "(give JSONL sources a score_field, or use data.curriculum: none)")
        if unscored:
            warnings.warn(f"data.curriculum='score': {unscored} of {len(docs)} documents have no score; "
                          "they come first in every epoch")
        return order_by_score(docs, descending=self.data.curriculum_order == "descending")

    # ------------------------------------------------------------------ plugin API
    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable[[Sequence[Any]], Any]]]:
        tok = self.tokenizer()
        save_tokenizer(tok, self.cfg.run_dir / "tokenizer.json")
        obj = dict(self.cfg.objective)
        name = obj.pop("name", None)
        if name is None:
            raise ConfigError(f"objective section needs a 'name' (one of: {', '.join(OBJECTIVES.names())})")
        builder = getattr(OBJECTIVES.get(name), "collator", None)
        if builder is None:
            raise ConfigError(f"objective {name!r} is not a text objective (it has no collator); "
                              "text objectives: mlm, clm, electra, rts, slm, ul2, meco, conditional, self_distill")
        enc_max = int(_encoder_spec_base(self.cfg.encoder).get("max_len", 512))
        obj.setdefault("max_len", min(enc_max, max(self.data.max_len * 2, self.data.max_len + 16)))
        collate = builder(tok, **obj)
        docs = self.curriculum_documents()
        if name in PER_DOCUMENT_OBJECTIVES or not self.data.pack:
            dataset: Dataset = DocumentDataset(docs, tok, self.data.max_len)
        else:
            dataset = PackedDataset(docs, tok, self.data.max_len)
        return dataset, collate

    def build_encoder(self) -> nn.Module:
        spec = dict(self.cfg.encoder)
        if spec.get("name") == "adapted":
            spec["base"] = dict(spec.get("base", {}))
        base = _encoder_spec_base(spec)
        n_vocab = len(self.tokenizer())
        if "vocab_size" not in base:
            base["vocab_size"] = n_vocab
        elif int(base["vocab_size"]) < n_vocab:
            raise ConfigError(f"encoder.vocab_size={base['vocab_size']} is smaller than the tokenizer's {n_vocab} tokens")
        return build_encoder(spec)

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        return encoder.pool(encoder(inputs), inputs["attention_mask"])

    # ------------------------------------------------------------------ encoder artifact (issue 14)
    def input_pipeline(self) -> Dict[str, Any]:
        """The run's tokenizer (copied into the encoder folder), maximum length + truncation, pooling."""
        return {"kind": "text", "tokenizer": "tokenizer.json", "vocab_size": len(self.tokenizer()),
                "lowercase": self.data.lowercase, "max_len": self.data.max_len,
                "text_column": self.data.probe_text_column,
                "pooling": f"encoder.pool(tokens, attention_mask), pool mode "
                           f"{_encoder_spec_base(self.cfg.encoder).get('pool', 'mean')!r} over real (unpadded) tokens"}

    def pipeline_files(self) -> Dict[str, Path]:
        path = self.cfg.run_dir / "tokenizer.json"
        if not path.is_file():
            save_tokenizer(self.tokenizer(), path)
        return {"tokenizer.json": path}
    def check_probe_compatible(self) -> None:
        d, p = self.data, self.probe_data
        for key in TOKENIZER_KEYS:
            if getattr(p, key) != getattr(d, key):
                raise ConfigError(f"data.probe.{key}={getattr(p, key)!r} differs from the pretraining data.{key}="
                                  f"{getattr(d, key)!r}: probe texts are encoded with the run's tokenizer")
        enc_max = int(_encoder_spec_base(self.cfg.encoder).get("max_len", 512))
        if p.max_len > enc_max:
            raise ConfigError(f"data.probe.max_len={p.max_len} exceeds the encoder's max_len={enc_max}")
        if self.probe_source == "csv":
            import pandas as pd

            path = Path(str(self.probe_path))
            if not path.is_file():
                raise ConfigError(f"data.probe.path: probe CSV {path} not found")
            cols = list(pd.read_csv(path, nrows=0).columns)
            missing = [c for c in (p.probe_text_column, p.probe_label_column) if c not in cols]
            if missing:
                raise ConfigError(f"data.probe: {path} lacks column(s) {missing} (columns: {cols}); set "
                                  "data.probe.text_column / label_column")
        if self.probe_source == "ptbxl" and not (Path(p.shared_data) / "ecg" / "ptbxl").is_dir():
            raise ConfigError(f"data.probe: no PTB-XL folder under {p.shared_data}/ecg/ptbxl for the ptbxl probe "
                              "(set data.shared_data, or data.probe=none to pretrain without a probe)")

    def probe_tasks(self) -> List[ProbeTask]:
        if self.probe_source == "none":
            return []
        tok = self.tokenizer()
        max_len = self.probe_data.max_len

        def enc(text: str) -> List[int]:
            ids = tok(text)["input_ids"]
            return ids[: max_len - 1] + [ids[-1]] if len(ids) > max_len else ids

        builtin = {"ptbxl": self._ptbxl_task, "stdlib_docs": self._stdlib_task}
        if self.probe_source in builtin:
            return [builtin[self.probe_source](enc)]
        return [self._csv_task(Path(str(self.probe_path)), enc)]

    def _ptbxl_task(self, enc: Callable[[str], List[int]]) -> ProbeTask:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            docs = [d for d in ptbxl_reports(Path(self.probe_data.shared_data) / "ecg" / "ptbxl") if d.label is not None]
        test_folds = set(self.probe_data.probe_test_folds)
        classes = sorted({d.label for d in docs})  # type: ignore[type-var]
        idx = {c: i for i, c in enumerate(classes)}
        split = {True: ([], []), False: ([], [])}  # type: Dict[bool, Tuple[List[List[int]], List[int]]]
        for d in docs:
            ids, ys = split[ptbxl_fold(d) in test_folds]
            ids.append(enc(d.text))
            ys.append(idx[d.label])  # type: ignore[index]
        if not split[True][0] or not split[False][0]:
            raise ConfigError(f"data.probe_test_folds={sorted(test_folds)} leaves an empty train or test split")
        return ProbeTask("ptbxl_report_superclass", "multiclass", LabeledTexts(*split[False]),
                         LabeledTexts(*split[True]), collate_fn=collate_labeled, class_names=classes)

    def _stdlib_task(self, enc: Callable[[str], List[int]]) -> ProbeTask:
        from sklearn.model_selection import train_test_split

        from sslab.datasets.text_stdlib import stdlib_probe_documents

        docs, _ = stdlib_probe_documents(min_per_class=self.probe_data.probe_min_per_class)
        classes = sorted({d.label for d in docs})  # type: ignore[type-var]
        y = [classes.index(d.label) for d in docs]  # type: ignore[arg-type]
        tr, te = train_test_split(list(range(len(docs))), test_size=self.probe_data.probe_test_fraction,
                                  random_state=0, stratify=y)
        return _split_task("stdlib_docstring_module", [enc(d.text) for d in docs], y, tr, te, classes)

    def _csv_task(self, path: Path, enc: Callable[[str], List[int]]) -> ProbeTask:
        import pandas as pd
        from sklearn.model_selection import train_test_split

        if not path.is_file():
            raise CorpusError(f"{path}: probe CSV not found (data.probe)")
        df = pd.read_csv(path)
        tc, lc = self.probe_data.probe_text_column, self.probe_data.probe_label_column
        missing = [c for c in (tc, lc) if c not in df.columns]
        if missing:
            raise CorpusError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
        bad = df[df[tc].isna() | df[lc].isna()]
        if len(bad):
            raise CorpusError(f"{path}: {len(bad)} row(s) with empty text or label (first row index {bad.index[0]})")
        classes = sorted(df[lc].astype(str).unique())
        idx = {c: i for i, c in enumerate(classes)}
        y = [idx[str(v)] for v in df[lc]]
        ids = [enc(str(t)) for t in df[tc]]
        if "split" in df.columns:
            is_test = (df["split"].astype(str) == "test").tolist()
            tr = [i for i, t in enumerate(is_test) if not t]
            te = [i for i, t in enumerate(is_test) if t]
        else:
            strat = y if min(pd.Series(y).value_counts()) >= 2 else None
            tr, te = train_test_split(list(range(len(y))), test_size=self.probe_data.probe_test_fraction,
                                      random_state=self.cfg.seed, stratify=strat)
        return _split_task(f"csv:{path.stem}", ids, y, tr, te, classes)
