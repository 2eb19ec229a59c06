"""A run directory survives kills, double launches, config changes, bad values and a full disk
(issue 17). Each test reproduces one failure of the trainer before the fix."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from core_fixtures import RegressionData, make_cfg, make_objective
from sslab.cli import exit_code, main
from sslab.core.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from sslab.core.config import ConfigError, load_experiment
from sslab.core.errors import ConfigChangedError, DiskFullError, RunDirError, RunDirLockedError
from sslab.core.rundir import LOCK_NAME
from sslab.core.trainer import Trainer


def _fit(run: Path, *overrides: str) -> Trainer:
    trainer = Trainer(make_objective(), RegressionData(), None, make_cfg(run, ["train.batch_size=16", *overrides]), run)
    trainer.fit()
    return trainer


def _steps(run: Path):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_metrics_start_empty_without_checkpoint_and_are_cut_to_the_resumed_step(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    # a launch killed before its first checkpoint logged steps 1-3 and half a line
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3))
                                       + '{"step": 4, "lo')
    _fit(run, "train.steps=4")
    assert _steps(run) == [1, 2, 3, 4]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"] != 9.0
    # killed after logging steps 5-6 past the step-4 checkpoint (and mid-line): relaunch logs them once
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"step": 5, "loss": 9.0}) + "\n" + json.dumps({"step": 6, "loss": 9.0}) + "\n{\"st")
    _fit(run, "train.steps=8")
    assert _steps(run) == list(range(1, 9))


def test_orphaned_temp_files_are_removed_at_the_next_start(tmp_path):
    run = tmp_path / "r"
    _fit(run, "train.steps=2")
    orphans = [run / "checkpoints" / ".step_00000004.pt.k3j2x9.tmp", run / ".config.yaml.ab12cd.tmp"]
    for p in orphans:
        p.write_bytes(b"\0" * 100_000)  # what a SIGKILL mid-write leaves
    user_file = run / "notes.tmp"
    user_file.write_text("mine")
    _fit(run, "train.steps=4")
    assert not any(p.exists() for p in orphans)
    assert user_file.exists()


def test_pruning_and_plot_happen_after_a_kill_between_rename_and_prune(tmp_path):
    run = tmp_path / "r"
    args = ("train.steps=6", "train.ckpt_every=2", "train.keep_last=2")
    _fit(run, *args)
    ckpts = run / "checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000004.pt", "step_00000006.pt"]
    # state after a kill right after the last checkpoint's rename: an older one not pruned, no plot yet
    (ckpts / "step_00000002.pt").write_bytes((ckpts / "step_00000004.pt").read_bytes())
    (run / "loss.png").unlink()
    _fit(run, *args)  # relaunch: nothing left to train
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000004.pt", "step_00000006.pt"]
    assert (run / "loss.png").stat().st_size > 1000


HOLDER = """
import sys, time
from sslab.core.rundir import acquire_lock
acquire_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def _vector_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "v", "modality": "vector", "output_dir": str(tmp_path / "runs"),
        "encoder": {"name": "mlp", "in_dim": 64, "dim": 16}, "objective": {"name": "masked_feature", "in_dim": 64},
        "train": {"steps": 3, "batch_size": 32, "progress": False}}))
    return path


def test_second_launch_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys, caplog):
    exp = _vector_yaml(tmp_path)
    run = tmp_path / "runs" / "v"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLockedError, match=f"in use by pid {holder.pid} on host"):
            _fit(run, "train.steps=2")
        capsys.readouterr()
        assert main(["pretrain", str(exp)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"in use by pid {holder.pid}" in err
        assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (run / LOCK_NAME).exists()  # SIGKILL leaves the file; the kernel dropped the lock
    assert main(["pretrain", str(exp)]) == 0
    assert "taking over the stale lock" in caplog.text and f"pid {holder.pid}" in caplog.text
    assert not (run / LOCK_NAME).exists()


def test_a_lock_left_by_another_host_is_not_taken_over(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "gpu-node-17", "started": "yesterday"}))
    with pytest.raises(RunDirLockedError, match=r"pid 4242 on host gpu-node-17.*delete .*\.sslab\.lock"):
        _fit(run, "train.steps=2")


