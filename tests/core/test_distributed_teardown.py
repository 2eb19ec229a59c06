"""Process-group teardown: every rank meets, the group is destroyed, gloo workers get time to drain.

The abort this guards against ("terminate called without an active exception" at interpreter exit,
5 of 87 two-rank gloo launches before the fix) is a race, so it is measured by
``benchmarks/torchrun_exit_stress.py``; here the order of the steps and the CLI's use of them are pinned.
"""
import os
import subprocess
import sys

import sslab.cli as cli
from sslab.core import distributed as dist_utils


def _record_calls(monkeypatch, initialised=True):
    calls = []
    monkeypatch.setattr(dist_utils, "is_distributed", lambda: initialised)
    monkeypatch.setattr(dist_utils.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist_utils.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(dist_utils.gc, "collect", lambda: calls.append("gc"))
    monkeypatch.setattr(dist_utils.time, "sleep", lambda s: calls.append(("sleep", s)))
    return calls


def test_cleanup_meets_destroys_then_drains(monkeypatch):
    calls = _record_calls(monkeypatch)
    dist_utils.cleanup(drain_seconds=0.3)
    assert calls == ["barrier", "destroy", "gc", ("sleep", 0.3)]


def test_cleanup_is_a_no_op_without_a_process_group(monkeypatch):
    calls = _record_calls(monkeypatch, initialised=False)
    dist_utils.cleanup()
    assert calls == []


def test_cli_tears_down_after_success_but_not_after_an_error(monkeypatch, tmp_path):
    torn_down = []
    monkeypatch.setattr(cli.dist_utils, "cleanup", lambda: torn_down.append(True))
    assert cli.main(["list"]) == 0
    assert torn_down == [True]
    # a failing command must not enter a collective teardown (a peer may be stuck mid-collective)
    assert cli.main(["probe", str(tmp_path / "missing")]) == 2
    assert torn_down == [True]


def test_torchrun_cli_pretrain_exits_cleanly(tmp_path):
    """``torchrun -m sslab.cli pretrain`` (2 gloo ranks) trains, exports from rank 0 and exits with 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    exp = tmp_path / "exp.yaml"
    exp.write_text("data: {source: digits}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sslab.cli", "pretrain", str(exp), "modality=vector", "encoder.name=mlp", "encoder.in_dim=64",
           "encoder.dim=16", "objective.name=masked_feature", "objective.in_dim=64", "train.steps=3",
           "train.batch_size=8", "train.progress=false", f"output_dir={tmp_path}", "name=r"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "r" / "encoder" / "encoder.safetensors").is_file()
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 3  # rank 0 logs, once per step
