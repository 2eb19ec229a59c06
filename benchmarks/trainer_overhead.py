"""Trainer overhead: our Trainer vs a plain hand-written PyTorch loop on the same small transformer.

Both run the same model, data, batch size, AdamW and gradient clipping for the same number of steps,
alternating (ours, plain, ours, plain, ...) so machine noise hits both. Prints steps/s of each and the
ratio (target: ours >= 0.95x plain).  Usage: OMP_NUM_THREADS=1 python benchmarks/trainer_overhead.py [--steps 150 --rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sslab.core.config import load_experiment
from sslab.core.trainer import Trainer


class Tokens(Dataset):
    def __init__(self, n: int, seq: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab, (n, seq), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


class TinyLM(nn.Module):
    """Two-layer transformer predicting the next token (a stand-in objective with realistic compute)."""

    def __init__(self, vocab: int = 512, dim: int = 128) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x: torch.Tensor) -> dict:
        h = self.encoder(self.emb(x[:, :-1]))
        loss = nn.functional.cross_entropy(self.head(h).flatten(0, 1), x[:, 1:].flatten())
        return {"loss": loss}


def run_ours(steps: int, batch: int, data: Dataset) -> float:
    torch.manual_seed(0)
    model = TinyLM()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_experiment(None, [f"output_dir={tmp}", "name=bench", f"train.steps={steps}",
                                     f"train.batch_size={batch}", "optim.schedule=constant",
                                     "optim.lr=1e-3", "train.progress=false"])
        trainer = Trainer(model, data, None, cfg, Path(tmp) / "bench")
        t = time.perf_counter()
        trainer.fit()
        return steps / (time.perf_counter() - t)


def run_plain(steps: int, batch: int, data: Dataset) -> float:
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    t = time.perf_counter()
    done = 0
    while done < steps:
        for x in loader:
            loss = model(x)["loss"]
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            done += 1
            if done == steps:
                break
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = Tokens(4096, 64, 512)
    ours, plain = [], []
    for _ in range(args.rounds):
        ours.append(run_ours(args.steps, args.batch, data))
        plain.append(run_plain(args.steps, args.batch, data))
    o, p = statistics.median(ours), statistics.median(plain)
    print(f"ours : {o:.2f} steps/s  (rounds: {', '.join(f'{v:.2f}' for v in ours)})")
    print(f"plain: {p:.2f} steps/s  (rounds: {', '.join(f'{v:.2f}' for v in plain)})")
    print(f"ratio ours/plain: {o / p:.3f}  (target >= 0.95; includes our checkpoint at the end, "
          "metrics.jsonl and loss plot)")


if __name__ == "__main__":
    main()
