"""ECG-report pairs for ECG-language pretraining (MELP) and zero-shot evaluation.

Sources:
* **synthetic** (default, no files): ECGSYN records of :mod:`sslab.datasets.ecg_synthetic` with a
  templated report written from their generating parameters -- rate class (brady/normal/tachy),
  rhythm regularity (sinus arrhythmia from the HRV draw; irregularly irregular for AF-like),
  morphology and noise level -- with a few phrasings per fact so the text is not one fixed string.
* **ptbxl**: the record + the free-text ``report`` column of ``ptbxl_database.csv`` (Wagner et al.
  2020; mostly German, some English/Swedish), joined on ``ecg_id``.
* **wfdb headers**: any WFDB folder whose ``.hea`` comments carry text -- PTB-DB clinical summaries
  (reason for admission, infarction localisation, ...) and CinC 2021 ``# Dx:`` SNOMED codes mapped to
  names through ``dx_mapping_*.csv`` when that file is in the folder.

Reports without any letter or digit (empty, blank, punctuation only) are never used silently:
``on_empty="error"`` raises naming the item, ``"skip"`` drops them and counts them in
:class:`PairStats` (logged).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

RATE_CLASSES: Tuple[str, ...] = ("brady", "normal", "tachy")  # as ecg_synthetic.RHYTHM_CLASSES


class ReportError(ValueError):
    """A report that cannot be used; the message names the item."""


def is_blank(text: Optional[str]) -> bool:
    """True for None/NaN, empty, whitespace or punctuation-only text (no letter or digit)."""
    return not isinstance(text, str) or not any(ch.isalnum() for ch in text)


_SENT_SPLIT = re.compile(r"(?<=[.;!?])\s+|\s*\n+\s*")


def split_sentences(text: str) -> List[str]:
    """Sentences of a report: split after ``. ; ! ?`` + whitespace and at line breaks; pieces without
    any letter/digit are dropped. A report without punctuation (most German PTB-XL ones) is one sentence."""
    return [s.strip() for s in _SENT_SPLIT.split(text.strip()) if not is_blank(s)]


@dataclass
class PairStats:
    """What a pair source kept and dropped (explicit skip policy)."""

    total: int = 0
    kept: int = 0
    skipped_empty: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.kept}/{self.total} pairs kept; {len(self.skipped_empty)} skipped for empty/punctuation-only "
                f"reports{': ' + ', '.join(self.skipped_empty[:5]) if self.skipped_empty else ''}")


def check_reports(names: Sequence[str], reports: Sequence[Optional[str]], on_empty: str = "error"
                  ) -> Tuple[List[int], PairStats]:
    """Indices of usable reports; blank ones raise (``on_empty="error"``) or are counted (``"skip"``)."""
    if on_empty not in ("error", "skip"):
        raise ValueError(f"on_empty must be 'error' or 'skip', got {on_empty!r}")
    stats = PairStats(total=len(reports))
    keep: List[int] = []
    for i, (name, text) in enumerate(zip(names, reports)):
        if is_blank(text):
            if on_empty == "error":
                raise ReportError(f"{name}: report is empty or punctuation-only ({text!r}); "
                                  "set data.on_empty_report: skip to drop and count such pairs")
            stats.skipped_empty.append(str(name))
            continue
        keep.append(i)
    stats.kept = len(keep)
    if stats.skipped_empty:
        log.warning("ECG-report pairs: %s", stats.summary())
    return keep, stats


# --------------------------------------------------------------------------- synthetic reports

_RATE_PHRASES = {
    0: ("sinus bradycardia.", "slow heart rate, bradycardia.", "bradycardic sinus rhythm."),
    1: ("normal sinus rhythm.", "sinus rhythm with normal heart rate.", "heart rate within normal limits."),
    2: ("sinus tachycardia.", "fast heart rate, tachycardia.", "tachycardic sinus rhythm."),
}
_AF_RATE = {0: "slow", 1: "controlled", 2: "rapid"}
_MORPH_PHRASES = {
    "normal": ("normal qrs complexes and t waves.", "normal morphology."),
    "wide_qrs": ("wide qrs complexes.", "prolonged qrs duration, conduction delay."),
    "t_inversion": ("inverted t waves.", "t wave inversion."),
    "low_voltage": ("low qrs voltage.", "low amplitude in all leads."),
    "af_like": ("no p waves, fibrillatory waves.", "absent p waves with f waves."),
}


REPORT_FACTS: Tuple[str, ...] = ("rate", "regularity", "bpm", "morphology", "noise")
# the facts of the default synthetic reports (the "rate, rhythm regularity, noise", + the rate in bpm).
# The morphology sentence is opt-in: it is a shortcut for the contrastive losses -- its 5 visually obvious
# classes are aligned first (report-centroid zero-shot 0.98 after 150 steps) while the rate class stays at
# chance (0.48) for a short run (docs/ecg_text.md, synthetic diagnosis).
DEFAULT_REPORT_FACTS: Tuple[str, ...] = ("rate", "regularity", "bpm", "noise")


def synthetic_report(labels: Dict[str, float], rng: np.random.Generator,
                     facts: Sequence[str] = REPORT_FACTS) -> str:
    """A templated report of one synthetic record from its generating parameters (``heart_rate``,
    ``hrv``, ``noise``, ``morphology``, ``rhythm``); ``facts`` selects which sentences are written
    (default all: rate class, regularity, the rate in bpm for half of the records, morphology, noise)."""
    from sslab.datasets.ecg_synthetic import MORPHOLOGIES

    unknown = sorted(set(facts) - set(REPORT_FACTS))
    if unknown or not facts:
        raise ValueError(f"synthetic report facts must be a non-empty subset of {REPORT_FACTS}, got {list(facts)}")
    rate = int(labels["rhythm"])
    morph = MORPHOLOGIES[int(labels["morphology"])]
    hr = float(labels["heart_rate"])
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    af = morph == "af_like"
    sentences = {
        "rate": f"atrial fibrillation with {_AF_RATE[rate]} ventricular response." if af else pick(_RATE_PHRASES[rate]),
        "regularity": "irregularly irregular rhythm." if af else (
            "marked sinus arrhythmia." if labels["hrv"] > 4.0 else pick(("regular rhythm.", "regular rr intervals."))),
        "bpm": f"rate {int(round(hr))} bpm." if rng.random() < 0.5 else "",
        "morphology": pick(_MORPH_PHRASES[morph]),
        "noise": "noisy recording." if labels["noise"] > 0.05 else (
            "good signal quality." if labels["noise"] < 0.02 else "acceptable signal quality."),
    }
    return " ".join(sentences[f] for f in REPORT_FACTS if f in facts and sentences[f])


def synthetic_reports(labels: Dict[str, np.ndarray], seed: int = 0, facts: Sequence[str] = REPORT_FACTS) -> List[str]:
    """One report per synthetic record (deterministic in ``seed`` and the record index)."""
    n = len(next(iter(labels.values())))
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7919, i])
        out.append(synthetic_report({k: v[i] for k, v in labels.items()}, rng, facts))
    return out


# --------------------------------------------------------------------------- PTB-XL and WFDB headers


@dataclass
class PairSource:
    """Records (WFDB bases) with their reports, ids and the skip statistics."""

    records: List[Path]
    reports: List[str]
    ids: List[str]
    stats: PairStats
    labels: Optional[np.ndarray] = None
    classes: Optional[List[str]] = None


def ptbxl_pairs(root: Any, folds: Sequence[int], label_set: str = "all", rate: int = 100,
                on_empty: str = "error", missing_records: str = "error") -> PairSource:
    """PTB-XL records of ``folds`` with their ``report`` text (and ``label_set`` multi-hot labels).

    Records without any ``label_set`` label are excluded by the PTB-XL reader (benchmark convention);
    use ``label_set="all"`` for pretraining pairs."""
    import pandas as pd

    from sslab.datasets.ecg_ptbxl import PTBXL

    root = Path(root)
    px = PTBXL(root, label_set=label_set, rate=rate, missing_records=missing_records)
    split = px.split(folds)
    db = pd.read_csv(root / "ptbxl_database.csv", usecols=["ecg_id", "report"])
    report_of = dict(zip(db["ecg_id"].astype(int), db["report"]))
    texts = [report_of[e] for e in split.ecg_ids]
    names = [f"{root / 'ptbxl_database.csv'}: ecg_id {e}" for e in split.ecg_ids]
    keep, stats = check_reports(names, texts, on_empty)
    return PairSource(records=[split.records[i] for i in keep], reports=[str(texts[i]).strip() for i in keep],
                      ids=[str(split.ecg_ids[i]) for i in keep], stats=stats, labels=split.labels[keep],
                      classes=list(px.classes))


# header keys of PTB-DB clinical summaries that describe the patient's cardiac findings
_PTBDB_KEYS = ("reason for admission", "acute infarction (localization)", "former infarction (localization)",
               "additional diagnoses", "ventriculography", "chest x-ray", "echocardiography",
               "left coronary artery stenoses (riva)", "left coronary artery stenoses (rcx)",
               "right coronary artery stenoses (rca)")


def dx_names(folder: Any) -> Dict[str, str]:
    """SNOMED code -> diagnosis name from the CinC ``dx_mapping_*.csv`` files in ``folder`` (if any)."""
    import pandas as pd

    out: Dict[str, str] = {}
    for f in sorted(Path(folder).glob("dx_mapping_*.csv")):
        df = pd.read_csv(f)
        code_col = next((c for c in df.columns if "snomed" in c.lower() and "code" in c.lower()), None)
        name_col = next((c for c in df.columns if c.lower() in ("dx", "diagnosis", "description")), None)
        if code_col is None or name_col is None:
            raise ReportError(f"{f}: expected SNOMED code and Dx columns, found {list(df.columns)}")
        out.update({str(c): str(n) for c, n in zip(df[code_col], df[name_col])})
    return out


def header_report(comments: Sequence[str], dx_map: Optional[Dict[str, str]] = None) -> str:
    """Report text from WFDB header comments: PTB-DB summary lines (``key: value``, n/a dropped) and CinC
    ``Dx:`` codes mapped to names (unknown codes kept as ``snomed <code>``). Empty string if none."""
    sentences: List[str] = []
    for line in comments:
        key, sep, value = line.strip().lstrip("#").strip().partition(":")
        if not sep:
            continue
        k, v = key.strip().lower(), value.strip()
        if not v or v.lower() in ("n/a", "unknown", "no"):
            continue
        if k == "dx":
            codes = [c.strip() for c in v.split(",") if c.strip()]
            names = [(dx_map or {}).get(c, f"snomed {c}") for c in codes]
            sentences.append(". ".join(n.lower() for n in names) + ".")
        elif k in _PTBDB_KEYS:
            sentences.append(f"{k}: {v.lower()}.")
    return " ".join(sentences)


def wfdb_header_pairs(root: Any, on_empty: str = "error") -> PairSource:
    """Every WFDB record under ``root`` with a report built from its header comments."""
    from sslab.datasets.ecg_wfdb import find_records, read_header

    records = find_records(root)
    maps: Dict[Path, Dict[str, str]] = {}
    texts = []
    for rec in records:
        folder = rec.parent
        if folder not in maps:
            maps[folder] = dx_names(folder)
        texts.append(header_report(read_header(rec).comments or [], maps[folder]))
    keep, stats = check_reports([str(r) for r in records], texts, on_empty)
    return PairSource(records=[records[i] for i in keep], reports=[texts[i] for i in keep],
                      ids=[records[i].name for i in keep], stats=stats)


# --------------------------------------------------------------------------- dataset + collator


class ECGTextPairs(Dataset):
    """``(signal [C, crop], report)`` items; ``get_signal(i)`` returns the (normalised) ``[C, T]`` record."""

    def __init__(self, get_signal: Callable[[int], np.ndarray], reports: Sequence[str],
                 crop: Optional[int] = None, random_crop: bool = True) -> None:
        self.get_signal, self.reports = get_signal, list(reports)
        self.crop, self.random_crop = crop, random_crop

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, str]:
        from sslab.datasets.ecg_wfdb import random_crop

        x = self.get_signal(i)
        if self.crop is not None:
            if self.random_crop:
                x = random_crop(x, self.crop)
            else:  # centre crop (evaluation)
                T = x.shape[-1]
                x = np.pad(x, ((0, 0), (0, max(0, self.crop - T))))
                s = max(0, (T - self.crop) // 2)
                x = x[:, s:s + self.crop]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.reports[i]


class ReportCollator:
    """Tokenises reports sentence by sentence: ``[CLS] s_0 ... s_k [SEP]`` (truncated to ``max_len``)
    with ``sentence_ids`` (-1 on special tokens/padding) for the beat-level loss.

    A report with no letter/digit raises :class:`ReportError` (datasets filter them beforehand)."""

    def __init__(self, tokenizer: Any, max_len: int = 128, max_sentences: int = 16) -> None:
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3, got {max_len}")
        self.tokenizer, self.max_len, self.max_sentences = tokenizer, max_len, max_sentences
        self.cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if self.cls_id is None or self.sep_id is None:
            raise ValueError("ReportCollator: tokenizer has neither [CLS]/[SEP] nor BOS/EOS tokens")

    def encode(self, reports: Sequence[str]) -> Dict[str, torch.Tensor]:
        rows: List[Tuple[List[int], List[int]]] = []
        for r, text in enumerate(reports):
            sents = split_sentences(text) if isinstance(text, str) else []
            if not sents:
                raise ReportError(f"report {r} of the batch is empty or punctuation-only: {text!r}")
            ids, sid = [self.cls_id], [-1]
            for k, s in enumerate(sents[: self.max_sentences]):
                toks = self.tokenizer(s, add_special_tokens=False)["input_ids"]
                room = self.max_len - 1 - len(ids)
                ids += toks[:room]
                sid += [k] * len(toks[:room])
                if room <= len(toks):
                    break
            ids.append(self.sep_id)
            sid.append(-1)
            rows.append((ids, sid))
        L = max(len(i) for i, _ in rows)
        input_ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
        sentence_ids = torch.full((len(rows), L), -1, dtype=torch.long)
        att = torch.zeros((len(rows), L), dtype=torch.long)
        for b, (ids, sid) in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            sentence_ids[b, : len(sid)] = torch.tensor(sid)
            att[b, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": att, "sentence_ids": sentence_ids}

    def __call__(self, batch: Sequence[Tuple[torch.Tensor, str]]) -> Dict[str, torch.Tensor]:
        out = self.encode([b[1] for b in batch])
        out["ecg"] = torch.stack([b[0] for b in batch])
        return out
