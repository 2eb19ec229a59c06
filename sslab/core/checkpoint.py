"""Atomic checkpoints with keep-last-k and full training state for exact resume.

Files are ``checkpoints/step_00001000.pt``. Each is written to a temp file and renamed, so a crash
mid-write leaves the previous checkpoints intact and never a truncated ``step_*.pt``. A write that fails
(full disk: ENOSPC) removes its temp file and raises :class:`~sslab.core.errors.DiskFullError`; pruning
happens only after a successful write. Temp files orphaned by a SIGKILL mid-write are removed by
:func:`remove_orphaned_temps` at the next start (``Trainer.fit``, under the run-directory lock).
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from sslab.core.errors import DiskFullError, UserError, is_disk_full
from sslab.core.io import atomic_write, is_atomic_temp

_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read; the message names the file."""


def checkpoint_path(directory: Union[str, Path], step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: Union[str, Path]) -> List[Path]:
    """Complete checkpoints in ``directory``, oldest first (temp files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Union[str, Path]) -> Optional[Path]:
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None


def save_checkpoint(state: Dict[str, Any], directory: Union[str, Path], step: int, keep_last: int = 3) -> Path:
    """Atomically write ``state`` as the checkpoint of ``step`` and prune to ``keep_last`` files."""
    path = checkpoint_path(directory, step)
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except (OSError, RuntimeError) as err:  # torch.save wraps some write errors in RuntimeError
        if is_disk_full(err) or "No space left" in str(err):
            latest = latest_checkpoint(directory)
            kept = f"the previous checkpoint {latest.name} is intact" if latest else "no earlier checkpoint exists"
            raise DiskFullError(f"cannot write checkpoint {path}: no space left on device; {kept}; "
                                "free space and relaunch the same command to resume") from err
        raise
    prune_checkpoints(directory, keep_last)
    return path


def prune_checkpoints(directory: Union[str, Path], keep_last: int) -> List[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last <= 0`` keeps all); returns the deleted."""
    if keep_last <= 0:
        return []
    old = list_checkpoints(directory)[:-keep_last]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def remove_orphaned_temps(*directories: Union[str, Path]) -> List[Path]:
    """Delete the temp files of atomic writes that were killed midway (only call while holding the run lock)."""
    removed = []
    for d in directories:
        d = Path(d)
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.is_file() and is_atomic_temp(p):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    ``weights_only=False`` because the state holds numpy/python RNG states; only load checkpoints
    you wrote yourself.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # corrupt zip, truncated file, wrong format
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "step" not in state or "objective" not in state:
        raise CheckpointError(f"checkpoint {path} is not an sslab training checkpoint")
    return state


def rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
