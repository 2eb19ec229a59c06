"""WFDB (PhysioNet) record reading for ECG: validation, lead selection, resampling, normalisation, crops.

Any WFDB record works: ``.hea`` + ``.dat`` (formats 16, 212, 80, ...) and the CinC 2021 ``.mat``
records (WFDB header + MAT-v4 signal, format ``16`` with a 24-byte offset).  Every problem with a
record -- unreadable header, truncated or oversized signal file, unknown storage format, NaN samples,
flat leads, an unexpected sampling rate, a missing lead -- raises :class:`ECGRecordError` naming the
record and the problem.  Nothing is dropped silently; folder readers offer ``on_bad_record="skip"``,
which counts and reports the skipped records.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from sslab.core.errors import UserError
from sslab.core.registry import DATASETS

log = logging.getLogger(__name__)

LEADS_12: Tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# bytes per sample of each WFDB storage format (212/310/311 pack several samples per group)
_FMT_BYTES: Dict[str, float] = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                                "212": 1.5, "310": 4 / 3, "311": 4 / 3}

PathLike = Union[str, Path]


class ECGRecordError(UserError, ValueError):
    """A bad ECG record; the message names the record and the problem."""


@dataclass
class ECGRecord:
    """One decoded record: ``signal`` is ``[leads, samples]`` float32 in physical units (mV)."""

    name: str
    signal: np.ndarray
    fs: float
    leads: List[str]
    comments: List[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.signal.shape[1] / self.fs


def record_base(path: PathLike) -> Path:
    """``x/rec``, ``x/rec.hea``, ``x/rec.dat`` or ``x/rec.mat`` -> ``x/rec`` (the wfdb record name)."""
    p = Path(path)
    return p.with_suffix("") if p.suffix.lower() in {".hea", ".dat", ".mat"} else p


def select_lead_indices(available: Sequence[str], wanted: Optional[Sequence[str]], record: str = "") -> List[int]:
    """Indices of ``wanted`` leads in ``available`` (case-insensitive); a missing lead names the choices."""
    if wanted is None:
        return list(range(len(available)))
    lower = [a.lower() for a in available]
    out = []
    for lead in wanted:
        try:
            out.append(lower.index(lead.lower()))
        except ValueError:
            raise ECGRecordError(
                f"{record}: lead {lead!r} not in record; available leads: {', '.join(available)}"
            ) from None
    return out


def _check_signal_files(base: Path, header) -> None:
    """Compare each signal file's size with what the header implies (truncation / size mismatch)."""
    per_file: Dict[str, List[int]] = {}
    for i, fname in enumerate(header.file_name):
        per_file.setdefault(fname, []).append(i)
    for fname, idx in per_file.items():
        fpath = base.parent / fname
        if not fpath.is_file():
            raise ECGRecordError(f"{base}: signal file {fname} is missing")
        fmts = {header.fmt[i] for i in idx}
        unknown = [f for f in fmts if f not in _FMT_BYTES]
        if unknown:
            raise ECGRecordError(f"{base}: unknown/unsupported WFDB storage format {unknown[0]!r} in {fname}")
        offset = header.byte_offset[idx[0]] or 0
        bytes_per_frame = sum(_FMT_BYTES[header.fmt[i]] for i in idx)
        expected = offset + int(math.ceil(header.sig_len * bytes_per_frame))
        actual = fpath.stat().st_size
        if actual < expected:
            raise ECGRecordError(
                f"{base}: signal file {fname} is truncated: header implies {expected} bytes "
                f"({header.sig_len} samples x {len(idx)} leads, format {header.fmt[idx[0]]}), found {actual}"
            )
        if actual > expected + 4:  # 212/310 may pad the last group
            raise ECGRecordError(
                f"{base}: header/data size mismatch in {fname}: header implies {expected} bytes, "
                f"file has {actual}"
            )


def read_header(path: PathLike):
    """``wfdb.rdheader`` with errors that name the record."""
    import wfdb

    base = record_base(path)
    if not base.with_suffix(".hea").is_file():
        raise ECGRecordError(f"{base}: header file {base.name}.hea not found")
    try:
        return wfdb.rdheader(str(base))
    except Exception as err:  # wfdb raises many types on malformed headers
        raise ECGRecordError(f"{base}: cannot parse WFDB header: {err}") from err


