"""Issue 19: probes that stay meaningful on imbalanced / small data (balanced LR, balanced accuracy, AUC,
degenerate rows flagged, repeated-CV rows summarised as mean +- std)."""
import numpy as np
import pytest

from sslab.eval.probe import ProbeError, format_table, headline, linear_probe, summarize_rows


def _imbalanced(seed: int = 0, n: int = 600, minority: float = 0.1, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < minority).astype(int)
    X = rng.normal(0, 1, (n, 4)) + shift * y[:, None] * np.array([1.0, 0.5, 0.0, 0.0])
    return X[: n // 2], y[: n // 2], X[n // 2:], y[n // 2:]


def test_default_probe_is_class_balanced_and_reports_balanced_accuracy_and_auc():
    Xtr, ytr, Xte, yte = _imbalanced()
    res = linear_probe(Xtr, ytr, Xte, yte, "multiclass")
    assert res["class_weight"] == "balanced"
    assert {"balanced_accuracy", "auc", "accuracy", "macro_f1"} <= set(res)
    assert res["per_class_recall"]["1"] > 0.4  # the minority class is predicted at all
    assert headline(res) == ("auc", res["auc"])  # binary: AUC is the headline, not accuracy
    # balanced accuracy is the mean per-class recall
    assert res["balanced_accuracy"] == pytest.approx(np.mean(list(res["per_class_recall"].values())))


def test_majority_collapse_is_reported_as_degenerate_never_a_number():
    """BreastMNIST-style: unweighted LR on weak features and a 90% majority predicts one class for every
    test item; the row says so and has no accuracy (0.9 would look like a result)."""
    Xtr, ytr, Xte, yte = _imbalanced(shift=0.05)
    res = linear_probe(Xtr, ytr, Xte, yte, "multiclass", class_weight=None)
    assert res["degenerate"].startswith("one predicted class (0)")
    assert not {"accuracy", "auc", "balanced_accuracy"} & set(res)
    assert headline(res) == ("degenerate", None)
    assert "degenerate" in format_table([{"task": "t", "encoder": "random_init", **res}])
    with pytest.raises(ProbeError, match="class_weight"):
        linear_probe(Xtr, ytr, Xte, yte, "multiclass", class_weight="sqrt")


def test_constant_features_are_degenerate():
    Xtr, ytr, Xte, yte = _imbalanced()
    res = linear_probe(np.ones_like(Xtr), ytr, np.ones_like(Xte), yte, "multiclass")
    assert res["degenerate"].startswith(("constant scores", "one predicted class")) and "auc" not in res


def test_repeated_cv_rows_are_summarised_as_mean_std_and_kept_per_fold():
    rows = []
    for rep in range(2):
        for k in range(3):
            for enc, base in (("pretrained", 0.8), ("random_init", 0.6)):
                rows.append({"task": f"PTC_MR/rep{rep}/fold{k}", "encoder": enc, "kind": "multiclass",
                             "label_fraction": 1.0, "auc": base + 0.01 * k, "balanced_accuracy": base})
    rows.append({"task": "PTC_MR/rep0/fold9", "encoder": "random_init", "kind": "multiclass",
                 "label_fraction": 1.0, "degenerate": "one predicted class (0) for all 30 test items"})
    summary = summarize_rows(rows)
    assert [(r["task"], r["encoder"], r["folds"]) for r in summary] == [
        ("PTC_MR", "pretrained", 6), ("PTC_MR", "random_init", 7)]
    pre = summary[0]
    assert pre["auc_mean"] == pytest.approx(0.81) and pre["auc_std"] == pytest.approx(np.std([0.8, 0.81, 0.82] * 2))
    assert summary[1]["degenerate_folds"] == 1 and summary[1]["auc_mean"] == pytest.approx(0.61)
    table = format_table(rows)
    assert table.count("\n") == 3  # header, rule, one line per encoder: no per-fold rows
    assert "0.8100 ± 0.0082" in table and "fold" not in table.split("\n")[2]
    # plain rows (no folds) pass through unchanged
    plain = {"task": "digits", "encoder": "pretrained", "accuracy": 0.9}
    assert summarize_rows([plain]) == [plain]


def test_degenerate_table_baseline_hgb_with_few_labels():
    """HistGB at ~10% labels on a small table cannot make one split (min_samples_leaf=20) and predicts the
    prior for every row: AUC 0.500 was reported as a number."""
    from sslab.datasets.tables import load_sklearn_table
    from sslab.eval.table_baselines import sklearn_baselines, split_indices

    t = load_sklearn_table("breast_cancer")
    tr, te = split_indices(t, 0.3, seed=0)
    res = sklearn_baselines(t.subset(tr[:30]), t.subset(te))
    assert res["hgb"] == {"degenerate": res["hgb"]["degenerate"]} and "constant scores" in res["hgb"]["degenerate"]
    assert res["linear"]["auc"] > 0.8
