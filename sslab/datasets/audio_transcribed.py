"""Transcribed speech corpora for low-resource ASR: the Czech Fish Fillets dialogs (``speech_cs``).

``../shared/data/speech_cs/transcripts.tsv`` (see its README) lists 1,782 Ogg Vorbis clips (22.05 kHz,
mono) with the game level, the speaking character (``speaker``), the Czech line (``text``) and its
English version. :func:`read_transcribed` turns it into :class:`~sslab.datasets.audio.AudioItem` rows
(``group`` = level, ``text`` NFC-normalised, empty text -> ``None`` = pretraining only);
:func:`level_split` holds out whole levels, so no line of a test level is seen in training
(the standard for ASR test sets: disjoint recording sessions / texts). Decoding and resampling to the
model rate go through :func:`sslab.datasets.audio.load_audio` (libsndfile decodes Vorbis).
"""
from __future__ import annotations

import csv
import unicodedata
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from sslab.datasets.audio import AudioItem

PathLike = Union[str, Path]
REQUIRED_COLUMNS = ("file", "level", "speaker", "text")


def nfc(text: str) -> str:
    """Unicode NFC (composed ``č`` rather than ``c`` + combining caron): one code point per letter."""
    return unicodedata.normalize("NFC", text)


def normalize_transcript(text: str) -> str:
    """ASR scoring form of a line: NFC, lower case, every character that is not a letter or a digit
    becomes a space (punctuation, quotes, dashes, ``\\``), runs of spaces collapse. Diacritics are kept
    (``Řekni, že ne!`` -> ``řekni že ne``)."""
    out = []
    for ch in nfc(text).lower():
        cat = unicodedata.category(ch)
        out.append(ch if cat[0] in ("L", "N") else " ")
    return " ".join("".join(out).split())


def read_transcribed(manifest: PathLike, root: Optional[PathLike] = None) -> List[AudioItem]:
    """Rows of a transcribed manifest (TSV, UTF-8, columns ``file level speaker text`` [+ ``language``,
    ``seconds``]) as :class:`AudioItem` with ``group`` = level, ``text`` NFC (``None`` when empty) and
    ``speaker`` ``None`` when empty. Problems name the file, row and column."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"transcribed manifest not found: {manifest}")
    base = Path(root) if root is not None else manifest.parent
    with manifest.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {missing}; found {reader.fieldnames}")
        items: List[AudioItem] = []
        for row_no, row in enumerate(reader, start=2):
            rel = (row["file"] or "").strip()
            level = (row["level"] or "").strip()
            if not rel:
                raise ValueError(f"{manifest}: row {row_no} has an empty 'file' value")
            if not level:
                raise ValueError(f"{manifest}: row {row_no} ({rel}) has an empty 'level' value")
            duration: Optional[float] = None
            if row.get("seconds") not in (None, ""):
                try:
                    duration = float(row["seconds"])
                except ValueError:
                    raise ValueError(f"{manifest}: row {row_no}: seconds {row['seconds']!r} is not a number") from None
            text = nfc(row["text"] or "").strip() or None
            p = Path(rel)
            items.append(AudioItem(p if p.is_absolute() else base / p, language=(row.get("language") or None),
                                   speaker=(row["speaker"] or "").strip() or None, duration=duration,
                                   text=text, group=level))
    if not items:
        raise ValueError(f"{manifest}: no rows")
    return items


def level_split(items: Sequence[AudioItem], test_fraction: float = 0.2, seed: int = 0,
                test_levels: Optional[Sequence[str]] = None) -> Tuple[List[AudioItem], List[AudioItem]]:
    """``(train, test)`` with whole groups (levels) on one side.

    ``test_levels`` given: exactly those levels are the test side (unknown names are an error). Otherwise
    the levels are shuffled with ``seed`` and taken in that order until their transcribed audio reaches
    ``test_fraction`` of all transcribed audio (durations from the manifest; 1 s per clip when unknown).
    """
    groups: Dict[str, List[AudioItem]] = defaultdict(list)
    for it in items:
        if it.group is None:
            raise ValueError(f"{it.path}: no level/group; a level split needs one for every clip")
        groups[it.group].append(it)
    names = sorted(groups)
    if test_levels is not None:
        unknown = sorted(set(test_levels) - set(names))
        if unknown:
            raise ValueError(f"test_levels: unknown level(s) {unknown[:5]}")
        chosen = set(test_levels)
    else:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

        def seconds(its: Sequence[AudioItem]) -> float:
            return sum((it.duration or 1.0) for it in its if it.text)

        total = seconds(items)
        chosen, acc = set(), 0.0
        for i in np.random.default_rng(seed).permutation(len(names)):
            if acc >= test_fraction * total:
                break
            chosen.add(names[i])
            acc += seconds(groups[names[i]])
    if len(chosen) in (0, len(names)):
        raise ValueError(f"level split: {len(chosen)} of {len(names)} levels on the test side; need both sides")
    train = [it for it in items if it.group not in chosen]
    test = [it for it in items if it.group in chosen]
    return train, test


def labelled_subset(items: Sequence[AudioItem], minutes: float, seed: int = 0,
                    min_seconds: float = 0.0) -> List[AudioItem]:
    """Transcribed clips (``text`` not None, ``duration`` >= ``min_seconds``) drawn in a ``seed``-shuffled
    order until their audio reaches ``minutes``; nested (the 10-minute subset of a seed is a prefix of its
    30-minute subset). Asking for more than there is raises."""
    pool = [it for it in items if it.text and (it.duration or 0.0) >= min_seconds]
    have = sum(it.duration or 0.0 for it in pool) / 60
    if minutes > have + 1e-9:
        raise ValueError(f"labelled subset: asked for {minutes:g} min, only {have:.1f} min of transcribed audio")
    out, acc = [], 0.0
    for i in np.random.default_rng(seed).permutation(len(pool)):
        if acc >= minutes * 60:
            break
        out.append(pool[i])
        acc += pool[i].duration or 0.0
    return out


def with_durations(items: Sequence[AudioItem], durations: Sequence[float]) -> List[AudioItem]:
    """Copy of ``items`` with measured durations (seconds after decoding)."""
    return [replace(it, duration=float(d)) for it, d in zip(items, durations)]
