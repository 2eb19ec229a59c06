"""Frozen-feature evaluation: linear probe (scikit-learn) and weighted kNN.

Linear probe: standardize, then class-balanced logistic regression (multiclass: accuracy, balanced
accuracy, macro-F1, ROC-AUC; multilabel: one-vs-rest, macro ROC-AUC over classes present in both splits)
or ridge (regression: R^2), with an optional label fraction (stratified where possible). Degenerate probes
(one predicted class, constant scores) are flagged, not scored. kNN: cosine similarity, votes weighted by
``exp(sim / T)`` over the k nearest training points (Wu et al. 2018; DINO's kNN evaluation).
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

TASKS = ("multiclass", "multilabel", "regression")


class ProbeError(ValueError):
    """Features/labels that cannot be probed (wrong shapes, NaNs, one class)."""


def _check(X: np.ndarray, y: np.ndarray, split: str) -> None:
    if X.ndim != 2:
        raise ProbeError(f"{split} features must be 2-D [N, D], got shape {X.shape}")
    if len(X) != len(y):
        raise ProbeError(f"{split}: {len(X)} feature rows but {len(y)} labels")
    if len(X) == 0:
        raise ProbeError(f"{split}: no samples")
    if not np.isfinite(X).all():
        raise ProbeError(f"{split} features contain NaN/inf ({int((~np.isfinite(X)).sum())} values)")


def subsample(y: np.ndarray, fraction: float, task: str, seed: int = 0) -> np.ndarray:
    """Indices of a ``fraction`` of the training set; stratified for multiclass (>= 1 per class)."""
    if not 0 < fraction <= 1:
        raise ProbeError(f"label fraction must be in (0, 1], got {fraction}")
    n = len(y)
    rng = np.random.default_rng(seed)
    if fraction == 1:
        return np.arange(n)
    if task == "multiclass":
        idx: List[int] = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            k = max(1, int(round(fraction * len(members))))
            idx.extend(rng.choice(members, size=k, replace=False).tolist())
        return np.sort(np.array(idx))
    k = max(2, int(round(fraction * n)))
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


CLASS_WEIGHTS = ("balanced", None)


def _class_weight(value: Optional[str]) -> Optional[str]:
    """``"balanced"`` (default) or off (``None``/``"none"``; YAML ``null``)."""
    if value is None or str(value).lower() in ("none", "null", "off", "false"):
        return None
    if value != "balanced":
        raise ProbeError(f"probe.class_weight must be 'balanced' or none, got {value!r}")
    return "balanced"


def degenerate_reason(pred: np.ndarray, scores: Optional[np.ndarray] = None, tol: float = 1e-12) -> Optional[str]:
    """Why a classifier's test output says nothing (one predicted class, constant scores), else ``None``."""
    pred = np.asarray(pred)
    if len(pred) > 1 and len(np.unique(pred)) == 1:
        return f"one predicted class ({pred[0]}) for all {len(pred)} test items"
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if len(s) > 1 and np.all(np.ptp(s, axis=0) <= tol):
            return f"constant scores for all {len(s)} test items"
    return None


