"""Audio folders and manifests for speech pretraining (wav / flac / ogg through libsndfile).

Every clip is decoded with ``soundfile``, mixed down to mono, resampled to 16 kHz with
``torchaudio.functional.resample`` and normalised per utterance to zero mean / unit variance
(the input convention of wav2vec 2.0, Baevski et al. 2020, and of HF ``Wav2Vec2FeatureExtractor``).

Bad input never disappears silently: a missing, undecodable, empty (0 samples), non-finite (NaN/inf),
silent or too-short file raises :class:`AudioFileError` naming the file and the problem, or — with
``on_bad="skip"`` — is left out and *counted*: ``dataset.skipped`` lists ``(path, problem)`` and
``dataset.skip_counts`` counts problems by kind; a warning summarises them once.
"""
from __future__ import annotations

import csv
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.core.registry import DATASETS

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TARGET_SR = 16_000
PathLike = Union[str, Path]


class AudioFileError(ValueError):
    """A problem with one audio file; ``str()`` names the file and the problem."""

    def __init__(self, path: PathLike, problem: str, kind: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
        self.kind = kind  # missing | corrupt | empty | nonfinite | silent | too_short


@dataclass(frozen=True)
class AudioItem:
    """One utterance of a corpus. ``duration`` is in seconds (``None`` until known); ``text`` is the
    transcript (``None``: untranscribed, pretraining only); ``group`` is the split unit (e.g. game level)."""

    path: Path
    language: Optional[str] = None
    speaker: Optional[str] = None
    duration: Optional[float] = None
    text: Optional[str] = None
    group: Optional[str] = None


# --------------------------------------------------------------------------- decoding


def load_audio(path: PathLike, sample_rate: int = TARGET_SR) -> torch.Tensor:
    """Decode ``path`` to a mono float32 waveform ``[T]`` at ``sample_rate``.

    Raises :class:`AudioFileError` for a missing, undecodable, empty or non-finite file.
    """
    import soundfile as sf
    import torchaudio.functional as AF

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(path, "file not found", "missing")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioFileError(path, f"cannot decode audio ({type(err).__name__}: {err})", "corrupt") from None
    if data.shape[0] == 0:
        raise AudioFileError(path, "empty audio (0 samples)", "empty")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioFileError(path, f"{bad} non-finite (NaN/inf) samples", "nonfinite")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))  # mono mixdown
    if sr != sample_rate:
        wave = AF.resample(wave, orig_freq=int(sr), new_freq=int(sample_rate))
    return wave.contiguous()


