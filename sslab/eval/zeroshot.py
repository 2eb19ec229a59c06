"""Zero-shot classification and cross-modal retrieval for ECG-language models (CLIP protocol,
Radford et al. 2021, Sec. 3.1.4; as evaluated in MELP, Pan et al. 2025).

* class embedding = mean over (prompt x template) text embeddings of the class, re-normalised
  ("prompt ensembling");
* score = cosine(ECG embedding, class embedding) -> macro ROC-AUC (multilabel: per class, over classes
  with both positives and negatives; multiclass: one-vs-rest) and, for multiclass, top-1 accuracy;
* retrieval: ECG->report and report->ECG recall@k over a set of pairs. ``strict`` counts only the
  paired item; ``text`` also counts any report with identical text (PTB-XL repeats
  "sinusrhythmus normales ekg" many times, which the strict protocol would call misses).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def encode_texts(objective: Any, collator: Any, texts: Sequence[str], batch_size: int = 64,
                 device: Any = "cpu") -> torch.Tensor:
    """Rhythm-level text embeddings ``[n, E]`` (L2-normalised)."""
    out = []
    for i in range(0, len(texts), batch_size):
        b = collator.encode(list(texts[i:i + batch_size]))
        out.append(objective.embed_text(b["input_ids"].to(device), b["attention_mask"].to(device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_ecgs(objective: Any, dataset: Dataset, batch_size: int = 64, device: Any = "cpu") -> torch.Tensor:
    """Rhythm-level ECG embeddings ``[n, E]`` of the signals of ``(signal, ...)`` items."""
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda b: torch.stack([x[0] for x in b]))
    for x in loader:
        out.append(objective.embed_ecg(x.to(device)).float().cpu())
    return torch.cat(out)


def class_embeddings(objective: Any, collator: Any, prompts: Mapping[str, Sequence[str]],
                     templates: Sequence[str] = ("{}",), classes: Optional[Sequence[str]] = None,
                     device: Any = "cpu") -> torch.Tensor:
    """``[C, E]``: per class, the normalised mean of its prompt x template embeddings."""
    classes = list(classes) if classes is not None else list(prompts)
    missing = [c for c in classes if not prompts.get(c)]
    if missing:
        raise ValueError(f"zero-shot: no prompts for class(es) {missing}; prompts cover {sorted(prompts)}")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"zero-shot templates must each contain '{{}}': {list(templates)}")
    embs = []
    for c in classes:
        texts = [t.format(p) for p in prompts[c] for t in templates]
        e = encode_texts(objective, collator, texts, device=device).mean(0)
        embs.append(e / e.norm().clamp_min(1e-12))
    return torch.stack(embs)


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (average ranks for ties; equals sklearn's), fast for bootstraps."""
    from scipy.stats import rankdata

    pos = np.asarray(y) > 0
    P, N = int(pos.sum()), int((~pos).sum())
    return float((rankdata(s)[pos].sum() - P * (P + 1) / 2) / (P * N))


