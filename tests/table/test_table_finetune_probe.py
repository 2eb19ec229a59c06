"""probe.finetune: end-to-end fine-tuning rows ("<task>:finetune") beside the linear probe, on copies of the
encoders and on the linear probe's label subsample; bad keys and modalities without a protocol are one-line
config errors before any training."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
import yaml

from sslab.core.config import ConfigError, ExperimentConfig, load_experiment
from sslab.core.modality import build_modality
from sslab.eval.probe import headline
from sslab.run import pretrain, probe, probe_encoders, seed_everything

REPO = Path(__file__).resolve().parents[2]
FINETUNE = "probe.finetune={steps: 32, batch_size: 16, lr: 3.0e-3, head_lr: 3.0e-2}"  # tiny model: learns in 32 steps


def _toy_csv(path: Path, n: int = 80) -> Path:
    """A small binary table (numeric + categorical column) that no pretraining table resembles."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    size = 10 + 5 * y + rng.normal(0, 3, n)
    colour = np.where(rng.random(n) < 0.8, np.where(y == 1, "red", "blue"), "green")
    lines = ["size,colour,label"] + [f"{s:.1f},{c},{'yes' if t else 'no'}" for s, c, t in zip(size, colour, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(tmp_path: Path, *extra: str) -> ExperimentConfig:
    data = {"pretrain": ["sklearn:iris"], "eval": "csv:toy", "vocab_size": 200, "test_fraction": 0.3,
            "csv": {"toy": {"path": str(_toy_csv(tmp_path / "toy.csv")), "target": "label"}}}
    return load_experiment(REPO / "experiments/table/unitabe.yaml", [
        f"output_dir={tmp_path}/runs", "name=tiny", f"data={json.dumps(data)}",
        "encoder={name: tabunit, dim: 16, depth: 1, heads: 2}", "train.steps=2", "train.batch_size=16",
        "train.progress=false", "probe.label_fractions=[1.0, 0.5]", FINETUNE,
        *extra])


def _finetune_rows(rows: List[Dict[str, Any]]) -> Dict[tuple, Dict[str, Any]]:
    return {(r["encoder"], r["label_fraction"]): r for r in rows if r["task"] == "toy:finetune"}


def test_probe_adds_finetune_rows_for_both_encoders_and_fractions(tmp_path: Path) -> None:
    rows = probe(pretrain(_cfg(tmp_path)), progress=False)["rows"]
    ft = _finetune_rows(rows)
    assert set(ft) == {(e, f) for e in ("pretrained", "random_init") for f in (1.0, 0.5)}
    linear = {(r["encoder"], r["label_fraction"]): r for r in rows if r["task"] == "toy"}
    for (enc, frac), r in ft.items():
        assert r["protocol"] == "finetune" and r["kind"] == "multiclass"
        assert r["n_train"] == linear[(enc, frac)]["n_train"] and r["n_test"] == linear[(enc, frac)]["n_test"] == 24
        assert headline(r)[0] == "auc" and {"accuracy", "balanced_accuracy", "macro_f1"} <= set(r)  # as the probe
    assert all("protocol" not in r for r in rows if r["task"] == "toy")  # linear / floor rows unchanged


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The probe run twice on the same two encoders, with their parameters before and after."""
    cfg = _cfg(tmp_path_factory.mktemp("ft"), "probe.floors=false", "probe.label_fractions=[0.5]")
    modality = build_modality(cfg)
    encoders = {}
    for name, seed in (("pretrained", 1), ("random_init", 0)):
        seed_everything(seed)
        encoders[name] = modality.build_encoder()
    before = {n: {k: v.clone() for k, v in e.state_dict().items()} for n, e in encoders.items()}
    runs = [probe_encoders(modality, encoders, cfg, progress=False) for _ in range(2)]
    return {"encoders": encoders, "before": before, "runs": runs}


def test_finetuning_leaves_the_probed_encoders_unchanged(twice: Dict[str, Any]) -> None:
    for name, enc in twice["encoders"].items():
        after = enc.state_dict()
        assert all(torch.equal(v, after[k]) for k, v in twice["before"][name].items()), name
        assert not enc.training


def test_same_seed_gives_identical_finetune_metrics(twice: Dict[str, Any]) -> None:
    first, second = (_finetune_rows(rows) for rows in twice["runs"])
    assert set(first) == {("pretrained", 0.5), ("random_init", 0.5)} and all("auc" in r for r in first.values())
    assert first == second


def test_unknown_finetune_key_is_a_config_error_before_training(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "probe.finetune={steps: 4, epochs: 3}")
    with pytest.raises(ConfigError, match=r"probe\.finetune\.epochs"):
        pretrain(cfg)
    with pytest.raises(ConfigError, match=r"probe\.finetune\.steps must be > 0"):
        pretrain(_cfg(tmp_path, "probe.finetune={steps: 0}"))
    assert not (tmp_path / "runs").exists()


def test_modality_without_finetune_protocol_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from sslab.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "v", "modality": "vector", "output_dir": str(tmp_path / "runs"),
        "encoder": {"name": "mlp", "in_dim": 64, "dim": 16}, "objective": {"name": "masked_feature", "in_dim": 64},
        "train": {"steps": 1, "batch_size": 32, "progress": False}, "probe": {"finetune": {"steps": 5}}}))
    assert main(["pretrain", str(exp), "--probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sslab pretrain: error: probe.finetune: the vector modality has no fine-tuning protocol"
    assert not (tmp_path / "runs" / "v").exists()


def test_finetune_trains_on_the_linear_probes_label_subsample_and_learns(tmp_path: Path, monkeypatch) -> None:
    """The fine-tuning scorer gets exactly the rows :func:`sslab.eval.probe.subsample` gives the linear probe,
    and fine-tuning moves the model: on this toy table the fine-tuned model is above chance, while
    the same scorer at a learning rate of 1e-9 learns nothing."""
    from sslab.eval.probe import subsample
    from sslab.modalities.table import TableModality

    cfg = _cfg(tmp_path, "probe.floors=false", "probe.label_fractions=[0.5]")
    modality = build_modality(cfg)
    seen: List[np.ndarray] = []
    original = TableModality.finetune_scorer

    def recording(self, task, encoder, options):
        score = original(self, task, encoder, options)

        def wrapped(train_idx, ytr, test_idx, yte, kind, seed):
            seen.append(np.asarray(train_idx))
            return score(train_idx, ytr, test_idx, yte, kind, seed)
        return wrapped

    monkeypatch.setattr(TableModality, "finetune_scorer", recording)
    seed_everything(0)
    encoders = {"random_init": modality.build_encoder()}
    task = modality.probe_tasks()[0]
    trained = _finetune_rows(probe_encoders(modality, encoders, cfg, tasks=[task], progress=False))
    assert len(seen) == 1
    assert np.array_equal(seen[0], subsample(np.asarray(task.train.labels), 0.5, task.task, cfg.seed))
    (tmp_path / "frozen").mkdir()
    frozen_cfg = _cfg(tmp_path / "frozen", "probe.floors=false", "probe.label_fractions=[0.5]",
                      "probe.finetune={steps: 1, batch_size: 16, lr: 1.0e-9, head_lr: 1.0e-9}")
    untrained = _finetune_rows(probe_encoders(modality, encoders, frozen_cfg, tasks=[task], progress=False))
    learned, still = trained[("random_init", 0.5)], untrained[("random_init", 0.5)]
    assert learned["auc"] > 0.65 and learned["balanced_accuracy"] > 0.6  # chance: 0.5; measured 0.78 / 0.68
    # without learning the head answers one class for every row: a degenerate row, or chance balanced accuracy
    assert still.get("degenerate") or still["balanced_accuracy"] < learned["balanced_accuracy"] - 0.2