def normalize_waveform(wave: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per utterance (HF ``zero_mean_unit_var_norm``)."""
    return (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + eps)


def check_waveform(wave: torch.Tensor, path: PathLike, sample_rate: int = TARGET_SR,
                   min_seconds: float = 0.0, silence_threshold: float = 1e-4) -> None:
    """Raise :class:`AudioFileError` when a decoded waveform is silent or shorter than ``min_seconds``.

    Silence = peak absolute amplitude below ``silence_threshold`` (full scale 1.0): normalising such
    a clip would only amplify noise or divide by ~0.
    """
    peak = float(wave.abs().max()) if wave.numel() else 0.0
    if peak < silence_threshold:
        raise AudioFileError(path, f"silent audio (peak amplitude {peak:.2e} < {silence_threshold:g})", "silent")
    seconds = wave.numel() / sample_rate
    if seconds < min_seconds:
        raise AudioFileError(path, f"too short ({seconds:.3f} s < min_seconds={min_seconds:g})", "too_short")


# --------------------------------------------------------------------------- corpus listing


def scan_folder(root: PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> List[AudioItem]:
    """All audio files under ``root`` (recursive, sorted) as unlabelled items."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    exts = tuple(e.lower() for e in extensions)
    items = [AudioItem(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in exts]
    if not items:
        raise ValueError(f"{root}: no audio files with extensions {', '.join(exts)}")
    return items


_PATH_COLUMNS = ("path", "file", "filename", "audio")


def read_manifest(path: PathLike, root: Optional[PathLike] = None) -> List[AudioItem]:
    """Read a TSV/CSV manifest with a ``path`` (or ``file``) column and optional
    ``language``, ``speaker``, ``duration`` columns. Relative paths resolve against ``root``
    (default: the manifest's folder). Problems name the manifest, row and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    base = Path(root) if root is not None else path.parent
    text = path.read_text(encoding="utf-8")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") or "\t" in text.splitlines()[0] else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = reader.fieldnames or []
    col = next((c for c in _PATH_COLUMNS if c in columns), None)
    if col is None:
        raise ValueError(f"{path}: manifest needs a column named one of {_PATH_COLUMNS}; found {columns}")
    items: List[AudioItem] = []
    for row_no, row in enumerate(reader, start=2):
        rel = (row.get(col) or "").strip()
        if not rel:
            raise ValueError(f"{path}: row {row_no} has an empty {col!r} value")
        duration: Optional[float] = None
        if row.get("duration") not in (None, ""):
            try:
                duration = float(row["duration"])
            except ValueError:
                raise ValueError(f"{path}: row {row_no}: duration {row['duration']!r} is not a number") from None
        p = Path(rel)
        items.append(AudioItem(p if p.is_absolute() else base / p,
                               language=(row.get("language") or None),
                               speaker=(row.get("speaker") or None), duration=duration))
    if not items:
        raise ValueError(f"{path}: manifest has no rows")
    return items


# --------------------------------------------------------------------------- dataset


@DATASETS.register("audio")
class AudioDataset(Dataset):
    """Utterances from a folder or manifest -> ``{"input_values": [T], "index", "language", "speaker"}``.

    ``max_seconds`` crops long clips (random offset under the seeded RNG when ``random_crop``,
    else the first ``max_seconds``). ``validate="full"`` decodes every file once at construction
    (tqdm) so that silent/corrupt files surface before training; ``"header"`` only reads headers.
    ``cache=True`` keeps decoded waveforms in memory (small corpora, tests).
    """

    def __init__(self, items: Sequence[AudioItem], sample_rate: int = TARGET_SR,
                 max_seconds: Optional[float] = None, min_seconds: float = 0.0,
                 normalize: bool = True, random_crop: bool = True, on_bad: str = "error",
                 validate: str = "full", cache: bool = False, silence_threshold: float = 1e-4,
                 progress: Optional[bool] = None) -> None:
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
        if validate not in ("full", "header"):
            raise ValueError(f"validate must be 'full' or 'header', got {validate!r}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        self.sample_rate, self.max_seconds, self.min_seconds = sample_rate, max_seconds, min_seconds
        self.normalize, self.random_crop, self.on_bad = normalize, random_crop, on_bad
        self.silence_threshold = silence_threshold
        self.skipped: List[Tuple[Path, str]] = []
        self.skip_counts: Counter = Counter()
        self._cache: Optional[Dict[int, torch.Tensor]] = {} if cache else None
        kept: List[AudioItem] = []
        waves: List[torch.Tensor] = []
        iterator: Iterable[AudioItem] = items
        from sslab.core.progress import show_progress

        if show_progress(progress):
            from tqdm.auto import tqdm
            iterator = tqdm(items, desc="checking audio", unit="file")
        for item in iterator:
            try:
                if validate == "full":
                    wave = self._decode_checked(item.path)
                    item = replace(item, duration=wave.numel() / sample_rate)
                else:
                    item = replace(item, duration=self._header_duration(item.path))
                    wave = None
            except AudioFileError as err:
                if on_bad == "error":
                    raise
                self.skipped.append((err.path, err.problem))
                self.skip_counts[err.kind] += 1
                continue
            kept.append(item)
            if self._cache is not None and wave is not None:
                waves.append(wave)
        if self.skipped:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(self.skip_counts.items()))
            warnings.warn(f"audio dataset: skipped {len(self.skipped)} of {len(items)} files ({summary}); "
                          f"see dataset.skipped for the list", stacklevel=2)
        if not kept:
            raise ValueError(f"audio dataset: no usable files among {len(items)} "
                             f"(problems: {dict(self.skip_counts) or 'none listed'})")
        self.items = kept
        if self._cache is not None:
            self._cache = dict(enumerate(waves))

    # -- construction helpers
    @classmethod
    def from_folder(cls, root: PathLike, **kwargs: Any) -> "AudioDataset":
        return cls(scan_folder(root), **kwargs)

    @classmethod
    def from_manifest(cls, manifest: PathLike, root: Optional[PathLike] = None, **kwargs: Any) -> "AudioDataset":
        return cls(read_manifest(manifest, root), **kwargs)

    def _decode_checked(self, path: Path) -> torch.Tensor:
        wave = load_audio(path, self.sample_rate)
        check_waveform(wave, path, self.sample_rate, self.min_seconds, self.silence_threshold)
        return wave

    def _header_duration(self, path: Path) -> float:
        import soundfile as sf

        if not path.is_file():
            raise AudioFileError(path, "file not found", "missing")
        try:
            info = sf.info(str(path))
        except Exception as err:
            raise AudioFileError(path, f"cannot read audio header ({type(err).__name__}: {err})", "corrupt") from None
        if info.frames == 0:
            raise AudioFileError(path, "empty audio (0 samples)", "empty")
        seconds = info.frames / info.samplerate
        if seconds < self.min_seconds:
            raise AudioFileError(path, f"too short ({seconds:.3f} s < min_seconds={self.min_seconds:g})", "too_short")
        return seconds

    # -- Dataset API
    def __len__(self) -> int:
        return len(self.items)

    @property
    def durations(self) -> List[float]:
        """Seconds per kept item (before cropping)."""
        return [float(it.duration or 0.0) for it in self.items]

    @property
    def lengths(self) -> List[int]:
        """Samples per item *after* cropping to ``max_seconds`` (for length bucketing)."""
        cap = None if self.max_seconds is None else int(round(self.max_seconds * self.sample_rate))
        out = [int(round(d * self.sample_rate)) for d in self.durations]
        return [min(n, cap) if cap else n for n in out]

    def waveform(self, index: int) -> torch.Tensor:
        """Decoded, checked, uncropped and unnormalised waveform of item ``index``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        wave = self._decode_checked(self.items[index].path)
        if self._cache is not None:
            self._cache[index] = wave
        return wave

    def crop(self, wave: torch.Tensor) -> torch.Tensor:
        if self.max_seconds is None:
            return wave
        n = int(round(self.max_seconds * self.sample_rate))
        if wave.numel() <= n:
            return wave
        start = int(torch.randint(0, wave.numel() - n + 1, ()).item()) if self.random_crop else 0
        return wave[start:start + n]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.items[index]
        wave = self.crop(self.waveform(index))
        if self.normalize:
            wave = normalize_waveform(wave)
        return {"input_values": wave, "index": index, "language": item.language, "speaker": item.speaker}


# --------------------------------------------------------------------------- batching


class AudioCollator:
    """Batch variable-length waveforms.

    ``mode="pad"``: right-pad with zeros to the longest clip (optionally to a multiple of
    ``pad_to_multiple_of``) and return ``attention_mask`` (1 = real sample).
    ``mode="min"``: crop every clip to the shortest one at a random offset — fairseq's
    wav2vec 2.0 pretraining default; no padding, all-ones mask.
    Output: ``{"input_values": [B, T], "attention_mask": [B, T] long, "lengths": [B] long,
    "index": [B] long, "language": list, "speaker": list}``.
    """

    def __init__(self, mode: str = "pad", pad_to_multiple_of: Optional[int] = None) -> None:
        if mode not in ("pad", "min"):
            raise ValueError(f"collate mode must be 'pad' or 'min', got {mode!r}")
        self.mode, self.pad_to_multiple_of = mode, pad_to_multiple_of

    def __call__(self, samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty list of audio samples")
        waves = [s["input_values"] for s in samples]
        for s, w in zip(samples, waves):
            if w.dim() != 1 or w.numel() == 0:
                raise ValueError(f"audio item {s.get('index')}: expected a non-empty 1-D waveform, got shape {tuple(w.shape)}")
        if self.mode == "min":
            n = min(w.numel() for w in waves)
            cropped = []
            for w in waves:
                start = int(torch.randint(0, w.numel() - n + 1, ()).item())
                cropped.append(w[start:start + n])
            waves = cropped
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        T = int(lengths.max())
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            T = ((T + m - 1) // m) * m
        x = torch.zeros(len(waves), T, dtype=waves[0].dtype)
        for i, w in enumerate(waves):
            x[i, :w.numel()] = w
        attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        return {"input_values": x, "attention_mask": attention_mask, "lengths": lengths,
                "index": torch.tensor([int(s.get("index", -1)) for s in samples], dtype=torch.long),
                "language": [s.get("language") for s in samples],
                "speaker": [s.get("speaker") for s in samples]}