def _classification_scores(y_test: np.ndarray, pred: np.ndarray, proba: np.ndarray,
                           classes: np.ndarray) -> Dict[str, Any]:
    """accuracy, balanced accuracy, macro-F1, per-class recall and ROC-AUC (binary: P(class 1); more classes:
    one-vs-rest macro average over the classes present in the test split)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    out: Dict[str, Any] = {
        "accuracy": float(accuracy_score(y_test, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro")),
        "per_class_recall": {str(c): float((pred[y_test == c] == c).mean()) for c in np.unique(y_test)},
    }
    present = np.unique(y_test)
    col = {c: j for j, c in enumerate(classes)}
    if len(present) >= 2 and all(c in col for c in present):
        if len(classes) == 2 and len(present) == 2:
            out["auc"] = float(roc_auc_score(y_test, proba[:, 1]))
        elif len(classes) > 2:
            out["auc"] = float(np.mean([roc_auc_score(y_test == c, proba[:, col[c]]) for c in present]))
    return out


def linear_probe(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 task: str = "multiclass", C: float = 1.0, max_iter: int = 2000,
                 label_fraction: float = 1.0, seed: int = 0,
                 class_weight: Optional[str] = "balanced") -> Dict[str, Any]:
    """Fit a linear model on frozen features and score it on the test split.

    Classification uses class-balanced logistic regression by default (``class_weight="balanced"``:
    sample weights n / (K n_c), King & Zeng 2001; ``None`` turns it off), so a majority class does not
    swallow the probe on imbalanced data. Multiclass rows carry accuracy, balanced accuracy (mean
    per-class recall), macro-F1, per-class recall and ROC-AUC (binary, or one-vs-rest macro). A probe whose
    test predictions are one class, or whose scores are constant, is returned with ``"degenerate": why``
    and no metric values (a number would read as a result).
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task not in TASKS:
        raise ProbeError(f"task must be one of {TASKS}, got {task!r}")
    class_weight = _class_weight(class_weight)
    X_train, X_test = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    _check(X_train, y_train, "train")
    _check(X_test, y_test, "test")
    idx = subsample(y_train, label_fraction, task, seed)
    Xtr, ytr = X_train[idx], y_train[idx]
    result: Dict[str, Any] = {"task": task, "n_train": int(len(idx)), "n_test": int(len(y_test)),
                              "label_fraction": label_fraction}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; scores are what matter here
        if task == "regression":
            model = make_pipeline(StandardScaler(), Ridge(alpha=1.0 / C))
            model.fit(Xtr, ytr)
            pred = model.predict(X_test)
            if len(pred) > 1 and np.ptp(pred) <= 1e-12:
                result["degenerate"] = f"constant predictions for all {len(pred)} test items"
                return result
            result["r2"] = float(r2_score(y_test, pred))
            return result
        if task == "multiclass":
            if len(np.unique(ytr)) < 2:
                raise ProbeError("multiclass probe needs at least two classes in the training labels")
            model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter,
                                                                       class_weight=class_weight))
            model.fit(Xtr, ytr)
            pred = model.predict(X_test)
            proba = model.predict_proba(X_test)
            result["class_weight"] = class_weight or "none"
            why = degenerate_reason(pred, proba)
            if why is not None:
                result["degenerate"] = why
                return result
            result.update(_classification_scores(y_test, pred, proba, model.classes_))
            return result
        # multilabel: y is [N, K] of 0/1; classes constant in train or test cannot be scored
        if ytr.ndim != 2:
            raise ProbeError(f"multilabel labels must be [N, K], got shape {ytr.shape}")
        usable = [k for k in range(ytr.shape[1])
                  if 0 < ytr[:, k].sum() < len(ytr) and 0 < y_test[:, k].sum() < len(y_test)]
        if not usable:
            raise ProbeError("multilabel probe: no class has both positives and negatives in train and test")
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(
            LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight)))
        model.fit(Xtr, ytr[:, usable])
        scores = model.predict_proba(X_test)
        result["class_weight"] = class_weight or "none"
        flat = [j for j in range(scores.shape[1]) if np.ptp(scores[:, j]) <= 1e-12]
        if len(flat) == scores.shape[1]:
            result["degenerate"] = f"constant scores for all {len(scores)} test items in every class"
            return result
        aucs = [roc_auc_score(y_test[:, k], scores[:, j]) for j, k in enumerate(usable)]
        result["macro_auc"] = float(np.mean(aucs))
        result["classes_scored"] = len(usable)
        result["classes_total"] = int(ytr.shape[1])
        return result


def knn_probe(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
              k: int = 20, temperature: float = 0.07, standardize: bool = False) -> Dict[str, Any]:
    """Temperature-weighted cosine kNN classification accuracy (multiclass labels; Wu et al. 2018, as
    used by DINO). ``standardize`` z-scores both sets with the *training* mean and std first. MLM
    features share a large common direction (anisotropy), and plain cosine similarity then compares
    mostly that direction; the linear probe standardises anyway."""
    X_train, X_test = np.asarray(X_train, dtype=np.float32), np.asarray(X_test, dtype=np.float32)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    _check(X_train, y_train, "train")
    _check(X_test, y_test, "test")
    if y_train.ndim != 1:
        raise ProbeError("kNN probe needs single-label (multiclass) targets")
    if standardize:
        mu, sd = X_train.mean(0), X_train.std(0)
        sd = np.where(sd > 1e-8, sd, 1.0).astype(np.float32)  # constant features become 0, not NaN
        X_train, X_test = (X_train - mu) / sd, (X_test - mu) / sd
    classes, y_idx = np.unique(y_train, return_inverse=True)
    tr = torch.nn.functional.normalize(torch.from_numpy(X_train), dim=1)
    te = torch.nn.functional.normalize(torch.from_numpy(X_test), dim=1)
    k = min(k, len(tr))
    sims = te @ tr.T
    top, idx = sims.topk(k, dim=1)
    weights = (top / temperature).exp()
    votes = torch.zeros(len(te), len(classes))
    votes.scatter_add_(1, torch.from_numpy(y_idx)[idx], weights)
    pred = classes[votes.argmax(1).numpy()]
    return {"knn_accuracy": float((pred == y_test).mean()), "k": k, "temperature": temperature,
            "knn_standardized": standardize}


