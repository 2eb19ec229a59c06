"""Behaviour, not shapes: MLM pretraining on the standard-library docstrings beats the same encoder at
random init on the docstring -> module probe (docs/text.md, "Pretraining beats random init on
standard-library docstrings"). A reduced run of experiments/text/mlm_stdlib_docs.yaml (dim 64, depth 2,
1000 steps; ~1 min on one CPU thread)."""
from __future__ import annotations

import json
from pathlib import Path

from text_helpers import one_thread  # noqa: F401

from sslab.core.config import load_experiment
from sslab.run import pretrain, probe

EXP = Path(__file__).resolve().parents[2] / "experiments" / "text" / "mlm_stdlib_docs.yaml"


def test_mlm_on_stdlib_docstrings_beats_random_init(tmp_path: Path) -> None:
    cfg = load_experiment(EXP, [f"output_dir={tmp_path}", f"data.tokenizer_cache={tmp_path / 'tok'}",
                                "encoder.dim=64", "encoder.depth=2", "train.steps=1000", "train.progress=false",
                                "data.probe_min_per_class=200"])
    run = pretrain(cfg)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] - 1.0
    rows = probe(run, progress=False)["rows"]
    acc = {r["encoder"]: r["accuracy"] for r in rows}  # linear probe; kNN does not gain (docs/text.md)
    # measured at 1000 steps, seeds 0/1/2: +0.067, +0.041, +0.048 (7 modules with >= 200 docstrings,
    # fixed 75/25 split); 500 steps gave +0.015 to +0.063, so 1000 steps leaves a margin over 0.02
    assert acc["pretrained"] > acc["random_init"] + 0.02, acc
