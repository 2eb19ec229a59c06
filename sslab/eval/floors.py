"""Classical floors: what a probe task scores with no pretraining at all.

A modality's ``floor_features(task)`` returns ``{name: floor}`` where a floor is either a
``(train_features, test_features)`` pair, scored by the same linear probe as the encoders, or a
:class:`Floor` with its own ``scorer`` (e.g. gradient boosting on the raw table, which needs a model,
not features). Features are aligned with ``task.train`` / ``task.test`` item order, so the floor sees
exactly the records, labels, label fractions and CV splits the encoders see. Rows carry
``encoder = "floor:<name>"``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Union

import numpy as np

#: ``scorer(X_train, y_train, X_test, y_test, kind, seed) -> metrics`` (same keys as the linear probe)
Scorer = Callable[[Any, np.ndarray, Any, np.ndarray, str, int], Dict[str, Any]]


class Floor(NamedTuple):
    """Floor features of the probe train/test items; ``scorer=None``: the standard linear probe."""

    train: Any  # [N_train, F] array, or anything ``take``/``concat`` handle (a pandas DataFrame)
    test: Any
    scorer: Optional[Scorer] = None


FloorSpec = Union[Floor, Sequence[Any]]


def as_floor(name: str, value: FloorSpec) -> Floor:
    """A ``Floor`` from a ``(train, test)`` pair or a ``Floor``; one-line error otherwise."""
    if isinstance(value, Floor):
        return value
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise ValueError(f"floor {name!r}: expected (train_features, test_features[, scorer]), got {type(value).__name__}")
    return Floor(*value)


def take(X: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of an array or a DataFrame."""
    return X.iloc[idx] if hasattr(X, "iloc") else np.asarray(X)[idx]


def concat(a: Any, b: Any) -> Any:
    """Stack train and test features (arrays or DataFrames) for cross-validation."""
    if hasattr(a, "iloc"):
        import pandas as pd

        return pd.concat([a, b], ignore_index=True)
    return np.concatenate([np.asarray(a), np.asarray(b)])


def n_rows(X: Any) -> int:
    return len(X)


def classification_metrics(y_true: np.ndarray, pred: np.ndarray, proba: Optional[np.ndarray],
                           classes: np.ndarray) -> Dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1 (+ ROC-AUC for two classes) of predictions."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    out: Dict[str, Any] = {"accuracy": float(accuracy_score(y_true, pred)),
                           "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
                           "macro_f1": float(f1_score(y_true, pred, average="macro"))}
    if proba is not None and len(classes) == 2 and len(np.unique(y_true)) == 2:
        out["auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    return out


def model_scorer(make_model: Callable[[str, int], Any]) -> Scorer:
    """A scorer fitting ``make_model(kind, seed)`` (an sklearn estimator) on the raw floor features."""

    def score(Xtr: Any, ytr: np.ndarray, Xte: Any, yte: np.ndarray, kind: str, seed: int) -> Dict[str, Any]:
        from sklearn.metrics import r2_score

        model = make_model(kind, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xtr, ytr)
            if kind == "regression":
                return {"r2": float(r2_score(yte, model.predict(Xte)))}
            if kind != "multiclass":
                raise ValueError(f"model floor: {kind} tasks are not supported (multiclass / regression)")
            proba = model.predict_proba(Xte) if hasattr(model, "predict_proba") else None
            return classification_metrics(yte, model.predict(Xte), proba, np.unique(ytr))

    return score


def mean_std_features(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``[N, F]``: per item, the mean and std over the last axis of a ``[C, T]`` array, concatenated."""
    return np.stack([np.concatenate([a.mean(-1), a.std(-1)]) for a in arrays]) if arrays else np.zeros((0, 0))


def warm_floor_cache(experiment: str, overrides: Sequence[str] = ()) -> None:
    """Compute every probe task's floors once, so that caching floors (ECG's neurokit2 features) are on
    disk when the probe runs; ``sslab demo`` runs this in a second process beside pretraining."""
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality
    from sslab.core.plugins import load_all

    load_all()
    cfg = load_experiment(experiment, [*overrides, "train.progress=false"])
    modality = build_modality(cfg)
    for task in modality.probe_tasks():
        modality.floor_features(task)
