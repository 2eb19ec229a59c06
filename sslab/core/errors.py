"""Errors the user can fix, as opposed to bugs.

``sslab.cli.main`` prints a :class:`UserError` (and the conventional bad-input built-ins ``ValueError``,
``FileNotFoundError``, ``NotADirectoryError``, ``PermissionError``) as one line and exits with status 2;
anything else is an unexpected failure: one line and status 1. ``SSLAB_DEBUG=1`` shows the traceback.

Every concrete error also derives from the built-in it replaces (``ValueError``, ``RuntimeError``, ...), so
existing ``except ValueError`` code keeps working.
"""
from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the user's input or environment; the message names the key or file and the fix."""


class RunDirError(UserError, RuntimeError):
    """The run directory cannot be used by this launch (locked by another process, config changed, ...)."""


class RunDirLockedError(RunDirError):
    """Another live process holds the run directory's lock."""


class ConfigChangedError(RunDirError):
    """Resuming with a config that changes training; the message lists the keys."""


class ResumeError(RunDirError):
    """A checkpoint that cannot be resumed by this launch (other world size, ...)."""


class DiskFullError(UserError, OSError):
    """A write failed for lack of space (ENOSPC/EDQUOT); earlier files are intact."""


class BuildError(UserError, TypeError):
    """A registered builder was called with an unknown or missing keyword (a config key)."""


DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` that means "no space left" (or quota exceeded)."""
    return isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS
