"""Frozen-feature evaluation: linear probe (scikit-learn) and weighted kNN.

Linear probe: standardize, then logistic regression (multiclass: accuracy + macro-F1; multilabel:
one-vs-rest, macro ROC-AUC over classes present in both splits) or ridge (regression: R^2), with an
optional label fraction (stratified where possible). kNN: cosine similarity, votes weighted by
``exp(sim / T)`` over the k nearest training points (Wu et al. 2018; DINO's kNN evaluation).
"""
from __future__ import annotations

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


def linear_probe(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                 task: str = "multiclass", C: float = 1.0, max_iter: int = 2000,
                 label_fraction: float = 1.0, seed: int = 0,
                 class_weight: Optional[str] = None) -> Dict[str, Any]:
    """Fit a linear model on frozen features and score it on the test split.

    ``class_weight="balanced"`` reweights classes inversely to their frequency (imbalanced labels,
    e.g. AAMI beat classes); multiclass results include per-class recall.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import accuracy_score, f1_score, r2_score, roc_auc_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task not in TASKS:
        raise ProbeError(f"task must be one of {TASKS}, got {task!r}")
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
            result["r2"] = float(r2_score(y_test, model.predict(X_test)))
            return result
        if task == "multiclass":
            if len(np.unique(ytr)) < 2:
                raise ProbeError("multiclass probe needs at least two classes in the training labels")
            model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter,
                                                                       class_weight=class_weight))
            model.fit(Xtr, ytr)
            pred = model.predict(X_test)
            result["accuracy"] = float(accuracy_score(y_test, pred))
            result["macro_f1"] = float(f1_score(y_test, pred, average="macro"))
            result["per_class_recall"] = {str(c): float((pred[y_test == c] == c).mean())
                                          for c in np.unique(y_test)}
            if len(np.unique(ytr)) == 2 and len(np.unique(y_test)) == 2:  # binary: also ROC-AUC
                result["auc"] = float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]))
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
                     progress: bool = False, desc: str = "features") -> Tuple[np.ndarray, np.ndarray]:
    """Run ``embed(inputs) -> [B, D]`` over a dataset of ``(inputs, label)`` pairs."""
    from sslab.core.data import move_to_device

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or default_collate)
    feats, labels = [], []
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=desc, leave=False)
    for inputs, y in it:
        z = embed(move_to_device(inputs, device))
        feats.append(z.float().cpu().numpy())
        labels.append(y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y))
    return np.concatenate(feats), np.concatenate(labels)


def headline(result: Dict[str, Any]) -> Tuple[str, float]:
    """The main score of a probe result (name, value)."""
    for key in ("macro_auc", "accuracy", "r2"):
        if key in result:
            return key, float(result[key])
    raise KeyError("no score in probe result")


def format_table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table of probe rows (``task``, ``encoder``, metrics...)."""
    if not rows:
        return "(no probe results)"
    cols: List[str] = []
    for r in rows:
        for c in r:
            if c not in cols:
                cols.append(c)
    def fmt(v: Any) -> str:
        if isinstance(v, dict):
            return " ".join(f"{k}:{x:.2f}" if isinstance(x, float) else f"{k}:{x}" for k, x in v.items())
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
