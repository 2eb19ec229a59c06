"""Issue 19, tables: UniTabE pretrained on some tables, probed on a CSV table named by data.probe (another
schema); a probe table without a target or with other tokenizer settings is refused before pretraining."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.core.config import ConfigError, load_experiment
from sslab.core.modality import build_modality
from sslab.run import pretrain, probe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _penguins(path: Path, n: int = 90) -> Path:
    """A small penguins-like CSV: other columns than any pretraining table."""
    rng = np.random.default_rng(0)
    species = rng.choice(["Adelie", "Gentoo", "Chinstrap"], n)
    bill = np.where(species == "Gentoo", 47.0, np.where(species == "Adelie", 38.0, 49.0)) + rng.normal(0, 2, n)
    island = np.where(species == "Gentoo", "Biscoe", rng.choice(["Dream", "Torgersen"], n))
    lines = ["species,bill_length_mm,island"] + [f"{s},{b:.1f},{i}" for s, b, i in zip(species, bill, island)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(tmp_path: Path, probe: dict, **data):
    base = {"pretrain": ["sklearn:wine", "sklearn:iris"], "eval": "sklearn:breast_cancer", "vocab_size": 300,
            "probe": probe, **data}
    return load_experiment(REPO / "experiments/table/unitabe.yaml", [
        f"output_dir={tmp_path}/runs", "name=tiny", f"data={json.dumps(base)}",
        "encoder={name: tabunit, dim: 16, depth: 1, heads: 2}", "train.steps=2", "train.batch_size=16",
        "train.progress=false"])


def test_pretrain_on_sklearn_tables_probe_on_a_csv(tmp_path):
    csv = _penguins(tmp_path / "penguins.csv")
    cfg = _cfg(tmp_path, {"source": "csv:penguins", "path": str(csv), "target": "species"})
    run = pretrain(cfg)
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"penguins"}
    assert {r["n_test"] for r in rows} == {27} and all("balanced_accuracy" in r or "degenerate" in r for r in rows)
    # data.eval (legacy) still names the probe table when there is no data.probe
    assert build_modality(_cfg(tmp_path, {})).probe_tasks()[0].name == "breast_cancer"


@pytest.mark.parametrize("probe, match", [
    ({"source": "csv:penguins", "path": "CSV"}, r"probe table csv:penguins .* has no target column .*species"),
    ({"source": "csv:penguins", "path": "CSV", "target": "species", "digits": 2},
     r"data.probe.digits=2 differs from the pretraining data.digits=4"),
    ({"source": "csv:penguins", "path": "/nonexistent.csv", "target": "species"}, r"cannot load the probe table"),
    ({"source": "sklearn:iris", "path": "x.csv"}, r"only for a csv:<name> probe source"),
])
def test_incompatible_probe_tables_are_refused_before_pretraining(tmp_path, probe, match):
    csv = _penguins(tmp_path / "penguins.csv")
    probe = {k: (str(csv) if v == "CSV" else v) for k, v in probe.items()}
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path, probe))
    assert not (tmp_path / "runs").exists()
