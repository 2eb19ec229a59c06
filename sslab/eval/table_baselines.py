"""Side-by-side scikit-learn baselines and metrics for table tasks (same split as the TabUnit runs).

* ``linear``: logistic regression (classification) / ridge (regression) on median-imputed, standardised
  numeric columns (+ missing indicators) and one-hot categorical / boolean / text columns;
* ``hgb``: HistGradientBoosting with native categorical support (ordinal-coded categories, NaN kept).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

from sslab.datasets.tables import Table, TableError


def split_indices(table: Table, test_fraction: float = 0.3, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Train/test row indices, stratified by class for classification targets."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise TableError(f"test_fraction must be in (0, 1), got {test_fraction}")
    y, _ = table.labels()
    strat = y if table.schema.task != "regression" else None
    tr, te = train_test_split(np.arange(len(table)), test_size=test_fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(te)


def _degenerate(scores: np.ndarray, task: str) -> Optional[str]:
    """Why a baseline's test output carries no information (constant scores / one predicted class)."""
    from sslab.eval.probe import degenerate_reason

    if len(scores) < 2:
        return None
    if task == "regression":
        return f"constant predictions for all {len(scores)} test rows" if np.ptp(scores) <= 1e-12 else None
    if task == "binary":
        if np.ptp(scores) <= 1e-12:
            return f"constant scores ({float(scores[0]):.3f}) for all {len(scores)} test rows"
        return degenerate_reason((scores > 0.5).astype(int))
    return degenerate_reason(scores.argmax(1), scores)


def table_metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> Dict[str, Any]:
    """binary: AUC + accuracy (scores = P(class 1)); multiclass: accuracy + macro F1 (scores [N, K]);
    regression: R² + RMSE. Constant scores or a single predicted class give ``{"degenerate": why}``
    instead (e.g. HistGB with too few labelled rows to make one split predicts the prior for every row:
    AUC 0.500 would read as a result)."""
    from sklearn.metrics import accuracy_score, f1_score, r2_score, roc_auc_score

    y_true, scores = np.asarray(y_true), np.asarray(scores)
    why = _degenerate(scores, task)
    if why is not None:
        return {"degenerate": why}
    if task == "regression":
        return {"r2": float(r2_score(y_true, scores)), "rmse": float(np.sqrt(np.mean((y_true - scores) ** 2)))}
    if task == "binary":
        return {"auc": float(roc_auc_score(y_true, scores)), "accuracy": float(accuracy_score(y_true, scores > 0.5))}
    pred = scores.argmax(1)
    return {"accuracy": float(accuracy_score(y_true, pred)), "macro_f1": float(f1_score(y_true, pred, average="macro"))}


def _frames(train: Table, test: Table) -> Tuple[Any, Any, list, list]:
    num = [c.name for c in train.schema.columns if c.type == "numeric"]
    cat = [c.name for c in train.schema.columns if c.type != "numeric"]
    if test.schema.names != train.schema.names:
        raise TableError(f"train/test column mismatch: {train.schema.names} vs {test.schema.names}")
    return train.frame, test.frame, num, cat


def _linear_pipeline(num: list, cat: list, task: str, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), num),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>"),
                              OneHotEncoder(handle_unknown="ignore")), cat),
    ])
    model = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=2000, C=1.0)
    return make_pipeline(pre, model)


def _hgb_pipeline(num: list, cat: list, task: str, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    pre = ColumnTransformer([
        ("num", "passthrough", num),
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                               encoded_missing_value=np.nan), cat),
    ])
    cat_mask = [False] * len(num) + [True] * len(cat)
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return make_pipeline(pre, cls(categorical_features=cat_mask, random_state=seed))


BASELINES = {"linear": _linear_pipeline, "hgb": _hgb_pipeline}


def sklearn_baselines(train: Table, test: Table, seed: int = 0,
                      names: Optional[Tuple[str, ...]] = None) -> Dict[str, Dict[str, Any]]:
    """Fit each baseline on ``train`` and score it on ``test`` with :func:`table_metrics`."""
    Xtr, Xte, num, cat = _frames(train, test)
    ytr, classes = train.labels()
    yte, classes_te = test.labels()
    task = train.schema.task or "multiclass"
    if task != "regression" and classes != classes_te:
        # labels() indexes the classes present; map the test labels onto the training classes
        index = {c: i for i, c in enumerate(classes)}
        yte = np.array([index.get(classes_te[i], -1) for i in yte])
    Xtr = Xtr.copy()
    Xte = Xte.copy()
    for c in cat:  # sklearn wants one dtype per categorical column; None -> NaN handled by imputer/encoder
        Xtr[c] = Xtr[c].astype(object).where(Xtr[c].notna(), np.nan)
        Xte[c] = Xte[c].astype(object).where(Xte[c].notna(), np.nan)
    out: Dict[str, Dict[str, Any]] = {}
    for name in names or tuple(BASELINES):
        model = BASELINES[name](num, cat, task, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xtr, ytr)
            if task == "regression":
                scores = model.predict(Xte)
            elif task == "binary":
                scores = model.predict_proba(Xte)[:, 1]
            else:
                scores = model.predict_proba(Xte)
        out[name] = table_metrics(yte, scores, task)
    return out
