"""The GPU benchmark scripts stay runnable: each runs its CPU smoke configuration (tiny sizes, 1-2 steps).

They are measured on a GPU machine when one is lent (``benchmarks/gpu/``); this only guards against the
scripts rotting (API changes in the objectives they drive) while no GPU is at hand.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = {
    "ecg_jepa.py": ["--device", "cpu", "--size", "xs", "--batch", "4", "--steps", "1", "--warmup", "1"],
    "poa.py": ["--device", "cpu", "--img", "32", "--local", "16", "--batch", "4", "--steps", "2", "--warmup", "1"],
    "wav2vec2.py": ["--device", "cpu", "--tiny", "--batch-size", "2", "--seconds", "1", "--steps", "1"],
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_gpu_benchmark_cpu_smoke(script):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / script), *SMOKE[script]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"/s\b|_per_s\b|per_hour", proc.stdout), proc.stdout  # a throughput figure was printed


def test_gpu_acceptance_cpu_smoke(tmp_path, shared_data):
    """The whole acceptance run in smoke mode: every item and every trainer check runs and is reported."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "acceptance.py"), "--smoke",
                           "--out", str(out), "--data", str(shared_data)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads((out / "gpu_acceptance.json").read_text())
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    try:
        from acceptance import ITEMS
    finally:
        sys.path.pop(0)
    assert [r["item"] for r in report["items"]] == list(ITEMS)
    for row in report["items"]:
        assert "error" not in row, (row["item"], row.get("traceback"))
        # the thresholds are set for a GPU's bf16 kernels; CPU autocast rounds differently (POA's sharpened
        # teacher moved its loss by 3 % here), so the smoke run only asks for a finite, bounded difference
        assert row["losses_finite"] and row["bf16_rel_diff"] < 0.1, row
        assert row["flops_per_step"] > 0 and row["samples_per_s"] > 0, row
        assert row["compile_loss_rel_diff_max"] < 1e-3, row  # eager-backend Dynamo: the same arithmetic
    trainer = {r["item"]: r for r in report["trainer"]}
    for name in ("trainer_single_process", "torchrun_ddp_nproc1", "torchrun_fsdp2_nproc1", "resume_from_checkpoint"):
        assert trainer[name].get("ok"), trainer[name]
    assert trainer["resume_from_checkpoint"]["bit_identical"]  # on CPU resume is exact
    assert trainer["torchrun_ddp_nproc1"]["max_abs_diff_vs_single_process"] == 0.0
    md = (out / "gpu_acceptance.md").read_text()
    assert "| ecg_jepa | ok |" in md and "torchrun_fsdp2_nproc1 | ok" in md
