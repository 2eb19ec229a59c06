"""Distributed helpers for ``torchrun`` launches (DDP/FSDP2); all are no-ops in a single process."""
from __future__ import annotations

import gc
import os
import time
from typing import Dict

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device) -> bool:
    """Initialise the default process group from torchrun's env vars. Returns True if distributed."""
    if is_distributed():
        return True
    if not launched_by_torchrun():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def reduce_mean(values: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Average a dict of floats over ranks (metrics are reported as the global mean)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def cleanup(drain_seconds: float = 0.2) -> None:
    """Tear down the process group so the process can exit cleanly; call it once, after the last collective.

    A gloo worker thread frees each finished collective (and the tensors it holds) shortly *after* the
    caller has been woken. If the interpreter is already finalizing by then, that thread cannot take
    the GIL and the process aborts with "terminate called without an active exception" even though
    all work is done (5 of 87 two-rank CPU launches here; the upstream fix, an atexit
    teardown in pytorch/pytorch#179291, was withdrawn). So: every rank meets at a barrier, the group
    is destroyed, unreachable holders of it are collected, and the main thread sleeps for
    ``drain_seconds`` with the GIL released so the workers can drop their last references.
    """
    if not is_distributed():
        return
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()
    time.sleep(drain_seconds)
