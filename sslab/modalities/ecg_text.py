"""ECG + report modality plugin (``modality: ecg_text``): MELP pretraining data, zero-shot evaluation.

``data:`` section (:class:`ECGTextDataConfig`)::

    source: synthetic | ptbxl | wfdb    pairs (wfdb: reports from header comments, e.g. PTB-DB / CinC)
    path: PTB-XL or WFDB folder
    fs, crop_seconds, normalize, ...     signal handling (as the ecg modality)
    on_empty_report: error | skip        blank / punctuation-only reports: raise or drop and count
    vocab_size, tokenizer_path           report tokenizer: trained on the training reports, or loaded
    zero_shot: {prompts: {class: [..]}, templates: ["{}", ..]}   class prompts (defaults per source)
    probe: {source, path, ...}           transfer: the ECG probe data (synthetic | ptbxl) + data options

Transfer (``data.probe``): the ECG tower is probed on other labelled records, read at the pretraining
``fs``; another ``fs`` or ``crop_seconds``, a label-less source (wfdb) or a missing PTB-XL folder are refused
before pretraining (:meth:`ECGTextModality.check_probe_compatible`). Zero-shot stays on the pretraining data.

The objective section is MELP's (:class:`sslab.objectives.melp.MELP`) plus an optional
``mlm: {steps, batch_size, lr}`` further-pretraining step of the text encoder on the training reports.
The run directory keeps ``tokenizer.json`` so that zero-shot evaluation (:func:`load_melp`) rebuilds
exactly the trained text tower.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from sslab.core.config import ConfigError, from_dict
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import MODALITIES
from sslab.datasets.ecg_text import (DEFAULT_REPORT_FACTS, REPORT_FACTS, ECGTextPairs, ReportCollator,
                                     check_reports, ptbxl_pairs, synthetic_reports, wfdb_header_pairs)
from sslab.datasets.ecg_wfdb import LEADS_12, LeadNorm

SOURCES = ("synthetic", "ptbxl", "wfdb")

# zero-shot class prompts (several per class are averaged; Radford et al. 2021, Sec. 3.1.4)
SYNTHETIC_PROMPTS: Dict[str, List[str]] = {
    "brady": ["sinus bradycardia", "slow heart rate", "bradycardia"],
    "normal": ["normal sinus rhythm", "normal heart rate", "heart rate within normal limits"],
    "tachy": ["sinus tachycardia", "fast heart rate", "tachycardia"],
}
# PTB-XL superdiagnostic classes. The reports are German, Swedish and English statements, so the prompts are
# too: phrases written from the most class-specific terms of the TRAINING-fold reports (folds 1-5 of the shared
# subset; benchmarks/ecg_text_ptbxl_prompt_words.py, log-odds ranking; no test-fold text or label was read), in
# the reports' own spelling (lowercased, umlauts kept). Each prompt contains a term that occurs in the training
# reports of its class more often than elsewhere (tested). "linksschenkelblock", "av-block", "st-senkung" occur in
# none of those training reports, so their training-fold equivalents are used ("left bundle branch block",
# "a-v block i", "st-t sänkning", "t-veränderung").
PTBXL_SUPER_PROMPTS: Dict[str, List[str]] = {
    "NORM": ["sinusrhythmus normales ekg", "sinus arrhythmie sonst normales ekg", "sinusrytm normalt ekg",
             "sinus rhythm. normal ecg.", "normal ecg"],
    "MI": ["inferiorer infarkt wahrscheinlich alt", "anterolateraler infarkt möglich",
           "inferior infarkt ålder ej bestämmbar", "anteroseptal infarkt",
           "q waves consistent with old inferior myocardial infarction",
           "qs complexes in v2 consistent with old anteroseptal myocardial infarction"],
    "STTC": ["unspezifisches abnormales t", "t-veränderung", "ospecifik t-förändring",
             "st-t sänkning, såsom vid ischemi", "non-specific st-t wave changes",
             "st segments are depressed and t waves are inverted"],
    "CD": ["unvollständiger rechtsschenkelblock", "linksanteriorer hemiblock", "a-v block i",
           "högersidigt skänkelblock", "right bundle branch block", "left bundle branch block",
           "left anterior fascicular block"],
    "HYP": ["linkshypertrophie", "amplitudenkriterien für linkshypertrophie", "kammerhypertrophie lvh",
            "vänster kammarhypertrofi", "voltages are high in chest leads suggesting lvh",
            "left ventricular hypertrophy"],
}
DEFAULT_TEMPLATES = ["{}.", "ecg shows {}."]


@dataclass
class ZeroShotConfig:
    prompts: Dict[str, List[str]] = field(default_factory=dict)  # empty: the source's defaults
    templates: List[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    synthetic_label: str = "rhythm"  # synthetic class set (rate class)


@dataclass
class ECGTextDataConfig:
    """The ``data:`` section of an ECG-report experiment."""

    source: str = "synthetic"
    path: str = ""
    fs: float = 100.0
    crop_seconds: float = 10.0
    eval_stride_seconds: float = 5.0
    normalize: bool = True
    clip: float = 5.0
    cache_dir: str = "~/.cache/sslab"
    cache_dtype: str = "float16"
    workers: int = 0
    on_bad_record: str = "error"
    on_empty_report: str = "error"
    # report text
    vocab_size: int = 2000
    tokenizer_path: str = ""
    max_tokens: int = 128
    max_sentences: int = 16
    # PTB-XL
    rate: int = 100
    label_set: str = "superdiagnostic"
    pretrain_folds: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    probe_train_folds: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    probe_test_folds: List[int] = field(default_factory=lambda: [10])
    # synthetic
    synthetic: Dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.25
    probe_labels: List[str] = field(default_factory=lambda: ["rhythm", "morphology"])
    report_facts: List[str] = field(default_factory=lambda: list(DEFAULT_REPORT_FACTS))  # + "morphology" opt-in
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    probe: Dict[str, Any] = field(default_factory=dict)  # transfer: ECG probe data (source, path, options)


class _Signals:
    """Picklable ``i -> normalised [C, T]`` over an indexable store restricted to ``indices``."""

    def __init__(self, get: Callable[[int], np.ndarray], indices: Sequence[int], norm: Optional[LeadNorm]) -> None:
        self.get, self.indices, self.norm = get, list(indices), norm

    def __call__(self, i: int) -> np.ndarray:
        x = np.asarray(self.get(self.indices[i]), dtype=np.float32)
        return self.norm(x) if self.norm is not None else x


class _ArrayGet:
    def __init__(self, arr: Any) -> None:
        self.arr = arr

    def __call__(self, i: int) -> np.ndarray:
        return np.asarray(self.arr[i])


@dataclass
class PairSplit:
    """One split of pairs: signals (normalised), reports, labels (``[n]`` class ids or ``[n, C]``)."""

    get_signal: _Signals
    reports: List[str]
    labels: Optional[np.ndarray]
    classes: Optional[List[str]]
    task: str  # multiclass | multilabel


@MODALITIES.register("ecg_text")
class ECGTextModality(Modality):
    """ECG-report pairs (synthetic / PTB-XL / WFDB headers) for MELP; probes and zero-shot on the ECG side."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.data = d = from_dict(ECGTextDataConfig, cfg.data, path="data")
        if d.source not in SOURCES:
            raise ConfigError(f"data.source: expected one of {list(SOURCES)}, got {d.source!r}")
        if d.source != "synthetic" and not d.path:
            raise ConfigError(f"data.path: the {d.source} source needs a folder")
        for key, val in (("on_bad_record", d.on_bad_record), ("on_empty_report", d.on_empty_report)):
            if val not in ("error", "skip"):
                raise ConfigError(f"data.{key}: expected 'error' or 'skip', got {val!r}")
        bad_facts = sorted(set(d.report_facts) - set(REPORT_FACTS))
        if bad_facts or not d.report_facts:
            raise ConfigError(f"data.report_facts: a non-empty subset of {list(REPORT_FACTS)}, got {d.report_facts}")
        self.patch_size = int(cfg.encoder.get("patch_size", 25))
        self.crop = int(round(d.crop_seconds * d.fs))
        if self.crop % self.patch_size:
            raise ConfigError(f"data.crop_seconds: {self.crop} samples at {d.fs} Hz is not a multiple of "
                              f"encoder.patch_size {self.patch_size}")
        self._splits: Dict[str, PairSplit] = {}
        self._synthetic = None
        self._tokenizer = None

    # ------------------------------------------------------------------ sources
    def _synthetic_data(self):
        if self._synthetic is None:
            from sslab.datasets.ecg_synthetic import SyntheticECGConfig, generate

            d = self.data
            scfg = from_dict(SyntheticECGConfig, {"fs": d.fs, **d.synthetic}, path="data.synthetic")
            sig, lab = generate(scfg, d.cache_dir, d.workers, progress=self.cfg.train.progress)
            reports = synthetic_reports(lab, seed=scfg.seed, facts=d.report_facts)
            n_test = int(round(d.test_fraction * scfg.n_records))
            idx = np.arange(scfg.n_records)
            self._synthetic = (sig, lab, reports, idx[: scfg.n_records - n_test], idx[scfg.n_records - n_test:])
        return self._synthetic

    def _cache(self, records: Sequence[Path]):
        from sslab.datasets.ecg_cache import ECGRecordCache

        d = self.data
        return ECGRecordCache(records, d.cache_dir, LEADS_12, d.fs, d.cache_dtype, d.workers, d.on_bad_record,
                              progress=self.cfg.train.progress)

    def split(self, which: str) -> PairSplit:
        """``train`` (pretraining pairs), ``probe_train`` or ``test`` (zero-shot, retrieval, probe test)."""
        if which in self._splits:
            return self._splits[which]
        d = self.data
        if d.source == "synthetic":
            sig, lab, reports, tr, te = self._synthetic_data()
            norm = LeadNorm.fit((np.asarray(sig[i]) for i in tr), d.clip) if d.normalize else None
            idx = te if which == "test" else tr
            names = [f"synthetic record {i}" for i in idx]
            keep, _ = check_reports(names, [reports[i] for i in idx], d.on_empty_report)
            idx = [int(idx[k]) for k in keep]
            from sslab.datasets.ecg_synthetic import MORPHOLOGIES, RHYTHM_CLASSES

            key = d.zero_shot.synthetic_label
            if key not in ("rhythm", "morphology"):
                raise ConfigError(f"data.zero_shot.synthetic_label: 'rhythm' or 'morphology', got {key!r}")
            classes = list(RHYTHM_CLASSES if key == "rhythm" else MORPHOLOGIES)
            out = PairSplit(_Signals(_ArrayGet(sig), idx, norm), [reports[i] for i in idx],
                            np.asarray(lab[key])[idx].astype(np.int64), classes, "multiclass")
        else:
            if d.source == "ptbxl":
                folds = {"train": d.pretrain_folds, "probe_train": d.probe_train_folds,
                         "test": d.probe_test_folds}[which]
                label_set = "all" if which == "train" else d.label_set
                src = ptbxl_pairs(d.path, folds, label_set, d.rate, d.on_empty_report)
            else:
                src = wfdb_header_pairs(d.path, d.on_empty_report)
            cache = self._cache(src.records)
            keep = [i for i in range(len(src.records)) if cache.names[i] not in cache.skipped]
            if which == "train" or d.source == "wfdb":
                norm_idx = keep
            else:  # normalise with the pretraining records' constants
                norm_idx = None
            norm = None
            if d.normalize:
                norm = cache.fit_norm(keep, d.clip) if norm_idx is not None else self.split("train").get_signal.norm
            labels = src.labels[keep] if (src.labels is not None and which != "train") else None
            out = PairSplit(_Signals(cache.get, keep, norm), [src.reports[i] for i in keep], labels,
                            src.classes if which != "train" else None, "multilabel")
        self._splits[which] = out
        return out

    # ------------------------------------------------------------------ tokenizer / objective
    def tokenizer(self):
        """Report tokenizer: ``data.tokenizer_path``, else the run's ``tokenizer.json``, else trained on the
        training reports and saved there (rank 0 trains; other ranks wait for the file)."""
        if self._tokenizer is not None:
            return self._tokenizer
        from sslab.datasets.text_tokenizer import load_tokenizer, save_tokenizer
        from sslab.encoders.report_text import report_tokenizer

        d = self.data
        text_cfg = dict(self.cfg.objective.get("text", {}) or {})
        if d.tokenizer_path or text_cfg.get("pretrained_path"):
            self._tokenizer = report_tokenizer([], path=d.tokenizer_path or text_cfg["pretrained_path"])
            return self._tokenizer
        path = self.cfg.run_dir / "tokenizer.json"
        rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
        if not path.is_file():
            if rank == 0:
                tok = report_tokenizer(self.split("train").reports, d.vocab_size,
                                       cache_dir=Path(d.cache_dir).expanduser() / "tokenizers")
                save_tokenizer(tok, path)
            else:
                t0 = time.time()
                while not path.is_file():
                    if time.time() - t0 > 600:
                        raise TimeoutError(f"rank {rank}: rank 0 did not write {path} within 600 s")
                    time.sleep(0.5)
        self._tokenizer = load_tokenizer(path)
        return self._tokenizer

    def collator(self) -> ReportCollator:
        return ReportCollator(self.tokenizer(), self.data.max_tokens, self.data.max_sentences)

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable]]:
        s = self.split("train")
        return ECGTextPairs(s.get_signal, s.reports, self.crop, random_crop=True), self.collator()

    def build_objective(self, encoder: nn.Module) -> nn.Module:
        from sslab.core.registry import OBJECTIVES

        spec = dict(self.cfg.objective)
        name = spec.pop("name", "melp")
        mlm = dict(spec.pop("mlm", {}) or {})
        tok = self.tokenizer()
        col = self.collator()
        spec.setdefault("max_len", self.data.max_tokens)
        spec.setdefault("max_sentences", self.data.max_sentences)
        objective = OBJECTIVES.build(name, encoder=encoder, vocab_size=len(tok), pad_id=col.pad_id,
                                     bos_id=col.cls_id, eos_id=col.sep_id, **spec)
        steps = int(mlm.pop("steps", 0))
        if steps > 0 and not (self.cfg.run_dir / "checkpoints").is_dir():
            from sslab.encoders.report_text import mlm_pretrain

            unknown = sorted(set(mlm) - {"batch_size", "lr", "mask_prob"})
            if unknown:
                raise ConfigError(f"objective.mlm: unknown key(s) {unknown}; valid: batch_size, lr, mask_prob, steps")
            losses = mlm_pretrain(objective.text, tok, self.split("train").reports, steps=steps, seed=self.cfg.seed,
                                  progress=self.cfg.train.progress, **mlm)
            objective.mlm_losses = losses  # type: ignore[assignment]
        return objective

    # ------------------------------------------------------------------ probes / zero-shot
    def check_probe_compatible(self) -> None:
        from sslab.modalities.ecg import check_signal_space

        merged = self.probe_data_config()
        if merged is None:
            return
        t = from_dict(ECGTextDataConfig, merged, path="data.probe")
        check_signal_space(self.data, t, self.cfg.encoder)
        if t.source == "wfdb":
            raise ConfigError("data.probe.source: wfdb header reports carry no class labels to probe; use ptbxl "
                              "or synthetic")
        if t.source == "ptbxl" and not (Path(t.path) / "ptbxl_database.csv").is_file():
            raise ConfigError(f"data.probe.path: {t.path or '(unset)'} is not a PTB-XL folder (no ptbxl_database.csv)")
        self.probe_twin()

    def probe_tasks(self) -> List[ProbeTask]:
        from sslab.modalities.ecg import ECGProbeSet, collate_crops

        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        d = self.data
        stride = int(round(d.eval_stride_seconds * d.fs))
        if d.source == "synthetic":
            sig, lab, _, tr, te = self._synthetic_data()
            norm = self.split("train").get_signal.norm
            from sslab.datasets.ecg_synthetic import MORPHOLOGIES, RHYTHM_CLASSES

            names = {"rhythm": list(RHYTHM_CLASSES), "morphology": list(MORPHOLOGIES)}
            tasks = []
            for key in d.probe_labels:
                if key not in names:
                    raise ConfigError(f"data.probe_labels: {key!r} not in {sorted(names)}")
                y = np.asarray(lab[key]).astype(np.int64)
                tasks.append(ProbeTask(f"synthetic_{key}", "multiclass",
                                       ECGProbeSet(_Signals(_ArrayGet(sig), tr, norm), y[tr], self.crop, stride),
                                       ECGProbeSet(_Signals(_ArrayGet(sig), te, norm), y[te], self.crop, stride),
                                       collate_crops, names[key]))
            return tasks
        if d.source == "ptbxl":
            tr, te = self.split("probe_train"), self.split("test")
            return [ProbeTask(f"ptbxl_{d.label_set}", "multilabel",
                              ECGProbeSet(tr.get_signal, tr.labels, self.crop, stride),
                              ECGProbeSet(te.get_signal, te.labels, self.crop, stride), collate_crops, tr.classes)]
        return []

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        """Mean-pooled tokens averaged over each record's crops (as the ecg modality)."""
        from sslab.modalities.ecg import crop_averaged_embedding

        return crop_averaged_embedding(encoder, inputs)

    # ------------------------------------------------------------------ encoder artifact (issue 14)
    def input_pipeline(self) -> Dict[str, Any]:
        """The ECG tower's pipeline (the exported encoder): as the ecg modality's, with the pretraining pairs'
        per-lead constants, which this modality's probes use as well."""
        d = self.data
        norm = self.split("train").get_signal.norm
        return {"kind": "ecg", "fs": float(d.fs), "leads": list(LEADS_12),
                "storage_dtype": d.cache_dtype if d.source != "synthetic" else "float32",
                "norm": None if norm is None else {"mean": norm.mean.tolist(), "std": norm.std.tolist(),
                                                   "clip": norm.clip, "fitted_on": f"the {d.source} pretraining pairs"},
                "crop_samples": self.crop, "crop_seconds": d.crop_seconds,
                "eval_stride_samples": int(round(d.eval_stride_seconds * d.fs)),
                "eval_stride_seconds": d.eval_stride_seconds, "patch_size": self.patch_size, "ptbxl_rate": d.rate,
                "pooling": "mean of the ECG encoder's tokens per crop, then mean over the record's crops"}

    def zero_shot_prompts(self) -> Dict[str, List[str]]:
        d = self.data
        if d.zero_shot.prompts:
            return {k: list(v) for k, v in d.zero_shot.prompts.items()}
        if d.source == "synthetic":
            if d.zero_shot.synthetic_label != "rhythm":
                raise ConfigError("data.zero_shot.prompts: give prompts for the morphology classes")
            return {k: list(v) for k, v in SYNTHETIC_PROMPTS.items()}
        if d.source == "ptbxl" and d.label_set == "superdiagnostic":
            return {k: list(v) for k, v in PTBXL_SUPER_PROMPTS.items()}
        raise ConfigError(f"data.zero_shot.prompts: no default prompts for source {d.source!r} / "
                          f"label set {d.label_set!r}; give them in the config")


