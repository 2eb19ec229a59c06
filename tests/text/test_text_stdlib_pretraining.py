"""Behaviour, not shapes: MLM pretraining on the standard-library docstrings beats the same encoder at
random init on the docstring -> module probe (docs/text.md, "Pretraining beats random init on
standard-library docstrings"). A reduced run of experiments/text/mlm_stdlib_docs.yaml (dim 64, depth 2,
1000 steps; ~1 min on one CPU thread)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from text_helpers import one_thread  # noqa: F401

from sslab.core.config import load_experiment
from sslab.datasets.text_tokenizer import load_tokenizer
from sslab.run import pretrain, probe

EXP = Path(__file__).resolve().parents[2] / "experiments" / "text" / "mlm_stdlib_docs.yaml"


def test_mlm_on_stdlib_docstrings_beats_random_init(tmp_path: Path) -> None:
    cfg = load_experiment(EXP, [f"output_dir={tmp_path}", f"data.tokenizer_cache={tmp_path / 'tok'}",
                                "encoder.dim=64", "encoder.depth=2", "train.steps=1000", "train.progress=false",
                                "data.probe_min_per_class=200", "train.log_every=10"])
    run = pretrain(cfg)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    # A logged loss is one step's loss (it swings by ~1 nat late in training) and the WordPiece vocabulary
    # differs a little between trainings (tokenizers breaks ties in hash order), so the mean of the last 10
    # logged steps is compared with a uniform guess over the vocabulary (ln V = 8.29; step 10 measured 8.24).
    # 2 runs at log_every=10: that mean was 5.81-5.86, i.e. 2.4 nats below ln V.
    vocab = len(load_tokenizer(run / "tokenizer.json"))
    assert sum(losses[-10:]) / 10 < math.log(vocab) - 1.5, (math.log(vocab), losses[-10:])
    rows = probe(run, progress=False)["rows"]
    acc = {r["encoder"]: r["accuracy"] for r in rows}  # linear probe; kNN does not gain (docs/text.md)
    # measured at 1000 steps, seeds 0/1/2: +0.067, +0.041, +0.048 (7 modules with >= 200 docstrings,
    # fixed 75/25 split); 500 steps gave +0.015 to +0.063, so 1000 steps leaves a margin over 0.02.
    # Ten repeats of seed 0 (each with its own tokenizer training): +0.046 to +0.087.
    assert acc["pretrained"] > acc["random_init"] + 0.02, acc
