"""Held-out-table benchmark for UniTabE (prints a markdown table, writes JSON).

Pretrains the TabUnit encoder on the tables in ``data.pretrain`` of the experiment (default: Adult,
German credit, breast cancer, diabetes, wine), then on the held-out ``data.eval`` table (default:
Titanic, never seen in pretraining, not even by the tokenizer) compares, on one fixed train/test split
and for several label-subsample seeds and label fractions:

* linear probe on frozen [CLS] features: pretrained vs random init (same architecture and tokenizer);
* full fine-tuning: pretrained vs random init;
* scikit-learn logistic regression and HistGradientBoosting on the raw table.

Usage: python benchmarks/table_heldout.py [--steps 600] [--seeds 3] [--fractions 1.0 0.1] [overrides ...]
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sslab.core.config import load_experiment
from sslab.core.export import build_encoder, load_encoder
from sslab.core.modality import build_modality
from sslab.eval.probe import extract_features, subsample
from sslab.eval.table_baselines import sklearn_baselines, table_metrics
from sslab.objectives.tabular_finetune import FinetuneConfig, finetune, predict
from sslab.run import pretrain, seed_everything

REPO = Path(__file__).resolve().parents[1]


def probe_scores(Xtr, ytr, Xte, yte, task):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000)).fit(Xtr, ytr)
    p = m.predict_proba(Xte)
    return table_metrics(yte, p[:, 1] if task == "binary" else p, task)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(REPO / "experiments/table/unitabe.yaml"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--ft-steps", type=int, default=200, help="fine-tuning optimizer steps per run")
    ap.add_argument("--out", default="runs/table_heldout")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids spin-waiting on busy CPUs)")
    ap.add_argument("--reuse", action="store_true", help="reuse an existing pretraining run in --out")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_experiment(args.experiment, [f"train.steps={args.steps}", f"output_dir={args.out}",
                                            "name=pretrain", *args.overrides])
    t0 = time.time()
    run_dir = cfg.run_dir
    reused = args.reuse and (run_dir / "encoder" / "encoder.json").is_file()
    if not reused:
        run_dir = pretrain(cfg)
    t_pre = "reused run" if reused else f"{time.time() - t0:.0f} s"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    modality = build_modality(cfg)
    pretrained = load_encoder(run_dir)
    seed_everything(cfg.seed)
    random_init = build_encoder(pretrained.sslab_spec).eval()

    train_t, test_t = modality.labelled_split()
    task = train_t.schema.task
    classes = train_t.labels()[1]
    train_rows = modality.labelled_rows(train_t, classes)
    test_rows = modality.labelled_rows(test_t, classes, train_rows.tables[0].num_stats)
    ytr_all, yte = train_rows.labels, test_rows.labels
    feats = {}
    for name, enc in (("pretrained", pretrained), ("random_init", random_init)):
        embed = lambda x, e=enc: e.pool(e(x))
        feats[name] = (extract_features(embed, train_rows, train_rows_collate(), batch_size=256)[0],
                       extract_features(embed, test_rows, train_rows_collate(), batch_size=256)[0])

    results = []
    for frac in args.fractions:
        for seed in range(args.seeds):
            idx = subsample(ytr_all, frac, "multiclass" if task != "regression" else "regression", seed)
            row = {"fraction": frac, "seed": seed, "n_train": int(len(idx))}
            for name, (Ftr, Fte) in feats.items():
                row[f"probe/{name}"] = probe_scores(Ftr[idx], ytr_all[idx], Fte, yte, task)
            sub_rows = modality.labelled_rows(train_t.subset(idx), classes, train_rows.tables[0].num_stats)
            epochs = max(1, math.ceil(args.ft_steps / math.ceil(len(idx) / 64)))
            ft_cfg = FinetuneConfig(epochs=epochs, batch_size=64, lr=3e-4, head_lr=3e-3)
            for name, enc in (("pretrained", pretrained), ("random_init", random_init)):
                model = finetune(enc, sub_rows, task, len(classes) or 1, ft_cfg, seed=seed)
                row[f"finetune/{name}"] = table_metrics(yte, predict(model, test_rows), task)
            for name, res in sklearn_baselines(train_t.subset(idx), test_t, seed=seed).items():
                row[f"sklearn/{name}"] = res
            results.append(row)
            print(json.dumps(row), flush=True)

    methods = [k for k in results[0] if "/" in k]
    keys = list(dict.fromkeys(k for r in results for m in methods for k in r[m] if k != "degenerate"))
    lines = [f"held-out table: {train_t.name} ({len(train_t)} train / {len(test_t)} test rows), "
             f"pretrained on {cfg.data['pretrain']} for {cfg.train.steps} steps "
             f"(loss {np.mean(losses[:3]):.3f} -> {np.mean(losses[-3:]):.3f}, {t_pre}), split seed "
             f"{cfg.data.get('split_seed', 0)}", "",
             "| labels | method | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for frac in args.fractions:
        rows = [r for r in results if r["fraction"] == frac]
        for m in methods:
            cells = []
            bad = sum("degenerate" in r[m] for r in rows)  # constant scores: not a number (table_metrics)
            for k in keys:
                v = np.array([r[m][k] for r in rows if k in r[m]])
                cell = f"{v.mean():.3f} ± {v.std():.3f}" if len(v) else "degenerate"
                cells.append(cell + (f" ({bad}/{len(rows)} seeds degenerate)" if bad and len(v) else ""))
            lines.append(f"| {frac:.0%} (n={rows[0]['n_train']}) | {m} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps({"results": results, "pretrain_losses": losses}, indent=1))
    (out / "heldout.md").write_text(table + "\n")


def train_rows_collate():
    from sslab.datasets.tables_tokenize import TableCollator

    return TableCollator()


if __name__ == "__main__":
    main()
