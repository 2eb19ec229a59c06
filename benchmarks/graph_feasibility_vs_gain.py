"""W2PGNN validation: measured pretraining gain vs graphon feasibility for every (pretrain, downstream) pair.

    .venv/bin/python benchmarks/graph_feasibility_vs_gain.py [--quick] [--out DIR]

Reads `experiment:` of experiments/graph/feasibility_vs_gain.yaml; prints one line per pair and the
Spearman correlations; writes DIR/results.json and DIR/feasibility_vs_gain.png.
`--quick` shrinks it (2 pretraining sets, 30 steps, 3 folds, 1 seed) to smoke-test the pipeline.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from sslab.eval.feasibility import feasibility_vs_gain

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments/graph/feasibility_vs_gain.yaml"))
    ap.add_argument("--out", default=str(ROOT / "runs/graph_feasibility_vs_gain"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = yaml.safe_load(Path(args.config).read_text())["experiment"]
    if args.quick:
        spec.update(pretrain=spec["pretrain"][:2], train={**spec["train"], "steps": 30}, probe_folds=3, seeds=[0],
                    max_graphs=100)
    res = feasibility_vs_gain(spec, args.out, progress=True)
    print(json.dumps(res["summary"], indent=2))
    print(f"wrote {args.out}/results.json and feasibility_vs_gain.png")


if __name__ == "__main__":
    main()
