"""Beat windows from long WFDB records with ``.atr`` beat annotations (MIT-BIH style), AAMI classes.

ANSI/AAMI EC57 grouping of MIT-BIH beat labels (as in de Chazal et al. 2004):
N = {N, L, R, e, j}, S = {A, a, J, S}, V = {V, E}, F = {F}, Q = {/, f, Q}.
Annotations that are not beats (rhythm changes ``+``, noise ``~``, comments ``"``, flutter waves ``!``,
...) are skipped and counted per symbol; beats whose window would leave the record are skipped and
counted as ``edge``.  Nothing else is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.core.registry import DATASETS
from sslab.datasets.ecg_wfdb import ECGRecordError, PathLike, read_record, record_base

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
AAMI_MAP: Dict[str, str] = {**{s: "N" for s in "NLRej"}, **{s: "S" for s in "AaJS"}, **{s: "V" for s in "VE"},
                            "F": "F", **{s: "Q" for s in "/fQ"}}


@dataclass
class BeatWindows:
    """``x`` ``[n, leads, window]``, ``y`` AAMI class index, ``samples`` R-peak sample (at ``fs``)."""

    x: np.ndarray
    y: np.ndarray
    samples: np.ndarray
    fs: float
    leads: List[str]
    skipped: Dict[str, int] = field(default_factory=dict)


@DATASETS.register("ecg_mitbih_beats")
def beat_windows(path: PathLike, before: float = 0.25, after: float = 0.45, fs: Optional[float] = None,
                 leads: Optional[Sequence[str]] = None, extension: str = "atr") -> BeatWindows:
    """Cut a window of ``before`` + ``after`` seconds around every annotated beat of a record."""
    import wfdb

    base = record_base(path)
    if not base.with_suffix("." + extension).is_file():
        raise ECGRecordError(f"{base}: annotation file {base.name}.{extension} not found")
    rec = read_record(base, leads, fs)
    try:
        ann = wfdb.rdann(str(base), extension)
    except Exception as err:
        raise ECGRecordError(f"{base}.{extension}: cannot read annotations: {err}") from err
    scale = rec.fs / float(ann.fs) if ann.fs else 1.0
    b, a = int(round(before * rec.fs)), int(round(after * rec.fs))
    T = rec.signal.shape[1]
    xs, ys, pos = [], [], []
    skipped: Dict[str, int] = {}
    for sym, s in zip(ann.symbol, ann.sample):
        cls = AAMI_MAP.get(sym)
        if cls is None:
            skipped[f"non-beat {sym!r}"] = skipped.get(f"non-beat {sym!r}", 0) + 1
            continue
        c = int(round(s * scale))
        if c - b < 0 or c + a > T:
            skipped["edge"] = skipped.get("edge", 0) + 1
            continue
        xs.append(rec.signal[:, c - b:c + a])
        ys.append(AAMI_CLASSES.index(cls))
        pos.append(c)
    if not xs:
        raise ECGRecordError(f"{base}: no beat annotations in {base.name}.{extension} (skipped: {skipped})")
    return BeatWindows(np.stack(xs).astype(np.float32), np.array(ys, np.int64), np.array(pos), rec.fs,
                       rec.leads, skipped)


class BeatDataset(Dataset):
    """``(window [leads, L], AAMI class)`` items from :class:`BeatWindows` (optionally normalised)."""

    def __init__(self, beats: BeatWindows, indices: Optional[Sequence[int]] = None, norm=None) -> None:
        self.beats, self.norm = beats, norm
        self.indices = list(range(len(beats.y))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        x = self.beats.x[j]
        if self.norm is not None:
            x = self.norm(x)
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.beats.y[j])
