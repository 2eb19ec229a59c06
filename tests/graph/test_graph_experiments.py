"""Every graph experiment YAML validates and runs one forward/backward step of its objective."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from sslab.core.config import load_experiment
from sslab.core.modality import build_modality

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p for p in (ROOT / "experiments" / "graph").glob("*.yaml") if p.stem != "feasibility_vs_gain")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_builds_and_steps(path, shared_data):
    torch.manual_seed(0)
    cfg = load_experiment(path, [f"data.tu_root={shared_data / 'graphs'}"])
    modality = build_modality(cfg)
    ds, collate = modality.pretrain_data()
    encoder = modality.build_encoder()
    objective = modality.build_objective(encoder)
    out = objective(collate([ds[i] for i in range(4)]))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert encoder.input.weight.grad is not None
    assert modality.probe_tasks()[0].task == "multiclass"


def test_feasibility_vs_gain_spec_is_complete():
    spec = yaml.safe_load((ROOT / "experiments/graph/feasibility_vs_gain.yaml").read_text())["experiment"]
    for key in ("pretrain", "downstream", "encoder", "objective", "train", "probe_folds", "seeds", "feasibility"):
        assert key in spec
    from sslab.eval.feasibility import FeasibilityConfig

    FeasibilityConfig(**spec["feasibility"])
