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
