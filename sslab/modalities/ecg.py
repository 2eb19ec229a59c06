"""ECG modality plugin: WFDB / PTB-XL / synthetic (ECGSYN) data, JEPA block masks, crop-averaged probes.

``data:`` section (validated by :class:`ECGDataConfig`)::

    source: synthetic | ptbxl | wfdb      what to pretrain on
    probe: {source, path, ...}            transfer: probe data (synthetic | ptbxl) + any data option below
    probe_source, probe_path              legacy aliases of probe.source, probe.path
    beat_probe: {path, records, ...}      extra AAMI beat probe on MIT-BIH style records (see ecg_beat_probe)
    fs, leads, crop_seconds, ...          signal handling shared by all sources

Transfer (``data.probe``): the probe records are read at the pretraining ``fs`` (resampled from the
source's rate, e.g. PTB-XL ``rate: 500``) with leads placed by name, and standardised with the probe
training records' own per-lead constants. A ``data.probe`` ``fs``, ``leads`` or ``crop_seconds`` other
than the pretraining one (the encoder's patches and channels are fixed), a probe source without labels
(``wfdb``) or a missing PTB-XL folder are refused before pretraining
(:meth:`ECGModality.check_probe_compatible`).

Probe features are the encoder's mean-pooled tokens averaged over ``crop_seconds`` crops taken every
``eval_stride_seconds`` (2.5 s every 1.25 s by default, as in ECG-JEPA's evaluation).
"""
from __future__ import annotations

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
from sslab.datasets.ecg_wfdb import LEADS_12, LeadNorm, strided_crops

SOURCES = ("synthetic", "ptbxl", "wfdb")


@dataclass
class ECGDataConfig:
    """The ``data:`` section of an ECG experiment."""

    source: str = "synthetic"
    probe: Dict[str, Any] = field(default_factory=dict)  # transfer: probe data (source, path, options)
    probe_source: Optional[str] = None  # legacy alias of probe.source
    path: str = ""  # ptbxl / wfdb folder
    probe_path: str = ""  # legacy alias of probe.path
    fs: float = 100.0
    leads: List[str] = field(default_factory=lambda: list(LEADS_12))
    crop_seconds: float = 2.5
    eval_stride_seconds: float = 1.25
    normalize: bool = True  # per-lead standardisation with constants of the training records
    clip: float = 5.0
    cache_dir: str = "~/.cache/sslab"
    cache_dtype: str = "float16"
    workers: int = 0  # cache/synthetic generation processes (0: all cores, at most 8)
    on_bad_record: str = "error"  # error | skip (counted and logged)
    short_records: str = "error"  # records shorter than crop_seconds: error (names it) | pad (zero-pad) | skip; counted
    # JEPA masks
    context_ratio: Tuple[float, float] = (0.15, 0.25)
    min_block_seconds: float = 0.5
    max_blocks: int = 4
    # PTB-XL
    label_set: str = "superdiagnostic"
    rate: int = 100
    min_likelihood: float = 0.0
    missing_records: str = "error"
    pretrain_folds: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    probe_train_folds: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    probe_test_folds: List[int] = field(default_factory=lambda: [10])
    # synthetic
    synthetic: Dict[str, Any] = field(default_factory=dict)  # SyntheticECGConfig fields
    test_fraction: float = 0.25
    probe_labels: List[str] = field(default_factory=lambda: ["morphology", "rhythm", "heart_rate"])
    # beat-level AAMI probe on MIT-BIH style records (BeatProbeConfig fields; empty: off)
    beat_probe: Dict[str, Any] = field(default_factory=dict)


# synthetic label -> (probe task kind, class names)
def _synthetic_tasks() -> Dict[str, Tuple[str, Optional[List[str]]]]:
    from sslab.datasets.ecg_synthetic import MORPHOLOGIES, RHYTHM_CLASSES

    return {"morphology": ("multiclass", list(MORPHOLOGIES)), "rhythm": ("multiclass", list(RHYTHM_CLASSES)),
            "heart_rate": ("regression", None), "hrv": ("regression", None), "noise": ("regression", None)}


class ECGProbeSet(Dataset):
    """``(crops [n, C, L], label)`` items: a record cut into evaluation crops, for crop-averaged features."""

    def __init__(self, get_signal: Callable[[int], np.ndarray], labels: np.ndarray, crop: int, stride: int) -> None:
        self.get_signal, self.labels, self.crop, self.stride = get_signal, labels, crop, stride

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        crops = strided_crops(self.get_signal(i), self.crop, self.stride)
        return torch.from_numpy(np.ascontiguousarray(crops)), torch.as_tensor(self.labels[i])