def resample(signal: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy ``resample_poly``, anti-aliased)."""
    if target_fs == fs:
        return signal
    from scipy.signal import resample_poly

    ratio = Fraction(float(target_fs) / float(fs)).limit_denominator(1000)
    out = resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32, copy=False)


def read_record(
    path: PathLike,
    leads: Optional[Sequence[str]] = None,
    fs: Optional[float] = None,
    expected_fs: Optional[float] = None,
    allow_flat: bool = False,
) -> ECGRecord:
    """Read and validate a WFDB record.

    Args:
        path: record name or any of its files.
        leads: lead names to keep, in this order (case-insensitive); ``None`` keeps all.
        fs: resample to this rate (Hz); ``None`` keeps the stored rate.
        expected_fs: raise if the stored rate differs (catches a record at an unexpected rate).
        allow_flat: accept leads with zero variance (default: error).
    """
    import wfdb

    base = record_base(path)
    header = read_header(base)
    name = str(base)
    if header.sig_len is None or header.sig_len <= 0 or not header.n_sig:
        raise ECGRecordError(f"{name}: header declares no samples/signals (sig_len={header.sig_len})")
    if expected_fs is not None and float(header.fs) != float(expected_fs):
        raise ECGRecordError(f"{name}: recorded at {header.fs} Hz, expected {expected_fs} Hz")
    _check_signal_files(base, header)
    idx = select_lead_indices(header.sig_name, leads, name)
    try:
        rec = wfdb.rdrecord(str(base), channels=idx, physical=True)
    except Exception as err:
        raise ECGRecordError(f"{name}: cannot decode signal: {err}") from err
    sig = np.asarray(rec.p_signal, dtype=np.float32).T  # [C, T]
    if sig.shape[1] != header.sig_len:
        raise ECGRecordError(f"{name}: decoded {sig.shape[1]} samples, header declares {header.sig_len}")
    lead_names = [header.sig_name[i] for i in idx]
    bad = ~np.isfinite(sig)
    if bad.any():
        lead = lead_names[int(np.argmax(bad.any(axis=1)))]
        raise ECGRecordError(f"{name}: lead {lead} has {int(bad.sum())} NaN/inf samples")
    if not allow_flat:
        flat = np.ptp(sig, axis=1) == 0
        if flat.any():
            raise ECGRecordError(f"{name}: lead {lead_names[int(np.argmax(flat))]} is flat (constant signal)")
    if fs is not None:
        sig = resample(sig, float(header.fs), float(fs))
    return ECGRecord(name=name, signal=np.ascontiguousarray(sig, dtype=np.float32),
                     fs=float(fs if fs is not None else header.fs), leads=lead_names,
                     comments=list(header.comments or []))


def find_records(root: PathLike) -> List[Path]:
    """All WFDB record bases (``*.hea``) under ``root``, sorted; error if none."""
    root = Path(root)
    if not root.is_dir():
        raise ECGRecordError(f"{root}: not a directory")
    recs = sorted(p.with_suffix("") for p in root.rglob("*.hea"))
    if not recs:
        raise ECGRecordError(f"{root}: no WFDB records (*.hea) found")
    return recs


# --------------------------------------------------------------------------- preprocessing


@dataclass
class LeadNorm:
    """Per-lead standardisation with dataset constants, then clipping: ``clip((x - mean) / std)``."""

    mean: np.ndarray
    std: np.ndarray
    clip: Optional[float] = 5.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = (x - self.mean[:, None]) / self.std[:, None]
        if self.clip is not None:
            y = np.clip(y, -self.clip, self.clip)
        return y.astype(np.float32, copy=False)

    @classmethod
    def identity(cls, n_leads: int, clip: Optional[float] = None) -> "LeadNorm":
        return cls(np.zeros(n_leads, np.float32), np.ones(n_leads, np.float32), clip)

    @classmethod
    def fit(cls, signals: Sequence[np.ndarray], clip: Optional[float] = 5.0) -> "LeadNorm":
        """Dataset constants from ``[C, T]`` arrays (streaming sums; memory stays flat)."""
        n = 0
        s = s2 = None
        for x in signals:
            x64 = x.astype(np.float64)
            s = x64.sum(1) if s is None else s + x64.sum(1)
            s2 = (x64**2).sum(1) if s2 is None else s2 + (x64**2).sum(1)
            n += x.shape[1]
        if not n:
            raise ValueError("LeadNorm.fit: no signals")
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
        return cls(mean.astype(np.float32), std.astype(np.float32), clip)


SHORT_RECORD_POLICIES = ("error", "pad", "skip")


def apply_short_record_policy(names: Sequence[str], lengths: Sequence[int], crop: int, policy: str = "error",
                              fs: Optional[float] = None, key: str = "data.short_records") -> Tuple[List[int], List[int]]:
    """Records shorter than the ``crop`` -> ``(kept positions, short positions)`` under ``policy``.

    ``error`` (default) raises naming the first short record and the count; ``pad`` keeps them (the crop
    zero-pads them; the caller reports the count); ``skip`` drops them (counted). Nothing is padded silently.
    """
    if policy not in SHORT_RECORD_POLICIES:
        raise ECGRecordError(f"{key}: expected one of {list(SHORT_RECORD_POLICIES)}, got {policy!r}")
    short = [i for i, n in enumerate(lengths) if int(n) < crop]
    if short and policy == "error":
        i = short[0]
        rate = f" ({int(lengths[i]) / fs:.2f} s at {fs:g} Hz)" if fs else ""
        crop_s = f" ({crop / fs:.2f} s)" if fs else ""
        raise ECGRecordError(
            f"{names[i]}: {int(lengths[i])} samples{rate} is shorter than the crop of {crop} samples{crop_s}; "
            f"{len(short)} of {len(lengths)} record(s) are shorter; set {key}: pad to zero-pad them (counted) "
            "or skip to leave them out")
    if short:
        log.warning("%d of %d ECG record(s) are shorter than the %d-sample crop (%s=%s); first: %s",
                    len(short), len(lengths), crop, key, policy, names[short[0]])
    kept = [i for i in range(len(lengths)) if policy != "skip" or int(lengths[i]) >= crop]
    return kept, short


def random_crop(x: np.ndarray, length: int) -> np.ndarray:
    """Random ``length``-sample window (numpy global RNG, seeded by the trainer).

    Zero-pads a record shorter than ``length``; datasets decide first, with
    :func:`apply_short_record_policy`, whether such a record is an error, padded (counted) or skipped."""
    T = x.shape[-1]
    if T < length:
        return np.pad(x, ((0, 0), (0, length - T)))
    start = int(np.random.randint(0, T - length + 1))
    return x[:, start:start + length]


def strided_crops(x: np.ndarray, length: int, stride: int) -> np.ndarray:
    """All ``length`` windows every ``stride`` samples -> ``[n_crops, C, length]`` (last one end-aligned)."""
    T = x.shape[-1]
    if T <= length:
        return np.pad(x, ((0, 0), (0, length - T)))[None]
    starts = list(range(0, T - length + 1, stride))
    if starts[-1] != T - length:
        starts.append(T - length)
    return np.stack([x[:, s:s + length] for s in starts])


# --------------------------------------------------------------------------- folder dataset


@DATASETS.register("ecg_wfdb_folder")
class WFDBFolder(Dataset):
    """Every WFDB record under a folder, decoded lazily (use :class:`ECGRecordCache` for speed).

    Items are ``[leads, samples]`` float32 tensors after resampling, normalisation and (optionally)
    a random crop of ``crop`` samples.  ``on_bad_record``: ``"error"`` (default) raises at scan time
    for the first bad record; ``"skip"`` validates every header up front, drops bad ones and reports
    the count in ``self.skipped`` (and the log). ``short_records`` (records shorter than ``crop``):
    ``"error"`` (default, names the record), ``"pad"`` (zero-padded, counted in ``self.short``) or
    ``"skip"`` (left out, counted in ``self.short``).
    """

    def __init__(self, root: PathLike, leads: Optional[Sequence[str]] = LEADS_12, fs: Optional[float] = None,
                 crop: Optional[int] = None, norm: Optional[LeadNorm] = None, on_bad_record: str = "error",
                 expected_fs: Optional[float] = None, short_records: str = "error") -> None:
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.leads, self.fs, self.crop, self.norm, self.expected_fs = leads, fs, crop, norm, expected_fs
        self.records: List[Path] = []
        self.skipped: List[Tuple[str, str]] = []
        self.short: List[str] = []
        lengths: List[int] = []
        for rec in find_records(root):
            try:
                h = read_header(rec)
                _check_signal_files(rec, h)
                select_lead_indices(h.sig_name, leads, str(rec))
                if expected_fs is not None and float(h.fs) != float(expected_fs):
                    raise ECGRecordError(f"{rec}: recorded at {h.fs} Hz, expected {expected_fs} Hz")
            except ECGRecordError as err:
                if on_bad_record == "error":
                    raise
                self.skipped.append((str(rec), str(err)))
                continue
            self.records.append(rec)
            n = int(h.sig_len or 0)
            if fs is not None and float(fs) != float(h.fs):
                n = int(math.ceil(n * Fraction(float(fs) / float(h.fs)).limit_denominator(1000)))
            lengths.append(n)
        if self.skipped:
            log.warning("WFDBFolder %s: skipped %d bad record(s) (on_bad_record=skip); first: %s",
                        root, len(self.skipped), self.skipped[0][1])
        if crop is not None and self.records:
            kept, short = apply_short_record_policy([str(r) for r in self.records], lengths, crop, short_records, fs)
            self.short = [str(self.records[i]) for i in short]
            self.records = [self.records[i] for i in kept]
        if not self.records:
            raise ECGRecordError(f"{root}: no usable records ({len(self.skipped)} skipped, "
                                 f"{len(self.short)} shorter than the crop)")

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> np.ndarray:
        return read_record(self.records[i], self.leads, self.fs, self.expected_fs).signal

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.load(i)
        if self.norm is not None:
            x = self.norm(x)
        if self.crop is not None:
            x = random_crop(x, self.crop)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
