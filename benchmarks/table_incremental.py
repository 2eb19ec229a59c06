"""Incremental columns on the held-out table: fine-tune on some columns, then continue with more.

Stage 1 fine-tunes on ``--first`` columns; stage 2 continues the *same* predictor on all columns (no new
parameters: the encoder reads the new column names). Compared with fine-tuning on all columns from the
start for the same total steps, for the pretrained encoder of a run and for random init.

Usage: python benchmarks/table_incremental.py --run runs/table_heldout/pretrain [--steps 150] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from sslab.core.config import load_experiment
from sslab.core.export import build_encoder, load_encoder
from sslab.core.modality import build_modality
from sslab.eval.table_baselines import table_metrics
from sslab.objectives.tabular_finetune import FinetuneConfig, finetune, predict
from sslab.run import seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="pretraining run dir (config.yaml, tokenizer.json, encoder/)")
    ap.add_argument("--first", nargs="+", default=["pclass", "age", "sibsp", "parch", "fare", "embarked"])
    ap.add_argument("--steps", type=int, default=150, help="fine-tuning steps per stage")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_experiment(f"{args.run}/config.yaml")
    modality = build_modality(cfg)
    pretrained = load_encoder(args.run)
    seed_everything(cfg.seed)
    encoders = {"pretrained": pretrained, "random_init": build_encoder(pretrained.sslab_spec).eval()}
    train_t, test_t = modality.labelled_split()
    task, classes = train_t.schema.task, train_t.labels()[1]
    all_cols = train_t.schema.names
    rows = lambda t, cols, stats=None: modality.labelled_rows(t.subset(range(len(t)), cols), classes, stats)
    tr_first, tr_all = rows(train_t, args.first), rows(train_t, all_cols)
    te_first = rows(test_t, args.first, tr_first.tables[0].num_stats)
    te_all = rows(test_t, all_cols, tr_all.tables[0].num_stats)
    yte = te_all.labels
    epochs = max(1, math.ceil(args.steps / math.ceil(len(train_t) / 64)))
    ft = FinetuneConfig(epochs=epochs)
    ft2 = FinetuneConfig(epochs=2 * epochs)
    out = {}
    for name, enc in encoders.items():
        res = {"stage1_first_cols": [], "stage2_incremental": [], "all_cols_from_start": []}
        for seed in range(args.seeds):
            m = finetune(enc, tr_first, task, len(classes), ft, seed=seed)
            res["stage1_first_cols"].append(table_metrics(yte, predict(m, te_first), task)["auc"])
            m = finetune(None, tr_all, task, len(classes), ft, seed=seed, model=m)
            res["stage2_incremental"].append(table_metrics(yte, predict(m, te_all), task)["auc"])
            m = finetune(enc, tr_all, task, len(classes), ft2, seed=seed)
            res["all_cols_from_start"].append(table_metrics(yte, predict(m, te_all), task)["auc"])
        out[name] = res
        print(json.dumps({name: res}), flush=True)
    print(f"\nincremental columns on {train_t.name}: first {args.first}, then all {len(all_cols)} columns; "
          f"test AUC mean ± std over {args.seeds} seeds\n")
    print("| encoder | stage 1 (first cols) | stage 2 (+ new cols, same model) | all cols from start (2x steps) |")
    print("|---|---|---|---|")
    for name, res in out.items():
        cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in res.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