def collate_crops(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Concatenate every record's crops; ``counts`` says how many belong to each record."""
    crops = torch.cat([b[0] for b in batch])
    counts = torch.tensor([b[0].shape[0] for b in batch])
    return {"crops": crops, "counts": counts}, torch.stack([b[1] for b in batch])


class _SignalView:
    """Picklable ``i -> normalised signal`` over an indexable store (for DataLoader workers)."""

    def __init__(self, get: Callable[[int], np.ndarray], indices: Sequence[int], norm: Optional[LeadNorm]) -> None:
        self.get, self.indices, self.norm = get, list(indices), norm

    def __call__(self, i: int) -> np.ndarray:
        x = np.asarray(self.get(self.indices[i]), dtype=np.float32)
        return self.norm(x) if self.norm is not None else x


@MODALITIES.register("ecg")
class ECGModality(Modality):
    """12-lead (or any lead set) ECG: pretraining crops + JEPA masks, PTB-XL / synthetic probes."""

    probe_aliases = {"probe_source": "source", "probe_path": "path"}

    def check_probe_compatible(self) -> None:
        merged = self.probe_data_config()
        if merged is None:
            return
        d = self.data
        t = from_dict(ECGDataConfig, merged, path="data.probe")
        check_signal_space(d, t, self.cfg.encoder)
        if t.source == "wfdb":
            raise ConfigError("data.probe.source: wfdb records carry no labels to probe; use ptbxl or synthetic")
        if t.source == "ptbxl" and not (Path(t.path) / "ptbxl_database.csv").is_file():
            raise ConfigError(f"data.probe.path: {t.path or '(unset)'} is not a PTB-XL folder (no ptbxl_database.csv)")
        self.probe_twin()

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.data = from_dict(ECGDataConfig, cfg.data, path="data")
        d = self.data
        for key, val in (("source", d.source), ("probe_source", d.probe_source or d.source),
                         ("probe.source", d.probe.get("source", d.source))):
            if val not in SOURCES:
                raise ConfigError(f"data.{key}: expected one of {list(SOURCES)}, got {val!r}")
        if d.on_bad_record not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_record: expected 'error' or 'skip', got {d.on_bad_record!r}")
        if d.short_records not in ("error", "pad", "skip"):
            raise ConfigError(f"data.short_records: expected 'error', 'pad' or 'skip', got {d.short_records!r}")
        if d.source in ("ptbxl", "wfdb") and not d.path:
            raise ConfigError(f"data.path: the {d.source} source needs a folder")
        self.patch_size = int(cfg.encoder.get("patch_size", 25))
        self.crop = int(round(d.crop_seconds * d.fs))
        if self.crop % self.patch_size:
            raise ConfigError(f"data.crop_seconds: {self.crop} samples at {d.fs} Hz is not a multiple of "
                              f"encoder.patch_size {self.patch_size}")
        n_leads = len(d.leads)
        if int(cfg.encoder.get("in_chans", 12)) != n_leads:
            raise ConfigError(f"encoder.in_chans ({cfg.encoder.get('in_chans', 12)}) must equal the number of "
                              f"data.leads ({n_leads})")
        self._synthetic = None
        self.beat_cfg = None
        self.beat_data = None  # BeatProbeData of the last beat_probe_task() (counts, exclusions)
        if d.beat_probe:
            from sslab.datasets.ecg_beat_probe import BeatProbeConfig

            self.beat_cfg = from_dict(BeatProbeConfig, d.beat_probe, path="data.beat_probe")
            n = int(round(self.beat_cfg.before * d.fs)) + int(round(self.beat_cfg.after * d.fs))
            if n % self.patch_size:
                raise ConfigError(f"data.beat_probe: before + after = {n} samples at {d.fs} Hz is not a multiple "
                                  f"of encoder.patch_size {self.patch_size}")

    # ------------------------------------------------------------------ sources
    def synthetic(self):
        """(signals, labels, train indices, test indices) of the synthetic set (generated once, cached)."""
        if self._synthetic is None:
            from sslab.datasets.ecg_synthetic import SyntheticECGConfig, generate

            d = self.data
            scfg = from_dict(SyntheticECGConfig, {"fs": d.fs, **d.synthetic}, path="data.synthetic")
            if d.leads != list(LEADS_12):
                raise ConfigError("data.leads: synthetic ECGs have the 12 standard leads; use all 12")
            sig, lab = generate(scfg, d.cache_dir, d.workers, progress=self.cfg.train.progress)
            n_test = int(round(d.test_fraction * scfg.n_records))
            idx = np.arange(scfg.n_records)
            self._synthetic = (sig, lab, idx[: scfg.n_records - n_test], idx[scfg.n_records - n_test:])
        return self._synthetic

    def _cache(self, records: Sequence[Path]):
        from sslab.datasets.ecg_cache import ECGRecordCache

        d = self.data
        return ECGRecordCache(records, d.cache_dir, d.leads, d.fs, d.cache_dtype, d.workers, d.on_bad_record,
                              progress=self.cfg.train.progress)

    def ptbxl(self, path: Optional[str] = None):
        from sslab.datasets.ecg_ptbxl import PTBXL

        d = self.data
        root = path or d.path
        if not root:
            raise ConfigError("data.probe.path: probing on ptbxl needs the PTB-XL folder")
        return PTBXL(root, d.label_set, d.rate, d.min_likelihood, d.missing_records)

    def _norm(self, signals) -> Optional[LeadNorm]:
        return LeadNorm.fit(signals, self.data.clip) if self.data.normalize else None

    # ------------------------------------------------------------------ plugin API
    def collator(self):
        from sslab.objectives.masking import BlockMasker1D, JEPACollator1D

        d = self.data
        min_block = max(1, int(round(d.min_block_seconds * d.fs / self.patch_size)))
        return JEPACollator1D(BlockMasker1D(tuple(d.context_ratio), min_block, d.max_blocks), self.patch_size)

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable]]:
        d = self.data
        if d.source == "synthetic":
            from sslab.datasets.ecg_synthetic import SyntheticECG

            sig, lab, tr, _ = self.synthetic()
            norm = self._norm(np.asarray(sig[i]) for i in tr)
            self.pretrain_norm = (norm, f"{len(tr)} synthetic training records")  # for input_pipeline()
            return SyntheticECG(sig, lab, tr, crop=self.crop, norm=norm), self.collator()
        from sslab.datasets.ecg_cache import CachedCrops

        if d.source == "ptbxl":
            records = self.ptbxl(d.path).split(d.pretrain_folds).records
        else:
            from sslab.datasets.ecg_wfdb import find_records

            records = find_records(d.path)
        cache = self._cache(records)
        idx = cache.valid_indices
        norm = cache.fit_norm(idx, d.clip) if d.normalize else None
        self.pretrain_norm = (norm, f"{len(idx)} {d.source} pretraining records")  # for input_pipeline()
        return CachedCrops(cache, idx, self.crop, norm, d.short_records), self.collator()

    def beat_probe_task(self) -> ProbeTask:
        """AAMI N/S/V/F/Q beats of ``data.beat_probe`` records, resampled to ``data.fs``, leads placed by name."""
        from sslab.datasets.ecg_beat_probe import BeatProbeSet, fit_beat_norm, load_beat_probe
        from sslab.datasets.ecg_mitbih import AAMI_CLASSES

        d = self.data
        if self.beat_cfg is None:
            raise ConfigError("data.beat_probe: not configured (needs at least {path: <folder with .atr records>})")
        data = load_beat_probe(self.beat_cfg, d.fs, d.leads)
        norm = fit_beat_norm(data, d.clip) if d.normalize else None
        self.beat_data = data
        return ProbeTask(f"beats_aami_{data.split}_split", "multiclass", BeatProbeSet(data, data.train, norm),
                         BeatProbeSet(data, data.test, norm), None, list(AAMI_CLASSES))

    def probe_tasks(self) -> List[ProbeTask]:
        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        tasks = self._source_probe_tasks()
        if self.beat_cfg is not None:
            tasks.append(self.beat_probe_task())
        return tasks

    def _source_probe_tasks(self) -> List[ProbeTask]:
        d = self.data
        src = d.source
        stride = int(round(d.eval_stride_seconds * d.fs))
        if src == "synthetic":
            sig, lab, tr, te = self.synthetic()
            norm = self._norm(np.asarray(sig[i]) for i in tr)
            kinds = _synthetic_tasks()
            tasks = []
            for name in d.probe_labels:
                if name not in kinds:
                    raise ConfigError(f"data.probe_labels: unknown synthetic label {name!r}; choose from {sorted(kinds)}")
                kind, classes = kinds[name]
                y = lab[name].astype(np.int64 if kind == "multiclass" else np.float32)
                get = lambda i, _s=sig: _s[i]  # noqa: E731
                tasks.append(ProbeTask(f"synthetic_{name}", kind,
                                       ECGProbeSet(_SignalView(get, tr, norm), y[tr], self.crop, stride),
                                       ECGProbeSet(_SignalView(get, te, norm), y[te], self.crop, stride),
                                       collate_crops, classes))
            return tasks
        if src == "ptbxl":
            px = self.ptbxl()
            train, test = px.split(d.probe_train_folds), px.split(d.probe_test_folds)
            cache = self._cache(train.records + test.records)
            n_tr = len(train.records)
            bad = cache.skipped
            keep_tr = [i for i in range(n_tr) if cache.names[i] not in bad]
            keep_te = [i for i in range(n_tr, len(cache)) if cache.names[i] not in bad]
            norm = cache.fit_norm(keep_tr, d.clip) if d.normalize else None
            y_all = np.concatenate([train.labels, test.labels])
            return [ProbeTask(f"ptbxl_{d.label_set}", "multilabel",
                              ECGProbeSet(_SignalView(cache.get, keep_tr, norm), y_all[keep_tr], self.crop, stride),
                              ECGProbeSet(_SignalView(cache.get, keep_te, norm), y_all[keep_te], self.crop, stride),
                              collate_crops, list(px.classes))]
        return []

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        return crop_averaged_embedding(encoder, inputs)


    # ------------------------------------------------------------------ encoder artifact (issue 14)
    def input_pipeline(self) -> Dict[str, Any]:
        """Rate, lead order, storage dtype, the pretraining records' per-lead mean/std and clip, crop and
        evaluation stride, pooling. (The probe refits mean/std on its own training split; with the
        pretraining records as probe training records the constants are the same.)"""
        d = self.data
        if not hasattr(self, "pretrain_norm"):
            self.pretrain_data()
        norm, fitted_on = self.pretrain_norm
        return {"kind": "ecg", "fs": float(d.fs), "leads": list(d.leads),
                # real records reach the probe through the cache (float16 by default): embed rounds the same way
                "storage_dtype": d.cache_dtype if (d.probe_source or d.source) != "synthetic" else "float32",
                "norm": None if norm is None else {"mean": norm.mean.tolist(), "std": norm.std.tolist(),
                                                   "clip": norm.clip, "fitted_on": fitted_on},
                "crop_samples": self.crop, "crop_seconds": d.crop_seconds,
                "eval_stride_samples": int(round(d.eval_stride_seconds * d.fs)),
                "eval_stride_seconds": d.eval_stride_seconds, "patch_size": self.patch_size,
                "ptbxl_rate": d.rate,
                "pooling": "mean of the encoder's tokens per crop, then mean over the record's crops"}
