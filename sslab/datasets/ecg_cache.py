"""Memory-mapped cache of decoded ECG records, so the data loader is never the bottleneck.

Layout of one cache (a folder named by a hash of what it depends on: the record list, each record's
files' size and mtime, leads, rate, dtype and the bad-record policy; replacing or editing a record file
therefore builds a new cache instead of reusing stale data)::

    index.json   record names, leads, fs, dtype, per-record offset/length
    data.npy     [leads, total_samples] memmap (float16 by default), records back to back
    done.npy     uint8 flag per record (the build is resumable: a rerun decodes only missing ones)
    index.json["bad"]  records that failed under on_bad_record="skip" (name -> reason); under "error" a
                 bad record is never remembered: the build raises and the next run tries it again

Lengths come from the headers (after resampling), so the memmap is allocated once and workers write
their records straight into it: memory stays flat however many records (800k works like 300).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.datasets.ecg_wfdb import (ECGRecordError, LeadNorm, PathLike, _check_signal_files,
                                     apply_short_record_policy, random_crop, read_header, read_record,
                                     select_lead_indices)

log = logging.getLogger(__name__)


_RECORD_FILES = (".hea", ".dat", ".mat")


def record_identity(name: str) -> List[Optional[Tuple[int, int]]]:
    """(size, mtime_ns) of a record's header and signal files (``None`` for an absent one): the cache key part
    that changes when a file is replaced or rewritten."""
    out: List[Optional[Tuple[int, int]]] = []
    for suffix in _RECORD_FILES:
        try:
            st = os.stat(name + suffix)
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return out


def cache_key(names: Sequence[str], leads: Optional[List[str]], fs: Optional[float], dtype: str,
              expected_fs: Optional[float], on_bad_record: str) -> str:
    """Hash of everything the cached arrays depend on (one ``stat`` per record file, no decoding)."""
    h = hashlib.sha1(json.dumps([list(names), leads, fs, dtype, expected_fs, on_bad_record]).encode())
    for name in names:
        h.update(json.dumps(record_identity(name)).encode())
    return h.hexdigest()[:16]


def _resampled_len(n: int, fs: float, target: Optional[float]) -> int:
    if target is None or float(target) == float(fs):
        return n
    r = Fraction(float(target) / float(fs)).limit_denominator(1000)
    return int(math.ceil(n * r.numerator / r.denominator))


def _scan(args: Tuple[str, Optional[List[str]], Optional[float], Optional[float]]) -> Tuple[int, float, str]:
    """Header pass for one record -> (resampled length, fs, error or '')."""
    rec, leads, fs, expected_fs = args
    try:
        h = read_header(rec)
        _check_signal_files(Path(rec), h)
        select_lead_indices(h.sig_name, leads, rec)
        if expected_fs is not None and float(h.fs) != float(expected_fs):
            raise ECGRecordError(f"{rec}: recorded at {h.fs} Hz, expected {expected_fs} Hz")
        return _resampled_len(int(h.sig_len), float(h.fs), fs), float(h.fs), ""
    except ECGRecordError as err:
        return 0, 0.0, str(err)


def _decode_chunk(args) -> List[Tuple[int, str]]:
    """Worker: decode records ``idx`` and write them into the memmap; returns (index, error) pairs."""
    data_path, idx, names, offsets, lengths, leads, fs, expected_fs = args
    data = np.load(data_path, mmap_mode="r+")
    out = []
    for i, name, off, n in zip(idx, names, offsets, lengths):
        try:
            sig = read_record(name, leads, fs, expected_fs).signal
            if sig.shape[1] != n:
                raise ECGRecordError(f"{name}: decoded length {sig.shape[1]} != header-derived {n}")
            data[:, off:off + n] = sig
            out.append((i, ""))
        except ECGRecordError as err:
            out.append((i, str(err)))
    data.flush()
    del data
    return out


class ECGRecordCache:
    """Decoded, resampled records of a fixed lead set in one memmap; built in parallel, incrementally."""

    def __init__(self, records: Sequence[PathLike], cache_dir: PathLike, leads: Optional[Sequence[str]],
                 fs: Optional[float], dtype: str = "float16", workers: int = 0, on_bad_record: str = "error",
                 expected_fs: Optional[float] = None, progress: Optional[bool] = None, chunk: int = 32) -> None:
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        if not records:
            raise ECGRecordError("ECGRecordCache: empty record list")
        self.names = [str(Path(r)) for r in records]
        self.leads = list(leads) if leads is not None else None
        self.fs, self.dtype, self.expected_fs = fs, dtype, expected_fs
        key = cache_key(self.names, self.leads, fs, dtype, expected_fs, on_bad_record)
        self.dir = Path(cache_dir).expanduser() / f"ecg-{key}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.workers = workers if workers > 0 else max(1, min(8, (os.cpu_count() or 1)))
        self.on_bad_record, self.progress, self.chunk = on_bad_record, progress, chunk
        self._build()
        self._data = None

    # ------------------------------------------------------------------ build
    def _pool_map(self, fn, jobs: Iterable, total: int, desc: str):
        from tqdm.auto import tqdm

        from sslab.core.progress import show_progress

        jobs = list(jobs)
        bar = tqdm(total=total, desc=desc, disable=not show_progress(self.progress), unit="rec")
        if self.workers == 1 or len(jobs) == 1:
            for j in jobs:
                res = fn(j)
                yield res
                bar.update(len(res) if isinstance(res, list) else 1)
        else:
            with ProcessPoolExecutor(self.workers, mp_context=get_context("fork")) as ex:
                for res in ex.map(fn, jobs, chunksize=1 if fn is _decode_chunk else 64):
                    yield res
                    bar.update(len(res) if isinstance(res, list) else 1)
        bar.close()

    def _fail(self, errors: List[Tuple[str, str]]) -> None:
        if errors and self.on_bad_record == "error":
            raise ECGRecordError(f"{errors[0][1]} ({len(errors)} bad record(s) in total)")

    def _build(self) -> None:
        index_path = self.dir / "index.json"
        if index_path.is_file():
            self.index = json.loads(index_path.read_text())
            if self.index["bad"] and self.on_bad_record == "error":  # never an error policy turned into a skip
                self._fail(list(self.index["bad"].items()))
        else:
            jobs = [(n, self.leads, self.fs, self.expected_fs) for n in self.names]
            scans = list(self._pool_map(_scan, jobs, len(jobs), "ECG headers"))
            errors = [(n, e) for n, (_, _, e) in zip(self.names, scans) if e]
            self._fail(errors)
            lengths = np.array([s[0] for s in scans], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            n_leads = len(self.leads) if self.leads is not None else None
            if n_leads is None:
                first_ok = next(n for n, s in zip(self.names, scans) if not s[2])
                n_leads = read_header(first_ok).n_sig
            data = np.lib.format.open_memmap(self.dir / "data.npy", mode="w+", dtype=self.dtype,
                                             shape=(n_leads, max(int(lengths.sum()), 1)))
            del data
            np.save(self.dir / "done.npy", np.zeros(len(self.names), np.uint8))
            self.index = {"names": self.names, "leads": self.leads, "fs": self.fs, "dtype": self.dtype,
                          "offsets": offsets.tolist(), "lengths": lengths.tolist(),
                          "bad": {n: e for n, e in errors}}
            tmp = index_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.index))
            os.replace(tmp, index_path)
        done = np.load(self.dir / "done.npy", mmap_mode="r+")  # flags flushed per chunk, no rewrites
        bad = self.index["bad"]
        todo = [i for i in range(len(self.names)) if not done[i] and self.names[i] not in bad]
        if todo:
            off, ln = self.index["offsets"], self.index["lengths"]
            jobs = []
            for s in range(0, len(todo), self.chunk):
                idx = todo[s:s + self.chunk]
                jobs.append((str(self.dir / "data.npy"), idx, [self.names[i] for i in idx], [off[i] for i in idx],
                             [ln[i] for i in idx], self.leads, self.fs, self.expected_fs))
            errors = []
            for res in self._pool_map(_decode_chunk, jobs, len(todo), "ECG cache"):
                for i, err in res:
                    if err:
                        errors.append((self.names[i], err))
                    else:
                        done[i] = 1
                done.flush()  # progress survives an interrupt
            if errors:
                self._fail(errors)  # "error": raise, remembering nothing (the next run decodes them again)
                bad.update({n: e for n, e in errors})
                self.index["bad"] = bad
                tmp = self.dir / "index.json.tmp"
                tmp.write_text(json.dumps(self.index))
                os.replace(tmp, self.dir / "index.json")
        if bad:
            log.warning("ECG cache: skipped %d bad record(s) (on_bad_record=skip); first: %s",
                        len(bad), next(iter(bad.values())))

    # ------------------------------------------------------------------ access
    @property
    def skipped(self) -> dict:
        return dict(self.index["bad"])

    @property
    def valid_indices(self) -> List[int]:
        bad = self.index["bad"]
        return [i for i, n in enumerate(self.names) if n not in bad]

    def __len__(self) -> int:
        return len(self.names)

    def get(self, i: int) -> np.ndarray:
        """Record ``i`` as float32 ``[leads, samples]`` (reads only its slice of the memmap)."""
        if self.names[i] in self.index["bad"]:
            raise ECGRecordError(f"{self.names[i]}: skipped while caching: {self.index['bad'][self.names[i]]}")
        if self._data is None:
            self._data = np.load(self.dir / "data.npy", mmap_mode="r")
        off, n = self.index["offsets"][i], self.index["lengths"][i]
        return np.asarray(self._data[:, off:off + n], dtype=np.float32)

    def fit_norm(self, indices: Sequence[int], clip: Optional[float] = 5.0) -> LeadNorm:
        """Per-lead dataset constants over ``indices`` (cached in the cache folder)."""
        key = hashlib.sha1(json.dumps(sorted(int(i) for i in indices)).encode()).hexdigest()[:12]
        path = self.dir / f"norm-{key}.json"
        if path.is_file():
            d = json.loads(path.read_text())
        else:
            norm = LeadNorm.fit((self.get(i) for i in indices), clip)
            d = {"mean": norm.mean.tolist(), "std": norm.std.tolist()}
            path.write_text(json.dumps(d))
        return LeadNorm(np.array(d["mean"], np.float32), np.array(d["std"], np.float32), clip)

    def __getstate__(self):  # DataLoader workers reopen the memmap lazily
        state = dict(self.__dict__)
        state["_data"] = None
        return state


class CachedCrops(Dataset):
    """Training view of a cache: normalised random crops of ``crop`` samples from records ``indices``.

    ``short_records`` decides what a record shorter than ``crop`` does: ``"error"`` (default, names it),
    ``"pad"`` (zero-padded crop; the records are listed in ``self.short``) or ``"skip"`` (left out, listed).
    """

    def __init__(self, cache: ECGRecordCache, indices: Sequence[int], crop: int, norm: Optional[LeadNorm],
                 short_records: str = "error") -> None:
        if not len(indices):
            raise ValueError("CachedCrops: no records")
        indices = list(indices)
        lengths = [cache.index["lengths"][i] for i in indices]
        kept, short = apply_short_record_policy([cache.names[i] for i in indices], lengths, crop, short_records,
                                                cache.fs)
        self.short: List[str] = [cache.names[indices[i]] for i in short]
        if not kept:
            raise ECGRecordError(f"CachedCrops: all {len(indices)} records are shorter than the crop of {crop} "
                                 f"samples (data.short_records={short_records})")
        self.cache, self.indices, self.crop, self.norm = cache, [indices[i] for i in kept], crop, norm

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.cache.get(self.indices[i])
        if self.norm is not None:
            x = self.norm(x)
        return torch.from_numpy(np.ascontiguousarray(random_crop(x, self.crop)))
