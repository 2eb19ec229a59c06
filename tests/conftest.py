"""Shared fixtures: real sample data in ../shared/data (skips with a reason when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SSLAB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

torch.set_num_threads(1)  # tiny models: one thread is faster and keeps parallel test workers apart
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $SSLAB_SHARED_DATA); tests needing real data skip when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set SSLAB_SHARED_DATA)")
    return SHARED_DATA