def check_signal_space(pre: Any, probe: Any, encoder: Dict[str, Any]) -> None:
    """Refuse probe ECGs whose sampling rate, lead set or crop length differs from the pretraining data's:
    the encoder's patches (samples at ``fs``), input channels and crop length are fixed. ``pre``/``probe``
    are ``data`` sections (ECG or ECG-text) with ``fs``, ``crop_seconds`` and optionally ``leads``."""
    enc = f"{encoder.get('name', 'encoder')} (in_chans={encoder.get('in_chans', 12)}, " \
          f"patch_size={encoder.get('patch_size', 25)})"
    for key, unit in (("fs", "Hz"), ("crop_seconds", "s")):
        a, b = getattr(pre, key), getattr(probe, key)
        if a != b:
            raise ConfigError(f"data.probe.{key}={b} {unit} differs from the pretraining data.{key}={a} {unit}: the "
                              f"{enc} was trained on {a} {unit}; leave data.probe.{key} unset and the probe "
                              "records are resampled to it")
    a, b = list(getattr(pre, "leads", [])), list(getattr(probe, "leads", []))
    if a != b:
        raise ConfigError(f"data.probe.leads={b} differ from the pretraining data.leads={a}: the {enc} takes "
                          "those leads in that order")


def crop_averaged_embedding(encoder: nn.Module, inputs: Any) -> torch.Tensor:
    """Mean-pooled tokens, averaged over each record's crops (``{"crops", "counts"}``) -> ``[B, D]``."""
    if isinstance(inputs, dict):
        z = encoder.pool(encoder(inputs["crops"]))
        counts = inputs["counts"].to(z.device)
        seg = torch.repeat_interleave(torch.arange(len(counts), device=z.device), counts)
        out = torch.zeros(len(counts), z.shape[1], device=z.device, dtype=z.dtype).index_add_(0, seg, z)
        return out / counts[:, None].to(z.dtype)
    return encoder.pool(encoder(inputs))