def test_resume_refuses_a_training_change_unless_forced(tmp_path, caplog):
    run = tmp_path / "r"
    _fit(run, "train.steps=6", "train.ckpt_every=2", "train.stop_after=2")
    with pytest.raises(ConfigChangedError, match=r"optim\.lr 0\.01 -> 1000000\.0.*train\.resume=force"):
        _fit(run, "train.steps=6", "train.ckpt_every=2", "optim.lr=1e6")
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert latest_checkpoint(run / "checkpoints").name == "step_00000002.pt"
    # harmless keys (logging, cadence, launch length) need no force; the change is recorded
    _fit(run, "train.steps=6", "train.ckpt_every=1", "train.log_every=2", "train.stop_after=1")
    records = [json.loads(x) for x in (run / "config_changes.jsonl").read_text().splitlines()]
    assert records[-1]["forced"] is False and "train.log_every" in records[-1]["changes"]
    _fit(run, "train.steps=6", "train.ckpt_every=2", "optim.lr=0.02", "train.resume=force")
    records = [json.loads(x) for x in (run / "config_changes.jsonl").read_text().splitlines()]
    assert records[-1]["forced"] is True and records[-1]["step"] == 3
    assert records[-1]["changes"]["optim.lr"] == [0.01, 0.02]
    assert "train.resume=force" in caplog.text
    assert yaml.safe_load((run / "config.before_step_00000003.yaml").read_text())["optim"]["lr"] == 0.01
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.02
    assert _steps(run) == list(range(1, 7))
    with pytest.raises(ConfigChangedError, match=r"train\.steps 6 -> 5"):  # shortening changes the schedule
        _fit(run, "train.steps=5")
    with pytest.raises(RunDirError, match="train.resume=false but .* holds checkpoints"):
        _fit(run, "train.steps=6", "train.resume=false")


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("train.ckpt_every=-5", "train.ckpt_every"), ("optim.betas=[0.9, 1.5]", "optim.betas[1]"),
    ("optim.eps=-1e-8", "optim.eps"), ("train.keep_last=-1", "train.keep_last"), ("train.log_every=0", "train.log_every"),
    ("optim.weight_decay=.nan", "optim.weight_decay"), ("train.resume=maybe", "train.resume"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('[', '.').replace(']', '.')}: "):
        load_experiment(None, [override])


def test_trainer_validates_a_config_changed_after_loading(tmp_path):
    cfg = make_cfg(tmp_path / "r")
    cfg.optim.lr = -1.0
    with pytest.raises(ConfigError, match=r"optim\.lr: must be a finite number >= 0, got -1\.0"):
        Trainer(make_objective(), RegressionData(), None, cfg, tmp_path / "r")


def test_cli_prints_one_line_and_exits_2_for_user_errors_1_for_failures(tmp_path, capsys, monkeypatch):
    exp = _vector_yaml(tmp_path)
    for override, expected in [("optim.lr=-1", "optim.lr: must be"), ("train.ckpt_every=-5", "train.ckpt_every: must be"),
                               ("optim.lr=1e30", "non-finite loss at step")]:
        assert main(["pretrain", str(exp), override, "optim.clip_grad=null"]) == 2, override
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err

    def boom(cfg):
        raise RuntimeError("boom")

    monkeypatch.setattr("sslab.run.pretrain", boom)
    assert main(["pretrain", str(exp)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "sslab pretrain: error: unexpected RuntimeError: boom (rerun with SSLAB_DEBUG=1 for the traceback)"
    monkeypatch.setenv("SSLAB_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["pretrain", str(exp)])


def test_full_disk_keeps_previous_checkpoints_and_says_so(tmp_path, monkeypatch):
    run = tmp_path / "r"
    args = ("train.steps=4", "train.ckpt_every=2")
    _fit(run, *args, "train.stop_after=2")
    import sslab.core.checkpoint as ck

    def full_disk_save(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full_disk_save)
    with pytest.raises(DiskFullError, match=r"step_00000004\.pt: no space left on device; the previous checkpoint "
                                            r"step_00000002\.pt is intact") as info:
        _fit(run, *args)
    assert exit_code(info.value) == 2
    monkeypatch.undo()
    ckpts = run / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["step_00000002.pt"]  # no temp file, nothing pruned
    assert load_checkpoint(ckpts / "step_00000002.pt")["step"] == 2
    _fit(run, *args)  # space freed: the relaunch resumes and finishes
    assert _steps(run) == [1, 2, 3, 4]
    assert torch.load(ckpts / "step_00000004.pt", weights_only=False)["step"] == 4
