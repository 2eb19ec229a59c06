"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader therefore sees either the old complete file or the new complete file, never half of one,
even if the writer is killed midway (POSIX ``rename`` is atomic within one filesystem).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

PathLike = Union[str, Path]
TEMP_SUFFIX = ".tmp"


def is_atomic_temp(path: PathLike) -> bool:
    """True for a temp file made by :func:`atomic_path` (``.<name>.<random>.tmp``), e.g. orphaned by a kill."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and name.count(".") >= 3


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))
