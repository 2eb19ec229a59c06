"""A tiny deterministic objective and data for trainer tests (importable by torchrun scripts too)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch
from torch import nn
from torch.utils.data import Dataset

from sslab.core.config import ExperimentConfig, load_experiment
from sslab.core.export import build_encoder


class RegressionData(Dataset):
    """y = tanh(W x / 2): deterministic pairs, no randomness in the collator."""

    def __init__(self, n: int = 256, d: int = 8) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, d, generator=g)
        w = torch.randn(d, 4, generator=g)
        self.y = torch.tanh(0.5 * self.x @ w)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return {"x": self.x[i], "y": self.y[i]}


class RegressionObjective(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.dim, 4)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        pred = self.head(self.encoder.pool(self.encoder(batch["x"])))
        return {"loss": (pred - batch["y"]).pow(2).mean()}


def make_objective(seed: int = 0) -> RegressionObjective:
    torch.manual_seed(seed)
    enc = build_encoder({"name": "mlp", "in_dim": 8, "dim": 16, "hidden": [32]})
    return RegressionObjective(enc)


def make_cfg(run_dir: Path, overrides: List[str] = ()) -> ExperimentConfig:
    base = [f"output_dir={run_dir.parent}", f"name={run_dir.name}", "train.progress=false",
            "train.log_every=1", "optim.lr=0.01", "optim.warmup_steps=2", "optim.weight_decay=0.1"]
    return load_experiment(None, base + list(overrides))


def flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])
