"""Short version of benchmarks/fault_injection.py: SIGKILL a small run 4 times (the first before any
checkpoint, then during a checkpoint write / between rename and pruning / at random, and a refused
second launch), relaunch until done, and compare with an uninterrupted run bit for bit."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "fault_injection.py"


def _bench():
    spec = importlib.util.spec_from_file_location("fault_injection", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fault_injection_short(tmp_path):
    summary = _bench().run_fault_injection(kills=4, steps=16, ckpt_every=4, keep_last=3, kills_per_trial=4,
                                           pause=0.05, seed=0, out=tmp_path, verbose=False)
    assert summary["kills"] == 4
    assert summary["kills_before_first_checkpoint"] >= 1
    assert summary["double_launches"] == summary["double_launches_refused"]
    assert summary["differences"] == 0, summary["checks"]
    assert set(summary["checks"]) >= {"param_diffs", "optimizer_diffs", "metrics_duplicate_steps",
                                      "temp_files_left", "keep_last_violations", "loss_png_missing"}
