"""Fault injection: SIGKILL a small pretraining run again and again, relaunch until it finishes, and check
the run directory against an uninterrupted run.

Each launch is a forked child running ``sslab.run.pretrain`` (the same code path as ``sslab pretrain``:
run-directory lock, config check, resume, checkpoints, metrics, export). The child's checkpoint writer
is wrapped so that it announces two moments on a pipe and pauses briefly at each:

* ``W``: half of the checkpoint's bytes are in the temp file (not yet renamed): a kill here is a kill
  *during a checkpoint write*;
* ``R``: the checkpoint was renamed into place but older ones are not yet pruned;
* ``S``: a training step ended (a step hook).

Kill modes: ``early`` first in every trial (after a random step before the first checkpoint, so
``metrics.jsonl`` has lines but there is no checkpoint), then in turn ``random`` (SIGKILL after a uniform
random delay), ``write`` (at the k-th ``W``), ``prune`` (at the k-th ``R``), ``early`` (after a random
step k < ``ckpt_every`` of this launch) and ``double`` (the first launch is frozen with SIGSTOP mid-write, holding the lock; a second launch
must be refused with the holder's pid, then the first is killed). A kill is counted as ``before first checkpoint``
when no complete checkpoint existed when it landed.

Trials: each trial is a fresh run directory, killed ``--kills-per-trial`` times and then relaunched until
a launch exits 0. Checks per trial: the final checkpoint's parameters and optimizer state are
bit-identical (``torch.equal``) to the uninterrupted run's, ``metrics.jsonl`` holds every step exactly
once with the uninterrupted run's loss values, no temp file and no lock file is left, exactly
``train.keep_last`` checkpoints (the newest) remain, and ``loss.png`` exists.

    OMP_NUM_THREADS=1 python benchmarks/fault_injection.py --kills 24

prints the counts and exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

MODES = ("random", "write", "prune", "double", "early")


def run_overrides(out: Path, name: str, steps: int, ckpt_every: int, keep_last: int) -> List[str]:
    """A small, fast run of the reference ``vector`` modality (masked features on digits, MLP encoder)."""
    return ["modality=vector", "encoder.name=mlp", "encoder.in_dim=64", "encoder.dim=16",
            "objective.name=masked_feature", "objective.in_dim=64", f"train.steps={steps}",
            "train.batch_size=32", "train.progress=false", "train.log_every=1", f"train.ckpt_every={ckpt_every}",
            f"train.keep_last={keep_last}", "optim.warmup_steps=3", f"output_dir={out}", f"name={name}"]


# --------------------------------------------------------------------------- child


def _child(overrides: Sequence[str], wfd: int, pause: float) -> None:
    """Forked launch: pretrain with an announcing checkpoint writer; exit 0 done, 2 user error, 1 other."""
    import sslab.core.checkpoint as ck
    from sslab.core.config import load_experiment
    from sslab.core.errors import UserError
    from sslab.run import pretrain

    real_atomic_write = ck.atomic_write

    def announcing_atomic_write(path, writer):  # type: ignore[no-untyped-def]
        def half_then_rest(tmp: Path) -> None:
            buf = io.BytesIO()
            writer(buf)  # torch.save into memory, then the file in two halves
            data = buf.getvalue()
            with open(tmp, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.write(wfd, b"W")
                time.sleep(pause)
                fh.write(data[len(data) // 2:])
        real_atomic_write(path, half_then_rest)
        os.write(wfd, b"R")
        time.sleep(pause)

    def announce_step(step: int, total: int, trainer: Any) -> None:
        os.write(wfd, b"S")

    ck.atomic_write = announcing_atomic_write
    code = 0
    try:
        pretrain(load_experiment(None, list(overrides)), hooks=[announce_step])
    except UserError as err:
        os.write(wfd, b"E" + str(err).encode()[:2000])
        code = 2
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    os._exit(code)


class Launch:
    """One forked launch and the markers it has sent so far."""

    def __init__(self, overrides: Sequence[str], pause: float) -> None:
        ctx = mp.get_context("fork")
        self.rfd, wfd = os.pipe()
        self.proc = ctx.Process(target=_child, args=(list(overrides), wfd, pause), daemon=True)
        self.proc.start()
        os.close(wfd)
        self.markers = b""

    def wait_marker(self, marker: bytes, count: int, timeout: float) -> bool:
        """Block until ``marker`` was seen ``count`` times (True) or the child exited / timed out (False)."""
        deadline = time.time() + timeout
        while self.markers.count(marker) < count:
            left = deadline - time.time()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 65536)
                if not chunk:  # child closed the pipe: it exited
                    return False
                self.markers += chunk
        return True

    def drain(self) -> None:
        while select.select([self.rfd], [], [], 0)[0]:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                break
            self.markers += chunk

    def kill(self) -> bool:
        """SIGKILL; True if the child was still running."""
        alive = self.proc.is_alive()
        if alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join()
        self.drain()
        os.close(self.rfd)
        return alive and self.proc.exitcode == -signal.SIGKILL

    def wait(self, timeout: float = 600) -> int:
        self.proc.join(timeout)
        self.drain()
        os.close(self.rfd)
        return int(self.proc.exitcode if self.proc.exitcode is not None else -1)

    @property
    def error(self) -> str:
        i = self.markers.find(b"E")
        return self.markers[i + 1:].decode(errors="replace") if i >= 0 else ""


# --------------------------------------------------------------------------- checks


def _tensor_diffs(a: Any, b: Any, where: str = "") -> List[str]:
    """Paths at which two nested state dicts differ (tensors compared bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys differ"]
        return [d for k in a for d in _tensor_diffs(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: lengths differ"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _tensor_diffs(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def check_run(run: Path, reference: Path, steps: int, keep_last: int) -> Dict[str, Any]:
    """Compare a relaunched run directory with the uninterrupted one; every count should be 0."""
    from sslab.core.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
    from sslab.core.io import is_atomic_temp
    from sslab.core.metrics import read_metrics

    a = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(reference / "checkpoints"))
    rows, ref_rows = read_metrics(run), read_metrics(reference)
    seen = Counter(r["step"] for r in rows)
    ref_loss = {r["step"]: r["loss"] for r in ref_rows}
    ckpts = [p.name for p in list_checkpoints(run / "checkpoints")]
    ref_ckpts = [p.name for p in list_checkpoints(reference / "checkpoints")]
    return {
        "param_diffs": len(_tensor_diffs(a["objective"], b["objective"])),
        "optimizer_diffs": len(_tensor_diffs(a["optimizer"], b["optimizer"])),
        "step_mismatch": int(a["step"] != b["step"] or a["step"] != steps),
        "metrics_duplicate_steps": sum(n - 1 for n in seen.values() if n > 1),
        "metrics_missing_steps": len(set(range(1, steps + 1)) - set(seen)),
        "metrics_loss_diffs": sum(1 for r in rows if ref_loss.get(r["step"]) != r["loss"]),
        "temp_files_left": sum(1 for p in run.rglob("*") if p.is_file() and is_atomic_temp(p)),
        "lock_left": int((run / ".sslab.lock").exists()),
        "keep_last_violations": int(ckpts != ref_ckpts or len(ckpts) != keep_last),
        "loss_png_missing": int(not (run / "loss.png").is_file()),
    }


# --------------------------------------------------------------------------- driver


def _has_checkpoint(run: Path) -> bool:
    from sslab.core.checkpoint import list_checkpoints

    return bool(list_checkpoints(run / "checkpoints"))


def run_fault_injection(kills: int = 20, steps: int = 48, ckpt_every: int = 4, keep_last: int = 3,
                        kills_per_trial: int = 8, pause: float = 0.1, seed: int = 0,
                        out: Optional[Path] = None, verbose: bool = True) -> Dict[str, Any]:
    """Kill, relaunch, check; returns the counts (``differences`` sums every failed check)."""
    rng = random.Random(seed)
    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="sslab_fault_")
        out = Path(tmp)
    out.mkdir(parents=True, exist_ok=True)
    import sslab.run  # noqa: F401  -- import (and register plugins) once, before forking
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality

    build_modality(load_experiment(None, run_overrides(out, "warmup", steps, ckpt_every, keep_last)))
    import matplotlib.figure  # noqa: F401
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo (seconds) once, not per launch

    t0 = time.time()
    ref = Launch(run_overrides(out, "reference", steps, ckpt_every, keep_last), pause)
    if ref.wait() != 0:
        raise SystemExit("the uninterrupted reference run failed")
    run_seconds = time.time() - t0
    counts: Counter = Counter()
    checks: Counter = Counter()
    trial = 0
    mode_i = rng.randrange(len(MODES))
    log = print if verbose else (lambda *a, **k: None)
    while counts["kills"] < kills:
        trial += 1
        name = f"trial{trial}"
        overrides = run_overrides(out, name, steps, ckpt_every, keep_last)
        run = out / name
        trial_kills = 0
        while trial_kills < kills_per_trial and counts["kills"] < kills:
            mode = "early" if trial_kills == 0 else MODES[mode_i % len(MODES)]
            mode_i += trial_kills > 0
            had_ckpt_before = _has_checkpoint(run)
            launch = Launch(overrides, pause)
            counts["launches"] += 1
            if mode == "random":
                time.sleep(rng.uniform(0.0, run_seconds))
                landed = True
            elif mode == "early":
                landed = launch.wait_marker(b"S", rng.randint(1, max(1, ckpt_every - 1)), 300)
            elif mode == "double":
                landed = launch.wait_marker(b"W", 1, 300)
                if landed:
                    os.kill(launch.proc.pid, signal.SIGSTOP)  # frozen mid-write, still holding the lock
                    second = Launch(overrides, pause)
                    counts["launches"] += 1
                    code = second.wait(300)
                    refused = code == 2 and "in use by" in second.error
                    counts["double_launches"] += 1
                    counts["double_launches_refused"] += int(refused)
                    if not refused:
                        log(f"  second launch not refused: exit {code} {second.error!r}")
            else:
                landed = launch.wait_marker(b"W" if mode == "write" else b"R", rng.randint(1, 2), 300)
            if launch.kill():
                counts["kills"] += 1
                trial_kills += 1
                kind = {"random": "random", "early": "after_a_step", "write": "during_checkpoint_write",
                        "double": "during_checkpoint_write", "prune": "after_rename_before_prune"}[mode]
                if not landed:
                    kind = "random"
                counts[f"kills_{kind}"] += 1
                if not (had_ckpt_before or _has_checkpoint(run)):
                    counts["kills_before_first_checkpoint"] += 1
            else:
                counts["launches_finished_before_kill"] += 1
                break  # the run is complete; check it
        while True:  # relaunch until done
            launch = Launch(overrides, pause)
            counts["launches"] += 1
            code = launch.wait()
            if code == 0:
                break
            raise SystemExit(f"{name}: relaunch failed with exit {code}: {launch.error}")
        result = check_run(run, out / "reference", steps, keep_last)
        checks.update(result)
        bad = ", ".join(f"{k}={v}" for k, v in result.items() if v)
        log(f"trial {trial}: {trial_kills} kills, checks: {bad or 'all ok'}")
    summary = {"kills": counts["kills"], **{k: v for k, v in sorted(counts.items()) if k != "kills"},
               "trials": trial, "reference_run_seconds": round(run_seconds, 2),
               "checks": dict(checks), "differences": sum(checks.values())}
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--kills-per-trial", type=int, default=8)
    p.add_argument("--pause", type=float, default=0.1, help="seconds the writer pauses at each marker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="keep the run directories here (default: a temp folder, removed)")
    a = p.parse_args(argv)
    t0 = time.time()
    summary = run_fault_injection(a.kills, a.steps, a.ckpt_every, a.keep_last, a.kills_per_trial, a.pause,
                                  a.seed, a.out)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(summary, indent=2))
    return 1 if summary["differences"] else 0


if __name__ == "__main__":
    sys.exit(main())
