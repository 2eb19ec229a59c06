"""The one place that decides whether a progress bar is drawn.

Bars only help a person watching a terminal; in a redirected log (``> run.log``, a batch job) every
refresh becomes a line. So: ``progress=None`` (the default everywhere, ``train.progress`` unset) draws a
bar only when ``sys.stderr`` is a TTY; an explicit ``True`` (``train.progress=true``) or ``False`` wins.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Optional


def show_progress(progress: Optional[bool] = None) -> bool:
    """``progress`` when given, else whether ``sys.stderr`` is a terminal."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # closed / detached stream
        return False


def progress_bar(iterable: Optional[Iterable[Any]] = None, progress: Optional[bool] = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, disabled unless :func:`show_progress` says otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not show_progress(progress), **kwargs)
