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
    ap.add_argument("--record", action="store_true",
                    help="do not run; copy DIR/results.json into the YAML's `results:` section and print a table")
    args = ap.parse_args()
    if args.record:
        record(Path(args.out) / "results.json", Path(args.config))
        return
    torch.set_num_threads(args.threads)
    spec = yaml.safe_load(Path(args.config).read_text())["experiment"]
    if args.quick:
        spec.update(pretrain=spec["pretrain"][:2], train={**spec["train"], "steps": 30}, probe_folds=3, seeds=[0],
                    max_graphs=100)
    res = feasibility_vs_gain(spec, args.out, progress=True)
    print(json.dumps(res["summary"], indent=2))
    print(f"wrote {args.out}/results.json and feasibility_vs_gain.png")


def record(results_json: Path, config: Path) -> None:
    """Write the measured pairs and Spearman summary under `results:` in the experiment YAML."""
    res = json.loads(results_json.read_text())
    rnd = lambda v: round(float(v), 4)  # noqa: E731
    pairs = [{"pretrain": r["pretrain"], "downstream": r["downstream"], "acc_pretrained": rnd(r["acc_pretrained"]),
              "acc_random": rnd(r["acc_random"]), "gain": rnd(r["gain"]), "feasibility": round(float(r["feasibility"]), 6)}
             for r in res["rows"]]
    summ = {k: ({kk: {a: rnd(b) if isinstance(b, float) else b for a, b in vv.items()} for kk, vv in v.items()}
                if k == "spearman_per_downstream" else {a: rnd(b) if isinstance(b, float) else b for a, b in v.items()})
            for k, v in res["summary"].items()}
    text = config.read_text().split("\nresults:")[0].rstrip() + "\n"
    block = yaml.safe_dump({"results": {"summary": summ, "pairs": pairs}}, sort_keys=False, width=120)
    config.write_text(text + "\n# measured by benchmarks/graph_feasibility_vs_gain.py (then --record)\n" + block)
    print(f"| pretrain | downstream | probe acc pretrained | random init | gain | feasibility |")
    print("|---|---|---|---|---|---|")
    for r in pairs:
        print(f"| {r['pretrain']} | {r['downstream']} | {r['acc_pretrained']:.3f} | {r['acc_random']:.3f} | "
              f"{r['gain']:+.3f} | {r['feasibility']:.4f} |")
    print(yaml.safe_dump(summ, sort_keys=False))


if __name__ == "__main__":
    main()
