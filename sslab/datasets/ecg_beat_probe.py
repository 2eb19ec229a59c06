"""Beat-level probe on MIT-BIH style records: AAMI N / S / V / F / Q beats in the encoder's lead layout.

Records (``.hea`` + signal + ``.atr``) are read at the encoder's rate (polyphase resampling of the whole
record, :func:`sslab.datasets.ecg_mitbih.beat_windows`), a window of ``before`` + ``after`` seconds is cut
around every annotated beat, and the record's leads are placed into the encoder's lead layout
(``data.leads``, the 12 standard leads by default) **by name**: a record lead whose name is one of the
layout's leads (case-insensitive) goes there, ``lead_map`` renames others (default ``MLII -> II``), and
every layout lead the record does not provide is **zero-filled** (zero = the lead's mean after
normalisation).  Records whose leads carry no usable name (SVDB: both ``ECG``) need ``channel_leads``, a
positional list (``[II, V1]``); a ``null`` entry or ``lead_map`` value drops that record lead explicitly.
A record lead that maps nowhere raises an error.

Split (stated in every task name): ``test_records`` given -> by record; otherwise by time within each
record: beats whose R peak lies in the first ``train_fraction`` of the record train, the rest test.
Classes present in only one split: ``one_split_classes: error`` (default) raises naming the class and its
counts; ``exclude`` leaves those beats out, counted in :attr:`BeatProbeData.excluded` and logged.

AAMI grouping: ANSI/AAMI EC57, as in de Chazal et al. 2004 (see :mod:`sslab.datasets.ecg_mitbih`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.datasets.ecg_mitbih import AAMI_CLASSES, beat_windows
from sslab.datasets.ecg_wfdb import ECGRecordError, LeadNorm, find_records

log = logging.getLogger(__name__)


@dataclass
class BeatProbeConfig:
    """``data.beat_probe`` section of an ECG experiment."""

    path: str = ""
    records: List[str] = field(default_factory=list)  # record names under path; empty: every record with .atr
    test_records: List[str] = field(default_factory=list)  # non-empty: split by record, else by time
    train_fraction: float = 0.7  # time split: first 70 % of each record trains
    before: float = 0.25  # seconds before the R peak
    after: float = 0.45  # seconds after
    lead_map: Dict[str, Optional[str]] = field(default_factory=lambda: {"MLII": "II"})
    channel_leads: List[Optional[str]] = field(default_factory=list)  # positional names, overrides the header
    one_split_classes: str = "error"  # error | exclude (counted)
    annotation: str = "atr"


@dataclass
class BeatProbeData:
    """Windows ``x`` ``[n, len(leads), L]`` in the encoder's layout, AAMI ``y``, split masks, bookkeeping."""

    x: np.ndarray
    y: np.ndarray
    train: np.ndarray  # bool
    test: np.ndarray  # bool
    split: str  # "time" | "record"
    lead_sources: Dict[str, str]  # layout lead -> "<record>:<record lead>" (first record), absent = zero-filled
    excluded: Dict[str, int] = field(default_factory=dict)  # AAMI class -> beats left out (one_split_classes)
    skipped: Dict[str, int] = field(default_factory=dict)  # non-beat annotations / edge beats (beat_windows)

    def counts(self, which: str) -> Dict[str, int]:
        """Per-class beat counts of the ``train`` or ``test`` split."""
        c = np.bincount(self.y[getattr(self, which)], minlength=len(AAMI_CLASSES))
        return {k: int(v) for k, v in zip(AAMI_CLASSES, c)}


def layout_indices(record_leads: Sequence[str], layout: Sequence[str], lead_map: Dict[str, Optional[str]],
                   record: str) -> List[Optional[int]]:
    """For each record lead, its index in ``layout`` (``None``: dropped on purpose via a ``null`` mapping)."""
    lower = [l.lower() for l in layout]
    lmap = {k.lower(): v for k, v in lead_map.items()}
    out: List[Optional[int]] = []
    for lead in record_leads:
        key = lead.lower()
        target = lmap[key] if key in lmap else lead
        if target is None:
            out.append(None)
            continue
        if target.lower() not in lower:
            raise ECGRecordError(f"{record}: lead {lead!r} maps to {target!r}, which is not in the encoder's "
                                 f"lead layout ({', '.join(layout)}); set data.beat_probe.lead_map or "
                                 f"channel_leads (null drops a lead)")
        out.append(lower.index(target.lower()))
    used = [i for i in out if i is not None]
    if len(set(used)) != len(used):
        raise ECGRecordError(f"{record}: two record leads {list(record_leads)} map to the same layout lead")
    if not used:
        raise ECGRecordError(f"{record}: no record lead maps into the encoder's layout")
    return out