def zero_shot_metrics(scores: np.ndarray, labels: np.ndarray, task: str, classes: Sequence[str],
                      bootstrap: int = 0, seed: int = 0) -> Dict[str, Any]:
    """Macro AUC (+ per class) of ``scores [n, C]``; ``labels`` ``[n]`` (multiclass) or ``[n, C]``.

    ``bootstrap > 0`` adds ``macro_auc_ci95``: the 2.5/97.5 % percentiles of the macro AUC over that many
    resamplings of the records with replacement (resamples where a class loses all its positives or negatives
    average over the remaining classes, as the point estimate does)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    if task == "multiclass":
        y = np.eye(len(classes))[np.asarray(labels, dtype=np.int64)]
    elif task == "multilabel":
        y = np.asarray(labels)
    else:
        raise ValueError(f"zero-shot task must be multiclass or multilabel, got {task!r}")
    per_class: Dict[str, float] = {}
    for j, c in enumerate(classes):
        if 0 < y[:, j].sum() < len(y):
            per_class[c] = float(roc_auc_score(y[:, j], scores[:, j]))
    if not per_class:
        raise ValueError("zero-shot: no class has both positive and negative examples; AUC undefined")
    out: Dict[str, Any] = {"macro_auc": float(np.mean(list(per_class.values()))), "auc_per_class": per_class,
                           "n": int(len(y))}
    if task == "multiclass":
        out["accuracy"] = float((scores.argmax(1) == np.asarray(labels)).mean())
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        macros = []
        for _ in range(bootstrap):
            i = rng.integers(0, len(y), len(y))
            aucs = [_rank_auc(y[i, j], scores[i, j]) for j in range(len(classes)) if 0 < y[i, j].sum() < len(i)]
            if aucs:
                macros.append(float(np.mean(aucs)))
        out["macro_auc_ci95"] = [float(np.percentile(macros, 2.5)), float(np.percentile(macros, 97.5))]
    return out


def recall_at_k(sim: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                groups: Optional[Sequence[Any]] = None) -> Dict[str, float]:
    """Recall@k of ``sim [n_query, n_gallery]`` where query ``i``'s match is gallery ``i`` (or, with
    ``groups``, any gallery item of the same group)."""
    sim = np.asarray(sim)
    n = sim.shape[0]
    order = np.argsort(-sim, axis=1, kind="stable")
    if groups is None:
        hit = order == np.arange(n)[:, None]
    else:
        g = np.asarray(groups)
        hit = g[order] == g[:, None]
    first = np.where(hit.any(1), hit.argmax(1), sim.shape[1])
    return {f"R@{k}": float((first < k).mean()) for k in ks}


def retrieval(ecg_emb: torch.Tensor, text_emb: torch.Tensor, reports: Optional[Sequence[str]] = None,
              ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Dict[str, float]]:
    """ECG->report and report->ECG recall@k, strict and (with ``reports``) identical-text matching."""
    sim = (ecg_emb @ text_emb.t()).numpy()
    out = {"ecg2report": recall_at_k(sim, ks), "report2ecg": recall_at_k(sim.T, ks)}
    if reports is not None:
        ids = {t: i for i, t in enumerate(dict.fromkeys(reports))}
        groups = [ids[t] for t in reports]
        out["ecg2report_text"] = recall_at_k(sim, ks, groups)
        out["report2ecg_text"] = recall_at_k(sim.T, ks, groups)
    out["n"] = {"pairs": float(len(sim)), "distinct_reports": float(len(set(reports or [])) or len(sim))}
    return out


def evaluate(objective: Any, modality: Any, split: str = "test", batch_size: int = 64,
             device: Any = "cpu", bootstrap: int = 0) -> Dict[str, Any]:
    """Zero-shot metrics and retrieval of an ``ecg_text`` modality's ``split`` with a MELP objective."""
    from sslab.datasets.ecg_text import ECGTextPairs

    objective = objective.to(device).eval()
    s = modality.split(split)
    pairs = ECGTextPairs(s.get_signal, s.reports, modality.crop, random_crop=False)
    collator = modality.collator()
    ecg = encode_ecgs(objective, pairs, batch_size, device)
    txt = encode_texts(objective, collator, s.reports, batch_size, device)
    result: Dict[str, Any] = {"retrieval": retrieval(ecg, txt, s.reports)}
    if s.labels is not None and s.classes is not None:
        zs = modality.data.zero_shot
        prompts = modality.zero_shot_prompts()
        classes = [c for c in s.classes if c in prompts] if s.task == "multilabel" else s.classes
        cls = class_embeddings(objective, collator, prompts, zs.templates, classes, device)
        scores = (ecg @ cls.t()).numpy()
        labels = s.labels
        if s.task == "multilabel":
            labels = labels[:, [s.classes.index(c) for c in classes]]
        result["zero_shot"] = zero_shot_metrics(scores, labels, s.task, classes, bootstrap=bootstrap)
    return result


_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


def report_terms(text: str, bigrams: bool = True) -> Set[str]:
    """Lowercased words (hyphenated words kept whole: ``st-t``, ``t-veränderung``) and adjacent-word bigrams."""
    words = _WORD.findall(text.lower())
    return set(words) | ({f"{a} {b}" for a, b in zip(words, words[1:])} if bigrams else set())


def class_terms(reports: Sequence[str], labels: np.ndarray, classes: Sequence[str], min_pos: int = 3,
                smoothing: float = 0.5) -> Dict[str, List[Tuple[str, float, int, int]]]:
    """Class-specific report terms (to write zero-shot prompts from TRAINING reports, never test ones).

    For class ``c`` with ``P`` positive and ``N`` negative reports, a term in ``p`` positive and ``n`` negative
    reports scores the smoothed log-odds ratio ``log((p+a)/(P-p+a)) - log((n+a)/(N-n+a))``; terms in fewer than
    ``min_pos`` positive reports are left out. Returns per class ``(term, log_odds, p, n)``, best first."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != (len(reports), len(classes)):
        raise ValueError(f"class_terms: labels must be [n_reports, n_classes] = [{len(reports)}, {len(classes)}], "
                         f"got {list(labels.shape)}")
    sets = [report_terms(r) for r in reports]
    a = smoothing
    out: Dict[str, List[Tuple[str, float, int, int]]] = {}
    for j, c in enumerate(classes):
        y = labels[:, j] > 0
        P, N = int(y.sum()), int((~y).sum())
        pos = Counter(t for s, yy in zip(sets, y) if yy for t in s)
        neg = Counter(t for s, yy in zip(sets, y) if not yy for t in s)
        scored = [(t, math.log((p + a) / (P - p + a)) - math.log((neg.get(t, 0) + a) / (N - neg.get(t, 0) + a)),
                   p, neg.get(t, 0)) for t, p in pos.items() if p >= min_pos]
        out[c] = sorted(scored, key=lambda x: (-x[1], x[0]))
    return out


def format_zero_shot(result: Mapping[str, Any]) -> str:
    """A short markdown summary of :func:`evaluate`'s result."""
    lines: List[str] = []
    if "zero_shot" in result:
        z = result["zero_shot"]
        extra = f", accuracy {z['accuracy']:.3f}" if "accuracy" in z else ""
        if "macro_auc_ci95" in z:
            extra += " [95% bootstrap CI {:.3f}-{:.3f}]".format(*z["macro_auc_ci95"])
        lines.append(f"zero-shot macro AUC {z['macro_auc']:.3f}{extra} (n={z['n']}); per class: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in z["auc_per_class"].items()))
    r = result["retrieval"]
    for key in ("ecg2report", "report2ecg", "ecg2report_text", "report2ecg_text"):
        if key in r:
            lines.append(f"{key}: " + ", ".join(f"{k} {v:.3f}" for k, v in r[key].items()))
    return "\n".join(lines)
