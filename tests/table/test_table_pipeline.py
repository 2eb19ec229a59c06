"""The table plugin through the core: config validation, sslab.run.pretrain across tables, probe, export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslab.core.config import ConfigError, ExperimentConfig, load_experiment
from sslab.core.export import load_encoder
from sslab.core.modality import build_modality
from sslab.core.registry import ENCODERS, MODALITIES, OBJECTIVES
from sslab.datasets.tables import TableError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared, busy CPU extra OpenMP threads spin-wait and slow everything."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(tmp_path: Path, **data) -> ExperimentConfig:
    base = {"pretrain": ["sklearn:wine", "sklearn:iris", "sklearn:diabetes"], "eval": "sklearn:breast_cancer",
            "vocab_size": 300, **data}
    return load_experiment(REPO / "experiments/table/unitabe.yaml", [
        f"output_dir={tmp_path}", "name=tiny", f"data={json.dumps(base)}",
        "encoder={name: tabunit, dim: 32, depth: 1, heads: 4}", "train.steps=6", "train.batch_size=16",
        "train.progress=false", "train.log_every=1", "probe.label_fractions=[1.0, 0.1]"])


def test_registered_names() -> None:
    import sslab.encoders.tabunit  # noqa: F401  (registration happens on import; lookups autoload)
    import sslab.modalities.table  # noqa: F401
    import sslab.objectives.tabular  # noqa: F401

    assert "table" in MODALITIES and "tabunit" in ENCODERS
    assert all(n in OBJECTIVES for n in ("tab_masked_cell", "tab_partition_contrastive", "unitabe"))


def test_experiment_yaml_is_valid(shared_data: Path) -> None:
    cfg = load_experiment(REPO / "experiments/table/unitabe.yaml")
    modality = build_modality(cfg)
    assert modality.data.eval == "shared:titanic" and "shared:titanic" not in modality.data.pretrain


def test_bad_data_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config key 'data.tables'"):
        build_modality(_cfg(tmp_path, tables=["x"]))
    with pytest.raises(TableError, match="must be shared:"):
        build_modality(_cfg(tmp_path, pretrain=["kaggle:titanic"])).pretrain_tables()
    with pytest.raises(TableError, match="add data.csv.mine"):
        build_modality(_cfg(tmp_path, pretrain=["csv:mine"])).pretrain_tables()


def test_include_targets_and_row_cap(tmp_path: Path) -> None:
    modality = build_modality(_cfg(tmp_path, include_targets=True, max_rows_per_table=100))
    wine, iris, diabetes = modality.pretrain_tables()
    assert wine.schema.names[-1] == "target" and wine.schema.type_of("target") == "categorical"
    assert diabetes.schema.type_of("target") == "numeric"
    assert len(wine) == len(iris) == len(diabetes) == 100
    assert set(wine.frame["target"]) == {"class_0", "class_1", "class_2"}


def test_pretrain_and_probe_through_core(tmp_path: Path) -> None:
    from sslab.run import probe, pretrain

    cfg = _cfg(tmp_path)
    run_dir = pretrain(cfg)
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "encoder" / "encoder.safetensors").is_file()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 6 and all(l == l for l in losses)  # logged every step, finite
    assert {"mcm_loss", "contrastive_loss"} <= set().union(*metrics)
    enc = load_encoder(run_dir)
    assert enc.tokenizer().to_str() == (run_dir / "tokenizer.json").read_text()  # self-contained export
    result = probe(run_dir, progress=False)
    rows = {(r["encoder"], r["label_fraction"]): r for r in result["rows"]}
    assert set(rows) == {(e, f) for e in ("pretrained", "random_init", "floor:logreg", "floor:gbdt") for f in (1.0, 0.1)}
    for floor in ("floor:logreg", "floor:gbdt"):  # the raw-table floors: their own models, same rows and labels
        assert rows[(floor, 1.0)]["n_train"] == 398 and rows[(floor, 0.1)]["n_train"] == rows[("pretrained", 0.1)]["n_train"]
        assert rows[(floor, 1.0)]["accuracy"] > 0.9 and "knn_accuracy" not in rows[(floor, 1.0)]
    assert rows[("pretrained", 1.0)]["n_train"] == 398 and rows[("pretrained", 1.0)]["n_test"] == 171
    assert rows[("pretrained", 1.0)]["accuracy"] > 0.8  # breast cancer is easy even for a 6-step encoder
    assert (run_dir / "probe.json").is_file() and (run_dir / "probe.png").is_file()


def test_probe_rejects_encoder_with_other_tokenizer(tmp_path: Path) -> None:
    from sslab.core.export import build_encoder
    from sslab.datasets.tables_tokenize import TableTokenizer
    from sslab.datasets.tables import load_sklearn_table

    modality = build_modality(_cfg(tmp_path))
    other = TableTokenizer.train([load_sklearn_table("iris")], vocab_size=100)
    enc = build_encoder({"name": "tabunit", "tokenizer": other.to_str(), "dim": 32, "depth": 1, "heads": 4})
    task = modality.probe_tasks()[0]
    inputs, _ = task.collate_fn([task.train[0], task.train[1]])
    with pytest.raises(TableError, match="tokenizer differs"):
        modality.embed(enc, inputs)
