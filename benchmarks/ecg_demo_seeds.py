"""Is the demo's pretraining gain robust? Pretrain + probe an ECG experiment over seeds and thread counts.

Usage::

    python benchmarks/ecg_demo_seeds.py                       # the `sslab demo` config, seeds 0-2, 1 and 2 threads
    python benchmarks/ecg_demo_seeds.py --seeds 0 1 2 3 --threads 1 -- train.steps=1000   # "--" before overrides

Each (seed, threads) cell is a fresh process (``sslab pretrain`` + ``sslab probe`` with ``OMP_NUM_THREADS`` and
torch threads set), so float reduction order differs between thread counts exactly as it does for users.
``seed`` changes the initialisation, the masks and the batch order; the synthetic records stay the same
(``data.synthetic.seed``). Prints one row per cell -- pretrained and random-init headline scores per probe task
-- then mean +- std of the gain (pretrained - random init) and how many cells it is positive in.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

def run_cell(experiment: str, seed: int, threads: int, overrides: list, workdir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    run_dir = workdir / f"seed{seed}_t{threads}"
    common = [f"seed={seed}", f"output_dir={workdir}", f"name={run_dir.name}", "train.progress=false", *overrides]
    t0 = time.perf_counter()
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from sslab.cli import main; "
            "sys.exit(main(sys.argv[2:]))")
    for cmd in (["pretrain", experiment, *common], ["probe", str(run_dir), *common]):
        proc = subprocess.run([sys.executable, "-c", code, str(threads), *cmd], env=env, capture_output=True,
                              text=True)
        if proc.returncode:
            raise RuntimeError(f"sslab {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    from sslab.eval.probe import headline

    rows = json.loads((run_dir / "probe.json").read_text())["rows"]
    scores = {(r["task"], r["encoder"]): headline(r)[1] for r in rows if r.get("label_fraction", 1.0) == 1.0}
    losses = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [m["loss"] for m in losses if "loss" in m][-5:]
    return {"scores": scores, "final_loss": float(np.mean(final)), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=None, help="experiment YAML (default: the `sslab demo` config)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", default=None, help="keep the runs in this folder (default: a temporary one)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every cell")
    args = ap.parse_args()
    if args.experiment is None:
        from sslab.cli import demo_experiment_path

        args.experiment = str(demo_experiment_path())
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    workdir = Path(args.keep or tmp.name)  # type: ignore[union-attr]
    cells = []
    for seed in args.seeds:
        for threads in args.threads:
            c = run_cell(args.experiment, seed, threads, args.overrides, workdir)
            c.update(seed=seed, threads=threads)
            cells.append(c)
            line = "  ".join(f"{t}: {c['scores'][(t, 'pretrained')]:.3f}/{c['scores'][(t, 'random_init')]:.3f}"
                             for t in dict.fromkeys(k[0] for k in c["scores"]))
            print(f"seed {seed} threads {threads}  loss {c['final_loss']:.3f}  {c['seconds']:.0f} s  "
                  f"[pretrained/random]  {line}", flush=True)
    tasks = list(dict.fromkeys(k[0] for k in cells[0]["scores"]))
    print(f"\n| task | pretrained | random init | gain (mean +- std) | gain > 0 |\n|---|---|---|---|---|")
    for t in tasks:
        p = np.array([c["scores"][(t, "pretrained")] for c in cells])
        r = np.array([c["scores"][(t, "random_init")] for c in cells])
        g = p - r
        print(f"| {t} | {p.mean():.3f} +- {p.std():.3f} | {r.mean():.3f} +- {r.std():.3f} | "
              f"{g.mean():+.3f} +- {g.std():.3f} | {int((g > 0).sum())}/{len(g)} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
