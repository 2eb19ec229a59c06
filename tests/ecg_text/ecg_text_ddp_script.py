"""Run by test_ecg_text_ddp.py: 2 gloo ranks compute MELP's CLIP loss on their half of a batch with the
differentiable all-gather; prints the mean rank loss, the single-process full-batch loss and whether
each rank's gradient, which must equal world_size x the full-batch gradient of its rows (the
all-gather back-propagates the other rank's loss into this rank's rows)."""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F


def data():
    g = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(8, 6, generator=g), dim=-1), F.normalize(torch.randn(8, 6, generator=g), dim=-1)


def worker(rank: int, world: int, port: str, out: str) -> None:
    from sslab.core.distributed import cleanup
    from sslab.objectives.melp import clip_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    e, t = data()
    half = slice(rank * 4, rank * 4 + 4)
    el, tl = e[half].clone().requires_grad_(True), t[half].clone().requires_grad_(True)
    loss, acc = clip_loss(el, tl, torch.tensor(3.0))
    loss.backward()
    vals = [None] * world
    dist.all_gather_object(vals, {"loss": float(loss), "grad": el.grad.tolist()})
    if rank == 0:
        e.requires_grad_(True)
        full, _ = clip_loss(e, t, torch.tensor(3.0), gather=False)
        full.backward()
        json.dump({"ranks": vals, "full": float(full), "full_grad": e.grad.tolist()}, open(out, "w"))
    cleanup()  # barrier, destroy, let gloo's workers drain before the interpreter exits


if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.spawn(worker, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
