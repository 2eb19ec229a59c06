"""Repeated K-fold cross-validation for small probe sets (``probe.cv: {folds, repeats, seed}``).

The probe's train and test items are pooled and re-split ``repeats`` times into ``folds`` folds
(stratified for multiclass; grouped when the task gives ``groups``, e.g. speech chunks of one utterance,
so a group never straddles train and test). The splits depend only on the labels, groups and
``cv.seed`` -- not on the pretraining seed -- so every encoder, floor and seed is scored on identical
splits (a paired design). Per-fold rows go to ``probe.json["folds"]``; the table row of each
(task, encoder, label fraction) holds the mean over splits and ``<metric>_std``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

CV_KEYS = ("folds", "repeats", "seed")


def check_cv(cv: Dict[str, Any]) -> Tuple[int, int, int]:
    """``(folds, repeats, seed)`` of a ``probe.cv`` dict; one-line error on bad keys/values."""
    bad = sorted(set(cv) - set(CV_KEYS))
    if bad:
        raise ValueError(f"probe.cv: unknown key(s) {bad}; expected {list(CV_KEYS)}")
    folds, repeats, seed = int(cv.get("folds", 5)), int(cv.get("repeats", 1)), int(cv.get("seed", 0))
    if folds < 2 or repeats < 1:
        raise ValueError(f"probe.cv: need folds >= 2 and repeats >= 1, got folds={folds} repeats={repeats}")
    return folds, repeats, seed


def cv_splits(y: np.ndarray, kind: str, folds: int, repeats: int, seed: int = 0,
              groups: Optional[Sequence[Any]] = None) -> List[Tuple[int, np.ndarray, np.ndarray]]:
    """``[(repeat, train_idx, test_idx), ...]``, ``repeats * folds`` splits of ``range(len(y))``."""
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    idx = np.zeros(len(y))
    out: List[Tuple[int, np.ndarray, np.ndarray]] = []
    for r in range(repeats):
        rs = seed * 1000 + r
        if groups is not None:
            g = np.asarray(groups)
            if kind == "multiclass":
                it = StratifiedGroupKFold(folds, shuffle=True, random_state=rs).split(idx, y, g)
            else:
                from sklearn.model_selection import GroupKFold

                it = GroupKFold(folds).split(idx, y, g)
        elif kind == "multiclass":
            counts = np.unique(y, return_counts=True)[1]
            if counts.min() < folds:
                raise ValueError(f"probe.cv: a class has {counts.min()} item(s), fewer than folds={folds}")
            it = StratifiedKFold(folds, shuffle=True, random_state=rs).split(idx, y)
        else:
            it = KFold(folds, shuffle=True, random_state=rs).split(idx)
        out += [(r, np.asarray(tr), np.asarray(te)) for tr, te in it]
    return out


def summarize(fold_rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from per-fold rows: numeric metrics -> mean over splits and ``<key>_std``."""
    first = fold_rows[0]
    row: Dict[str, Any] = {k: v for k, v in first.items() if isinstance(v, str) and k != "degenerate"}
    row["label_fraction"] = first.get("label_fraction", 1.0)
    skip = {"fold", "repeat", "label_fraction", "n_train", "n_test", "k", "classes_total", "classes_scored"}
    keys = [k for k, v in first.items() if isinstance(v, float) and not isinstance(v, bool) and k not in skip]
    for k in keys:
        vals = [float(r[k]) for r in fold_rows if k in r]
        row[k] = float(np.mean(vals))
        row[f"{k}_std"] = float(np.std(vals))
    degenerate = [r for r in fold_rows if r.get("degenerate")]
    if degenerate:
        row["degenerate_folds"] = len(degenerate)
    row["n_train"] = int(np.mean([r.get("n_train", 0) for r in fold_rows]))
    row["n_test"] = int(np.mean([r.get("n_test", 0) for r in fold_rows]))
    row["cv_splits"] = len(fold_rows)
    return row