def load_melp(run_dir: Any, overrides: Sequence[str] = (), checkpoint: Optional[Any] = None
              ) -> Tuple[ECGTextModality, nn.Module]:
    """Rebuild a trained MELP objective (ECG + text towers) from a run directory: its ``config.yaml``,
    ``tokenizer.json`` and latest checkpoint (or ``checkpoint``)."""
    from sslab.core.checkpoint import latest_checkpoint, load_checkpoint
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality

    run_dir = Path(run_dir)
    cfg = load_experiment(run_dir / "config.yaml", overrides)
    cfg.output_dir = str(run_dir.parent)
    cfg.name = run_dir.name
    if cfg.run_dir.resolve() != run_dir.resolve():
        raise ValueError(f"{run_dir}: cannot map the run directory back to its config (got {cfg.run_dir})")
    modality = build_modality(cfg)
    if not isinstance(modality, ECGTextModality):
        raise ValueError(f"{run_dir}: modality {cfg.modality!r} is not ecg_text")
    if not (run_dir / "tokenizer.json").is_file() and not modality.data.tokenizer_path:
        raise FileNotFoundError(f"{run_dir}: no tokenizer.json (was this run trained with ecg_text?)")
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint to load the text tower from")
    spec = dict(cfg.objective)
    spec.pop("mlm", None)
    cfg.objective = spec  # no MLM step when reloading
    objective = modality.build_objective(modality.build_encoder())
    objective.load_state_dict(load_checkpoint(ckpt)["objective"])
    return modality, objective.eval()
