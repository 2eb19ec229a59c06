"""Issue 19, vector modality: pretrain on one source, probe on another (data.probe); refusal up front."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from sslab.core.config import ConfigError, load_experiment
from sslab.run import pretrain, probe

BASE = {"modality": "vector", "seed": 0, "name": "v",
        "encoder": {"name": "mlp", "in_dim": 64, "dim": 8}, "objective": {"name": "masked_feature", "in_dim": 64},
        "train": {"steps": 3, "batch_size": 32, "progress": False}, "optim": {"warmup_steps": 1}}


def _csv(path, n_features, n=200, seed=0):
    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(d.target), n, replace=False)
    X = d.data[idx, :n_features] + rng.normal(0, 0.5, (n, n_features))  # other vectors, other noise
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(n_features)])
    df["digit"] = d.target[idx] % 2  # a different (binary) task
    df.to_csv(path, index=False)
    return path


def test_pretrain_on_digits_probe_on_other_csv(tmp_path):
    csv = _csv(tmp_path / "other.csv", 64)
    cfg = load_experiment(base={**BASE, "output_dir": str(tmp_path),
                                "data": {"source": "digits",
                                         "probe": {"source": "csv_vectors", "path": str(csv), "label_column": "digit"}}})
    run = pretrain(cfg)
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"csv_vectors"}
    assert all(r["n_train"] + r["n_test"] == 200 and "auc" in r for r in rows)  # binary: AUC reported
    saved = json.loads((run / "probe.json").read_text())
    assert saved["rows"][0]["kind"] == "multiclass"


def test_probe_vectors_of_another_width_are_refused_before_pretraining(tmp_path):
    csv = _csv(tmp_path / "narrow.csv", 10)
    cfg = load_experiment(base={**BASE, "output_dir": str(tmp_path),
                                "data": {"source": "digits",
                                         "probe": {"source": "csv_vectors", "path": str(csv), "label_column": "digit"}}})
    with pytest.raises(ConfigError, match=r"probe vectors \(csv_vectors .*narrow.csv\) have 10 features, the "
                                          r"pretraining vectors \(digits\) 64"):
        pretrain(cfg)
    assert not (tmp_path / "v").exists()  # nothing trained, no run directory