def load_beat_probe(cfg: BeatProbeConfig, fs: float, layout: Sequence[str]) -> BeatProbeData:
    """Beat windows of every configured record at ``fs``, in ``layout``, with the train/test split."""
    if not cfg.path:
        raise ECGRecordError("data.beat_probe.path: a folder of MIT-BIH style records (.hea + .atr) is needed")
    if cfg.one_split_classes not in ("error", "exclude"):
        raise ValueError(f"data.beat_probe.one_split_classes: expected 'error' or 'exclude', "
                         f"got {cfg.one_split_classes!r}")
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ValueError(f"data.beat_probe.train_fraction must be in (0, 1), got {cfg.train_fraction}")
    root = Path(cfg.path).expanduser()
    if cfg.records:
        bases = [root / r for r in cfg.records]
    else:
        bases = [b for b in find_records(root) if b.with_suffix("." + cfg.annotation).is_file()]
        if not bases:
            raise ECGRecordError(f"{root}: no record has a .{cfg.annotation} annotation file")
    names = [b.name for b in bases]
    missing = [r for r in cfg.test_records if r not in names]
    if missing:
        raise ECGRecordError(f"data.beat_probe.test_records: {missing} not among the records {names}")
    by_record = bool(cfg.test_records)
    if by_record and len(cfg.test_records) == len(bases):
        raise ValueError("data.beat_probe.test_records: every record is a test record; none left to train on")

    xs, ys, trs = [], [], []
    sources: Dict[str, str] = {}
    skipped: Dict[str, int] = {}
    for base in bases:
        b = beat_windows(base, cfg.before, cfg.after, fs=fs, extension=cfg.annotation)
        rec_leads = list(b.leads)
        lmap = dict(cfg.lead_map)
        if cfg.channel_leads:
            if len(cfg.channel_leads) != len(rec_leads):
                raise ECGRecordError(f"{base}: channel_leads lists {len(cfg.channel_leads)} names, the record has "
                                     f"{len(rec_leads)} leads ({', '.join(rec_leads)})")
            rec_leads = [f"#{i}" for i in range(len(rec_leads))]
            lmap = {f"#{i}": t for i, t in enumerate(cfg.channel_leads)}
        idx = layout_indices(rec_leads, layout, lmap, str(base))
        x = np.zeros((len(b.y), len(layout), b.x.shape[2]), np.float32)
        for src, dst in enumerate(idx):
            if dst is not None:
                x[:, dst] = b.x[:, src]
                sources.setdefault(layout[dst], f"{base.name}:{b.leads[src]}")
        xs.append(x)
        ys.append(b.y)
        if by_record:
            trs.append(np.full(len(b.y), base.name not in cfg.test_records))
        else:
            n_samples = _record_samples(base, fs)
            trs.append(b.samples < cfg.train_fraction * n_samples)
        for k, v in b.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
    x, y, train = np.concatenate(xs), np.concatenate(ys), np.concatenate(trs)
    keep = np.ones(len(y), bool)
    excluded: Dict[str, int] = {}
    n_tr = np.bincount(y[train], minlength=len(AAMI_CLASSES))
    n_te = np.bincount(y[~train], minlength=len(AAMI_CLASSES))
    for c, name in enumerate(AAMI_CLASSES):
        if (n_tr[c] > 0) != (n_te[c] > 0):
            msg = (f"AAMI class {name} has {n_tr[c]} train and {n_te[c]} test beats "
                   f"({'record' if by_record else 'time'} split of {names})")
            if cfg.one_split_classes == "error":
                raise ValueError(f"data.beat_probe: {msg}; set one_split_classes: exclude to leave these beats "
                                 "out (counted), or choose another split")
            excluded[name] = int(n_tr[c] + n_te[c])
            keep &= y != c
            log.warning("beat probe: excluded %s", msg)
    if not (keep & train).any() or not (keep & ~train).any():
        raise ValueError(f"data.beat_probe: empty train or test split for records {names}")
    if len(np.unique(y[keep & train])) < 2:
        raise ValueError(f"data.beat_probe: only one AAMI class in the train split of {names}")
    return BeatProbeData(x[keep], y[keep], train[keep], ~train[keep], "record" if by_record else "time",
                         sources, excluded, skipped)


def _record_samples(base: Path, fs: float) -> float:
    from sslab.datasets.ecg_wfdb import read_header

    h = read_header(base)
    return h.sig_len * fs / float(h.fs)


def fit_beat_norm(data: BeatProbeData, clip: Optional[float]) -> LeadNorm:
    """Per-lead constants from the training beats; zero-filled leads keep mean 0 / std 1 (they stay 0)."""
    tr = data.x[data.train]
    mean = tr.mean(axis=(0, 2)).astype(np.float32)
    std = tr.std(axis=(0, 2)).astype(np.float32)
    absent = std == 0
    mean[absent], std[absent] = 0.0, 1.0
    return LeadNorm(mean, std, clip)


class BeatProbeSet(Dataset):
    """``(window [leads, L] float32, AAMI class)`` items of one split."""

    def __init__(self, data: BeatProbeData, mask: np.ndarray, norm: Optional[LeadNorm]) -> None:
        self.x = data.x[mask]
        self.y = data.y[mask]
        self.norm = norm

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i] if self.norm is None else self.norm(self.x[i])
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.as_tensor(self.y[i])
