"""One launch at a time per run directory, and no silent config change on resume.

**Lock.** ``<run_dir>/.sslab.lock`` is held with a POSIX record lock (``fcntl.lockf``) by rank 0 for the
whole launch and holds ``{"pid", "host", "started", "argv"}``. The kernel drops the lock when its process
dies (even by SIGKILL), and unlike ``flock`` it is not inherited by forked DataLoader workers that might
outlive a killed trainer for a few seconds. A lock file left behind by a dead process is therefore *stale*:
the next launch on the same host sees it, checks that the recorded pid is gone (or is another process
now), takes the lock over and says so. A lock recorded by another host is never taken over automatically
(its process cannot be checked from here, and not every network filesystem shares locks); the error names
the file to delete. A second launch while the first is alive fails at once with the holder's pid, host and command.

**Config check.** On resume, the resolved config is compared with the run's saved ``config.yaml``.
A change to any key that alters the training trajectory (learning rate, batch, model, data, objective,
seed, steps, schedule, precision, ...) is refused with the list of changed keys, unless
``train.resume=force``: then the change is logged, appended to ``<run_dir>/config_changes.jsonl``
(time, step, old and new values) and the previous ``config.yaml`` is kept as
``config.before_step_<N>.yaml``. Keys in :data:`HARMLESS_KEYS` / :data:`HARMLESS_PREFIXES` only affect
logging, checkpoint cadence, speed or the later probe, never the weights; changing them needs no force
(the change is still recorded). Raising ``train.steps`` (training longer) is allowed with a warning: the
schedules tied to the total are stretched from the resumed step on; lowering it needs force.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

import yaml

from sslab.core.config import ConfigError, ExperimentConfig, from_dict, save_experiment, to_dict
from sslab.core.errors import ConfigChangedError, RunDirLockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".sslab.lock"
CHANGES_NAME = "config_changes.jsonl"

# Keys that never change the weights a run produces (see the module docstring and docs/core.md).
HARMLESS_KEYS = frozenset({
    "name", "output_dir",  # where the run lives (moving a run folder is fine)
    "train.progress", "train.log_every", "train.tensorboard",  # what is shown / logged
    "train.ckpt_every", "train.keep_last", "train.stop_after", "train.resume",  # checkpoint cadence, launch length
    "train.num_workers",  # data loading processes: samples and masks are seeded per sample, not per worker
    "data.cache_dir",  # where decoded data is cached (the cache is keyed on its content)
})
HARMLESS_PREFIXES = ("probe.", "data.probe", "data.beat_probe")  # evaluation after pretraining

_MISSING = "<absent>"
_held: Dict[str, Tuple[int, int]] = {}  # resolved run dir -> (lock fd, nesting depth) in this process


# --------------------------------------------------------------------------- lock


def _proc_start(pid: int) -> Optional[str]:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _proc_start(pid) in (None, start)


def _owner_text(owner: Mapping[str, Any]) -> str:
    argv = " ".join(str(a) for a in owner.get("argv", []))[:200]
    return (f"pid {owner.get('pid')} on host {owner.get('host')} (started {owner.get('started')}"
            + (f"; command: {argv}" if argv else "") + ")")


def _read_owner(fd: int) -> Dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        owner = json.loads(raw.decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": None, "host": None, "started": "?", "unreadable": raw[:100].decode(errors="replace")}
    return owner if isinstance(owner, dict) else {}


def acquire_lock(run_dir: Union[str, Path]) -> int:
    """Take ``run_dir``'s lock (creating the folder); returns the fd to pass to :func:`release_lock`.

    Raises :class:`RunDirLockedError` when a live process holds it or it was left by another host.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    host = socket.gethostname()
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            owner = _read_owner(fd)
            os.close(fd)
            raise RunDirLockedError(
                f"run directory {run_dir} is in use by {_owner_text(owner)}; wait for it to finish, "
                "or launch with another name=/output_dir=") from None
        try:  # its previous holder may have unlinked the file between our open() and lockf()
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:
            os.close(fd)
            continue
        previous = _read_owner(fd)
        if previous:
            if previous.get("host") not in (None, host):
                os.close(fd)
                raise RunDirLockedError(
                    f"run directory {run_dir} is locked by {_owner_text(previous)}, which cannot be checked from "
                    f"host {host}; if that process is gone, delete {path} and relaunch")
            pid = previous.get("pid")
            why = ("the process is gone" if not isinstance(pid, int) or not _alive(pid, previous.get("proc_start"))
                   else "the pid now belongs to another process")
            log.warning("taking over the stale lock of %s left by %s: %s", run_dir, _owner_text(previous), why)
        me = {"pid": os.getpid(), "host": host, "proc_start": _proc_start(os.getpid()),
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        return fd
    raise RunDirLockedError(f"run directory {run_dir}: could not take {path} (it keeps being replaced)")


def release_lock(run_dir: Union[str, Path], fd: int) -> None:
    """Remove the lock file, then drop the lock (in that order, so no one can lock a file being unlinked)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(run_dir) / LOCK_NAME)
    os.close(fd)


@contextlib.contextmanager
def hold_run_dir(run_dir: Union[str, Path], enabled: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (re-entrant within one process; ``enabled=False``: no-op,
    for ranks other than 0)."""
    if not enabled:
        yield
        return
    key = str(Path(run_dir).resolve())
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    fd = acquire_lock(run_dir)
    _held[key] = (fd, 1)
    try:
        yield
    finally:
        del _held[key]
        release_lock(run_dir, fd)


# --------------------------------------------------------------------------- config check


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, Mapping) and (d or not prefix):
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def is_harmless(key: str) -> bool:
    """True for a config key whose change cannot alter the trained weights."""
    return key in HARMLESS_KEYS or any(key.startswith(p) for p in HARMLESS_PREFIXES)


