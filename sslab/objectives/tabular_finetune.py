"""Supervised fine-tuning of a TabUnit encoder on a labelled table (UniTabE Sec. 3.4, "fine-tuning").

A linear head on [CLS] (after LayerNorm) is trained jointly with the encoder (or with the encoder frozen).
Because the encoder reads column names, a fine-tuned predictor accepts extra columns later
("incremental columns"): call :func:`finetune` again with the wider table and ``model=`` the predictor.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from sslab.datasets.tables_tokenize import TableCollator, TableRows


class TabularPredictor(nn.Module):
    """Encoder + LayerNorm + linear head on [CLS]. ``n_out`` = classes (2 for binary) or 1 (regression)."""

    def __init__(self, encoder: nn.Module, n_out: int, task: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.task = task
        self.head = nn.Sequential(nn.LayerNorm(encoder.dim), nn.Linear(encoder.dim, n_out))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def forward(self, inputs: dict) -> torch.Tensor:
        return self.head(self.encoder.pool(self.encoder(inputs)))


@dataclass
class FinetuneConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-4
    head_lr: float = 3e-3
    weight_decay: float = 1e-4
    freeze_encoder: bool = False


def finetune(encoder: Optional[nn.Module], rows: TableRows, task: str, n_classes: int = 2,
             cfg: FinetuneConfig = FinetuneConfig(), seed: int = 0, model: Optional[TabularPredictor] = None,
             progress: Optional[bool] = None) -> TabularPredictor:
    """Train a :class:`TabularPredictor` on labelled ``rows`` (a copy of ``encoder``; or continue ``model``)."""
    if rows.labels is None:
        raise ValueError("finetune needs labelled TableRows (one table + labels)")
    torch.manual_seed(seed)
    if model is None:
        if encoder is None:
            raise ValueError("finetune needs an encoder or a model to continue")
        model = TabularPredictor(copy.deepcopy(encoder), 1 if task == "regression" else n_classes, task)
        if task == "regression":
            y = torch.as_tensor(np.asarray(rows.labels, dtype=np.float32))
            model.y_mean.fill_(float(y.mean()))
            model.y_std.fill_(float(y.std()) or 1.0)
    for p in model.encoder.parameters():
        p.requires_grad_(not cfg.freeze_encoder)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.head_lr}]
    if not cfg.freeze_encoder:
        groups.append({"params": list(model.encoder.parameters()), "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(rows, batch_size=cfg.batch_size, shuffle=True, collate_fn=TableCollator(), generator=gen)
    epochs = range(cfg.epochs)
    from sslab.core.progress import show_progress

    if show_progress(progress):
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="fine-tune", leave=False)
    model.train()
    for _ in epochs:
        for inputs, y in loader:
            out = model(inputs)
            if task == "regression":
                loss = F.mse_loss(out.squeeze(-1), (y.float() - model.y_mean) / model.y_std)
            else:
                loss = F.cross_entropy(out, y.long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: TabularPredictor, rows: TableRows, batch_size: int = 256) -> np.ndarray:
    """binary: P(class 1); multiclass: probabilities [N, K]; regression: values."""
    model.eval()
    outs = []
    for inputs, _ in DataLoader(rows, batch_size=batch_size, collate_fn=TableCollator()):
        out = model(inputs)
        if model.task == "regression":
            outs.append((out.squeeze(-1) * model.y_std + model.y_mean).numpy())
        else:
            p = out.softmax(-1).numpy()
            outs.append(p[:, 1] if model.task == "binary" else p)
    return np.concatenate(outs)


def training_loss(model: TabularPredictor, rows: TableRows) -> float:
    """Mean loss of ``model`` on labelled ``rows`` (eval mode)."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for inputs, y in DataLoader(rows, batch_size=256, collate_fn=TableCollator()):
            out = model(inputs)
            if model.task == "regression":
                loss = F.mse_loss(out.squeeze(-1), (y.float() - model.y_mean) / model.y_std, reduction="sum")
            else:
                loss = F.cross_entropy(out, y.long(), reduction="sum")
            total, n = total + float(loss), n + len(y)
    return total / n
