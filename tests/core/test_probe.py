import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sslab.eval.probe import ProbeError, knn_probe, linear_probe, subsample


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return train_test_split(d.data, d.target, test_size=0.3, random_state=0, stratify=d.target)


def test_linear_probe_on_raw_digits(digits):
    Xtr, Xte, ytr, yte = digits
    res = linear_probe(Xtr, ytr, Xte, yte, "multiclass")
    assert res["accuracy"] >= 0.9 and res["macro_f1"] >= 0.9


def test_knn_on_raw_digits(digits):
    Xtr, Xte, ytr, yte = digits
    res = knn_probe(Xtr, ytr, Xte, yte, k=10)
    assert res["knn_accuracy"] >= 0.9
    # random labels give chance-level kNN: the probe is not trivially high
    rng = np.random.default_rng(0)
    assert knn_probe(Xtr, rng.permutation(ytr), Xte, yte)["knn_accuracy"] < 0.3


def test_knn_standardize_removes_rogue_dimensions_that_defeat_cosine():
    """Anisotropic features (a few "rogue" dimensions with a large mean and variance unrelated to the
    class, as in MLM encoders; Timkey & van Schijndel 2021): plain cosine kNN mostly compares the rogue
    dimensions; z-scoring with the train statistics recovers the class signal."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    signal = 2.0 * np.eye(4)[y] + rng.normal(0, 0.3, (len(y), 4))
    rogue = 40.0 + rng.normal(0, 30.0, (len(y), 2))
    constant = np.full((len(y), 1), 7.0)  # a constant feature must not give NaN
    X = np.concatenate([signal, rogue, constant], 1)
    tr, te = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    plain = knn_probe(X[tr], y[tr], X[te], y[te], k=10)
    std = knn_probe(X[tr], y[tr], X[te], y[te], k=10, standardize=True)
    assert plain["knn_accuracy"] < 0.5 and std["knn_accuracy"] > 0.9 and std["knn_standardized"]
    # the statistics come from the training split only: a shifted test set is not re-centred
    shifted = knn_probe(X[tr], y[tr], X[te] + np.array([0, 0, 0, 0, 200.0, 0, 0]), y[te], k=10, standardize=True)
    assert shifted["knn_accuracy"] < std["knn_accuracy"]


def test_label_fraction_is_stratified_and_smaller(digits):
    Xtr, Xte, ytr, yte = digits
    idx = subsample(ytr, 0.1, "multiclass")
    assert set(ytr[idx]) == set(ytr) and abs(len(idx) - 0.1 * len(ytr)) <= 10
    full = linear_probe(Xtr, ytr, Xte, yte, "multiclass")
    few = linear_probe(Xtr, ytr, Xte, yte, "multiclass", label_fraction=0.01)
    assert few["n_train"] < full["n_train"] and few["accuracy"] < full["accuracy"]


def test_multilabel_and_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0.5, np.zeros(400, bool)], 1).astype(int)
    res = linear_probe(X[:300], Y[:300], X[300:], Y[300:], "multilabel")
    assert res["macro_auc"] > 0.95 and res["classes_scored"] == 2 and res["classes_total"] == 3
    y = X @ np.array([1.0, -2.0, 0.0, 0.5, 0.0]) + 0.01 * rng.normal(size=400)
    assert linear_probe(X[:300], y[:300], X[300:], y[300:], "regression")["r2"] > 0.99


def test_bad_inputs_are_explicit():
    X = np.zeros((10, 3))
    with pytest.raises(ProbeError, match="10 feature rows but 9 labels"):
        linear_probe(X, np.zeros(9), X, np.zeros(10), "multiclass")
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ProbeError, match="NaN"):
        linear_probe(Xn, np.arange(10) % 2, X, np.arange(10) % 2, "multiclass")
    with pytest.raises(ProbeError, match="at least two classes"):
        linear_probe(X, np.zeros(10), X, np.zeros(10), "multiclass")
    with pytest.raises(ProbeError, match="task must be one of"):
        linear_probe(X, np.zeros(10), X, np.zeros(10), "ranking")


def test_binary_multiclass_also_reports_auc(digits):
    Xtr, Xte, ytr, yte = digits
    res = linear_probe(Xtr, ytr % 2, Xte, yte % 2, "multiclass")
    assert 0.9 < res["auc"] <= 1.0
    multi = linear_probe(Xtr, ytr, Xte, yte, "multiclass")  # 10 classes: one-vs-rest macro AUC
    assert 0.95 < multi["auc"] <= 1.0 and multi["balanced_accuracy"] > 0.9


def test_balanced_class_weight_recovers_a_rare_class():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (980, 2)), rng.normal(1.5, 1, (20, 2))])
    y = np.array([0] * 980 + [1] * 20)
    idx = rng.permutation(1000)
    X, y = X[idx], y[idx]
    plain = linear_probe(X[:700], y[:700], X[700:], y[700:], "multiclass", class_weight=None)
    balanced = linear_probe(X[:700], y[:700], X[700:], y[700:], "multiclass")  # balanced is the default
    assert balanced["class_weight"] == "balanced" and plain["class_weight"] == "none"
    assert balanced["per_class_recall"]["1"] > plain["per_class_recall"]["1"]
    assert set(plain["per_class_recall"]) == {"0", "1"}
