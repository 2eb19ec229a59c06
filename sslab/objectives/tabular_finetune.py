"""Supervised fine-tuning of a TabUnit encoder on a labelled table (UniTabE Sec. 3.4, "fine-tuning").

A linear head on [CLS] (after LayerNorm) is trained jointly with the encoder (or with the encoder frozen).
Because the encoder reads column names, a fine-tuned predictor accepts extra columns later
("incremental columns"): call :func:`finetune` again with the wider table and ``model=`` the predictor.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslab.core.config import ConfigError
from sslab.core.data import move_to_device
from sslab.datasets.tables_tokenize import TableCollator


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


@dataclass
class StepBudget:
    """Fine-tuning for about ``steps`` optimizer steps (``probe.finetune`` of the table modality), rounded up
    to whole epochs over the labelled rows."""

    steps: int = 150
    lr: float = 3e-4
    head_lr: float = 3e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        for key in ("steps", "lr", "head_lr", "batch_size"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"probe.finetune.{key} must be > 0, got {getattr(self, key)!r}")

    def config(self, n_train: int) -> FinetuneConfig:
        """The :class:`FinetuneConfig` of ``n_train`` labelled rows: ``max(1, ceil(steps / batches per epoch))``
        epochs."""
        epochs = max(1, math.ceil(self.steps / math.ceil(n_train / self.batch_size)))
        return FinetuneConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, head_lr=self.head_lr)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def finetune(encoder: Optional[nn.Module], rows: Dataset, task: str, n_classes: int = 2,
             cfg: FinetuneConfig = FinetuneConfig(), seed: int = 0, model: Optional[TabularPredictor] = None,
             progress: Optional[bool] = None) -> TabularPredictor:
    """Train a :class:`TabularPredictor` on labelled ``rows`` (a copy of ``encoder``, on its device; or continue
    ``model``). ``rows``: labelled ``TableRows``, or any dataset of ``(row, label)`` items with a ``labels``
    array (:class:`LabelledSubset`)."""
    if getattr(rows, "labels", None) is None:
        raise ValueError("finetune needs labelled TableRows (one table + labels)")
    torch.manual_seed(seed)
    if model is None:
        if encoder is None:
            raise ValueError("finetune needs an encoder or a model to continue")
        model = TabularPredictor(copy.deepcopy(encoder), 1 if task == "regression" else n_classes, task)
        model.to(_device(encoder))
        if task == "regression":
            y = torch.as_tensor(np.asarray(rows.labels, dtype=np.float32))  # type: ignore[attr-defined]
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
    device = _device(model)
    for _ in epochs:
        for inputs, y in loader:
            inputs, y = move_to_device(inputs, device), y.to(device)
            out = model(inputs)
            if task == "regression":
                loss = F.mse_loss(out.squeeze(-1), (y.float() - model.y_mean) / model.y_std)
            else:
                loss = F.cross_entropy(out, y.long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class LabelledSubset(Subset):
    """Items ``indices`` of ``dataset`` (items ``(row, label)``) with their ``labels`` array, for :func:`finetune`."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], labels: np.ndarray) -> None:
        super().__init__(dataset, list(map(int, indices)))
        self.labels = np.asarray(labels)[np.asarray(indices, dtype=np.int64)]


@torch.no_grad()
def predict(model: TabularPredictor, rows: Dataset, batch_size: int = 256) -> np.ndarray:
    """binary: P(class 1); multiclass: probabilities [N, K]; regression: values."""
    model.eval()
    outs = []
    device = _device(model)
    for inputs, _ in DataLoader(rows, batch_size=batch_size, collate_fn=TableCollator()):
        out = model(move_to_device(inputs, device)).float()
        if model.task == "regression":
            outs.append((out.squeeze(-1) * model.y_std + model.y_mean).cpu().numpy())
        else:
            p = out.softmax(-1).cpu().numpy()
            outs.append(p[:, 1] if model.task == "binary" else p)
    return np.concatenate(outs)


def training_loss(model: TabularPredictor, rows: Dataset) -> float:
    """Mean loss of ``model`` on labelled ``rows`` (eval mode)."""
    model.eval()
    total, n = 0.0, 0
    device = _device(model)
    with torch.no_grad():
        for inputs, y in DataLoader(rows, batch_size=256, collate_fn=TableCollator()):
            inputs, y = move_to_device(inputs, device), y.to(device)
            out = model(inputs)
            if model.task == "regression":
                loss = F.mse_loss(out.squeeze(-1), (y.float() - model.y_mean) / model.y_std, reduction="sum")
            else:
                loss = F.cross_entropy(out, y.long(), reduction="sum")
            total, n = total + float(loss), n + len(y)
    return total / n
