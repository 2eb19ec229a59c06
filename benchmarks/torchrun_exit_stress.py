"""How often does a finished 2-rank gloo run abort at exit? Launch ``sslab pretrain`` under torchrun many times.

Before ``sslab.core.distributed.cleanup`` drained the gloo workers, 5 of 87 two-rank CPU launches ended with
``terminate called without an active exception`` (SIGABRT) *after* all work was written: a gloo worker
thread freed the last collective's tensors while the interpreter was finalizing. This script counts those
aborts for each teardown variant, all in one run on the same machine load:

* ``sslab``: the shipped ``cleanup()`` (barrier, destroy, gc, 0.2 s GIL-free drain);
* ``destroy``: ``destroy_process_group()`` only (what most training scripts do);
* ``none``: no teardown at all.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/torchrun_exit_stress.py --runs 40 --mode fsdp

Two launches run side by side (``--parallel``) to load a 2-core machine the way CI does.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

TEARDOWNS = {
    "sslab": "pass",
    "destroy": ("import torch.distributed as d\n"
                "dist_utils.cleanup = lambda: d.is_initialized() and d.destroy_process_group()"),
    "none": "dist_utils.cleanup = lambda: None",
}

WORKER = """
import sys
import sslab.cli as cli
dist_utils = cli.dist_utils
{patch}
sys.exit(cli.main(sys.argv[1:]))
"""

TINY = ["modality=vector", "encoder.name=mlp", "encoder.in_dim=64", "encoder.dim=16",
        "objective.name=masked_feature", "objective.in_dim=64", "train.steps=6", "train.batch_size=16",
        "train.progress=false", "train.log_every=1"]


def launch(teardown: str, mode: str, workdir: Path, index: int) -> tuple[str, int, bool]:
    """One 2-rank launch; returns (teardown, return code, whether a rank aborted with SIGABRT)."""
    exp = workdir / "exp.yaml"
    worker = workdir / f"worker_{teardown}.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           "pretrain", str(exp), *TINY, f"train.distributed={mode}", f"output_dir={workdir}",
           f"name={teardown}_{index}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    aborted = "Signal 6 (SIGABRT)" in proc.stderr or "terminate called" in proc.stderr
    return teardown, proc.returncode, aborted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40, help="launches per teardown variant")
    ap.add_argument("--mode", choices=["ddp", "fsdp"], default="fsdp")
    ap.add_argument("--teardowns", nargs="+", choices=sorted(TEARDOWNS), default=["sslab", "destroy"])
    ap.add_argument("--parallel", type=int, default=2, help="launches running side by side")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "exp.yaml").write_text("data: {source: digits}\n")
        for name in args.teardowns:
            (workdir / f"worker_{name}.py").write_text(WORKER.format(patch=TEARDOWNS[name]))
        # interleave the variants so that machine load affects them alike
        jobs = [(t, i) for i in range(args.runs) for t in args.teardowns]
        counts = {t: {"aborted": 0, "other_failures": 0} for t in args.teardowns}
        with ThreadPoolExecutor(args.parallel) as pool:
            futures = [pool.submit(launch, t, args.mode, workdir, i) for t, i in jobs]
            for fut in tqdm(futures, desc=f"{args.mode} launches"):
                teardown, code, aborted = fut.result()
                if aborted:
                    counts[teardown]["aborted"] += 1
                elif code != 0:
                    counts[teardown]["other_failures"] += 1

    print(f"\n2 gloo ranks, {args.mode}, {args.runs} launches per variant, {args.parallel} side by side")
    print(f"{'teardown':<10} {'aborted at exit':>16} {'other failures':>15}")
    for name, c in counts.items():
        print(f"{name:<10} {c['aborted']:>10}/{args.runs:<5} {c['other_failures']:>15}")


if __name__ == "__main__":
    main()
