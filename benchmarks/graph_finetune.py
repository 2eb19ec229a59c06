"""Fine-tuning on graph labels: a short pretraining run, then encoder + linear head trained end to end.

Pretrains with a graph experiment (default: attribute masking on MUTAG, ``experiments/graph/mutag_attr_mask.yaml``)
for ``--steps`` steps through the core Trainer, then fine-tunes the pretrained GIN and the same GIN at random
init on the experiment's probe splits (10-fold CV for MUTAG) with ``sslab.modalities.graph.finetune``, and
(unless ``--no-probe``) runs the core linear/kNN probe on the same run for comparison. Prints tables and writes
``finetune.json`` into the run directory.

    .venv/bin/python benchmarks/graph_finetune.py --steps 200 --epochs 20
    .venv/bin/python benchmarks/graph_finetune.py --experiment experiments/graph/imdb_graphcl.yaml
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sslab.core.config import load_experiment
from sslab.modalities.graph import summarize_folds
from sslab.modalities.graph_finetune import finetune, format_finetune
from sslab.run import pretrain, probe

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments/graph/mutag_attr_mask.yaml"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--folds", type=int, default=None, help="override data.probe_folds")
    ap.add_argument("--tu-root", default=str(ROOT.parent / "shared/data/graphs"))
    ap.add_argument("--out", default="runs/graph_finetune")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-probe", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    overrides = [f"train.steps={args.steps}", f"data.tu_root={args.tu_root}", f"output_dir={args.out}"]
    if args.folds is not None:
        overrides.append(f"data.probe_folds={args.folds}")
    cfg = load_experiment(args.experiment, overrides)
    t0 = time.time()
    run_dir = pretrain(cfg)
    t_pre = time.time() - t0
    losses = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in losses if "loss" in r]
    print(f"pretrained {cfg.name} for {args.steps} steps in {t_pre:.0f} s; "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "")

    t0 = time.time()
    res = finetune(run_dir, cfg, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    t_ft = time.time() - t0
    res.update({"experiment": args.experiment, "steps": args.steps, "pretrain_s": t_pre, "finetune_s": t_ft,
                "pretrain_loss": [losses[0], losses[-1]] if losses else None})
    print(format_finetune(res))
    print(f"fine-tuning wall time {t_ft:.0f} s")
    if not args.no_probe:
        rows = probe(run_dir, cfg, progress=False)["rows"]
        res["probe_summary"] = {k: v for k, v in summarize_folds(rows).items()}
        res["probe_knn_summary"] = summarize_folds(rows, "knn_accuracy")
        for k, v in res["probe_summary"].items():
            print(f"linear probe {k}: {v['mean']:.3f} ± {v['std']:.3f}")
        for k, v in res["probe_knn_summary"].items():
            print(f"kNN probe {k}: {v['mean']:.3f} ± {v['std']:.3f}")
    (run_dir / "finetune.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {run_dir / 'finetune.json'}")


if __name__ == "__main__":
    main()
