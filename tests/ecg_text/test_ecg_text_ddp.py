"""Rhythm-level CLIP loss under DDP (2 gloo ranks): gathered embeddings give the full-batch loss."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_clip_loss_all_gather_matches_full_batch(tmp_path):
    out = tmp_path / "ddp.json"
    script = Path(__file__).with_name("ecg_text_ddp_script.py")
    root = Path(__file__).resolve().parents[2]
    # a port found free can be taken before the ranks bind it: retry with a new port, show stderr if all fail
    for attempt in range(3):
        proc = subprocess.run([sys.executable, str(script), _free_port(), str(out)], cwd=root, timeout=240,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    mean_rank = sum(r["loss"] for r in res["ranks"]) / 2
    # open_clip "local loss": each rank scores its rows against the global batch -> mean = full-batch loss
    assert abs(mean_rank - res["full"]) < 1e-5
    assert res["ranks"][0]["loss"] != res["ranks"][1]["loss"]
    # rank r's rows receive d(sum of both rank losses) = 2 x d(full-batch loss): the gather is differentiable
    full_grad = torch.tensor(res["full_grad"])
    got = torch.cat([torch.tensor(r["grad"]) for r in res["ranks"]])
    assert torch.allclose(got, 2 * full_grad, atol=1e-5)