def _is_extension(key: str, old: Any, new: Any) -> bool:
    """``train.steps`` raised: training longer is allowed without force (with a warning), shortening is not."""
    return key == "train.steps" and isinstance(old, int) and isinstance(new, int) and new > old


def _resolved(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """The saved YAML with defaults filled in (so a field added to a dataclass later is not a 'change')."""
    try:
        return to_dict(from_dict(ExperimentConfig, raw))
    except ConfigError:  # a key that no longer exists: compare as written
        return dict(raw)


def config_changes(saved: Mapping[str, Any], cfg: ExperimentConfig) -> Dict[str, Tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every key that differs."""
    old, new = _flatten(_resolved(saved)), _flatten(to_dict(cfg))
    return {k: (old.get(k, _MISSING), new.get(k, _MISSING)) for k in sorted(set(old) | set(new))
            if old.get(k, _MISSING) != new.get(k, _MISSING)}


def _fmt(changes: Mapping[str, Tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())


def check_and_save_config(run_dir: Union[str, Path], cfg: ExperimentConfig, resume_step: Optional[int]) -> None:
    """Compare ``cfg`` with ``run_dir/config.yaml`` when resuming from ``resume_step``, then save ``cfg``.

    ``resume_step=None`` (nothing to resume) just writes the config. See the module docstring for the rules.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if resume_step is not None and path.is_file():
        try:
            saved = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigChangedError(f"{path}: cannot read the saved config to compare ({err}); "
                                     "restore it or pass train.resume=force") from None
        changes = config_changes(saved, cfg)
        if changes:
            breaking = {k: v for k, v in changes.items() if not is_harmless(k) and not _is_extension(k, *v)}
            if "train.steps" in changes and "train.steps" not in breaking:
                log.warning("resuming %s at step %d with train.steps %s -> %s: schedules that depend on the total "
                            "(cosine LR and weight decay, EMA momentum) are stretched from here on, so the result "
                            "differs from a run launched with train.steps=%s", run_dir, resume_step,
                            *changes["train.steps"], changes["train.steps"][1])
            forced = cfg.train.resume == "force"
            if breaking and not forced:
                raise ConfigChangedError(
                    f"resuming {run_dir} at step {resume_step} with a config that changes training: "
                    f"{_fmt(breaking)} (saved in {path}); relaunch with the saved values, use another name=, "
                    f"or pass train.resume=force to continue anyway (recorded in {run_dir / CHANGES_NAME})")
            record = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "step": resume_step, "forced": bool(breaking),
                      "changes": {k: [a, b] for k, (a, b) in changes.items()}}
            with (run_dir / CHANGES_NAME).open("a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
            if breaking:
                keep = run_dir / f"config.before_step_{resume_step:08d}.yaml"
                shutil.copyfile(path, keep)
                log.warning("train.resume=force: resuming %s at step %d with changed training config: %s "
                            "(previous config kept as %s)", run_dir, resume_step, _fmt(breaking), keep.name)
    save_experiment(cfg, path)