@torch.no_grad()
def extract_features(embed: Callable[[Any], torch.Tensor], dataset: Dataset,
                     collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None,
                     device: torch.device = torch.device("cpu"), batch_size: int = 64,
                     progress: Optional[bool] = None, desc: str = "features") -> Tuple[np.ndarray, np.ndarray]:
    """Run ``embed(inputs) -> [B, D]`` over a dataset of ``(inputs, label)`` pairs."""
    from sslab.core.data import move_to_device
    from sslab.core.progress import show_progress

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or default_collate)
    feats, labels = [], []
    it = loader
    if show_progress(progress):
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=desc, leave=False)
    for inputs, y in it:
        z = embed(move_to_device(inputs, device))
        feats.append(z.float().cpu().numpy())
        labels.append(y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


HEADLINE_KEYS = ("macro_auc", "auc", "balanced_accuracy", "accuracy", "r2")
"""Headline metric, first present wins: multilabel macro AUC, binary/one-vs-rest AUC, balanced accuracy
(chance = 1/K whatever the class balance), plain accuracy (older rows), R^2."""

METRIC_KEYS = ("auc", "balanced_accuracy", "accuracy", "macro_f1", "macro_auc", "r2", "knn_accuracy")
"""Metrics shown (as mean +- std across folds/repeats) by :func:`format_table`."""


def headline(result: Dict[str, Any]) -> Tuple[str, Optional[float]]:
    """The main score of a probe row ``(name, value)``; a degenerate row's value is ``None`` (never a number)."""
    if "degenerate" in result:
        return "degenerate", None
    for key in HEADLINE_KEYS:
        if key in result and result[key] is not None:
            return key, float(result[key])
    raise KeyError("no score in probe result")


_FOLD = re.compile(r"^(?P<base>.*?)/(?:fold|rep|repeat)\d+(?:/(?:fold|rep|repeat)\d+)?$")


def group_key(row: Dict[str, Any]) -> Tuple[str, str, float]:
    """(task without its fold/repeat suffix, encoder, label fraction): the unit repeated-CV rows summarise.

    Fold rows are recognised by a ``task`` ending in ``/fold<k>`` (``/rep<r>/fold<k>``) or by ``fold`` /
    ``repeat`` keys with the plain task name."""
    task = str(row.get("task", ""))
    m = _FOLD.match(task)
    base = m.group("base") if m else task
    return base, str(row.get("encoder", "")), float(row.get("label_fraction", 1.0))


def is_fold_row(row: Dict[str, Any]) -> bool:
    return "fold" in row or "repeat" in row or bool(_FOLD.match(str(row.get("task", ""))))


def summarize_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Collapse fold/repeat rows into one row per (task, encoder, label fraction): ``<metric>_mean``,
    ``<metric>_std`` (population std over folds) and ``folds``; degenerate folds are counted
    (``degenerate_folds``) and left out of the means. Rows that are not folds pass through unchanged."""
    groups: Dict[Tuple[str, str, float], List[Dict[str, Any]]] = {}
    order: List[Any] = []
    for r in rows:
        if not is_fold_row(r):
            order.append(r)
            continue
        key = group_key(r)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    out: List[Dict[str, Any]] = []
    for item in order:
        if isinstance(item, dict):
            out.append(item)
            continue
        members = groups[item]
        task, enc, frac = item
        summary: Dict[str, Any] = {"task": task, "encoder": enc, "label_fraction": frac, "folds": len(members)}
        if "kind" in members[0]:
            summary["kind"] = members[0]["kind"]
        ok = [m for m in members if "degenerate" not in m]
        bad = [m for m in members if "degenerate" in m]
        if bad:
            summary["degenerate_folds"] = len(bad)
        for key in METRIC_KEYS:
            vals = [float(m[key]) for m in ok if m.get(key) is not None]
            if vals:
                summary[f"{key}_mean"] = float(np.mean(vals))
                summary[f"{key}_std"] = float(np.std(vals))
        if not ok:
            summary["degenerate"] = f"all {len(members)} folds degenerate ({bad[0]['degenerate']})"
        out.append(summary)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return " ".join(f"{k}:{x:.2f}" if isinstance(x, float) else f"{k}:{x}" for k, x in v.items())
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table of probe rows (``task``, ``encoder``, metrics...).

    Fold / repeated-CV rows are summarised as ``mean ± std`` per (task, encoder, label fraction), with the
    fold count (:func:`summarize_rows`); the per-fold rows stay in ``probe.json``. Degenerate rows show
    ``degenerate: <why>`` instead of their metrics."""
    if not rows:
        return "(no probe results)"
    shown = summarize_rows(rows)
    cols: List[str] = []
    for r in shown:
        for c in r:
            name = c[:-5] if c.endswith("_mean") else c
            if c.endswith("_std") or name in cols:
                continue
            cols.append(name)
    if any("degenerate" in r for r in shown) and "degenerate" in cols:
        cols.remove("degenerate")
        cols.append("degenerate")

    def cell(r: Dict[str, Any], c: str) -> str:
        if f"{c}_mean" in r:
            return f"{r[f'{c}_mean']:.4f} ± {r[f'{c}_std']:.4f}"
        if c in METRIC_KEYS and "degenerate" in r:
            return "degenerate"
        return _fmt(r.get(c, ""))

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in shown]
    return "\n".join(lines)
