"""Supervised fine-tuning of a (pretrained or random-init) GNN encoder on graph labels.

The protocol of "Strategies for Pre-training GNNs" (Hu et al., ICLR 2020, Sec. 5.1): the pretrained encoder
plus a linear head on the pooled graph embedding, trained end to end with cross-entropy on the downstream
labels, then evaluated on held-out graphs. Splits are the probe's (``GraphModality.probe_tasks``: one
stratified split or k-fold CV with ``data.probe_folds``), so fine-tuned and linear-probe numbers are
comparable. The same encoder at random init (built from its ``sslab_spec`` under the experiment seed, as
the core probe does) is fine-tuned with identical settings, side by side.

Settings live in ``data.finetune`` (see :class:`FinetuneConfig`); keyword overrides win.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from sslab.core.modality import ProbeTask


@dataclass
class FinetuneConfig:
    """``data.finetune`` section: AdamW on encoder + linear head, cross-entropy, fixed seed."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    head_dropout: float = 0.0
    freeze_encoder: bool = False  # True: only the head trains (a GNN-side linear probe; for ablations)


class GraphClassifier(nn.Module):
    """``Linear(pool(encoder(batch)))`` — encoder and head trained end to end."""

    def __init__(self, encoder: nn.Module, num_classes: int, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(int(encoder.dim), num_classes)

    def forward(self, batch: Any) -> Tensor:
        return self.head(self.dropout(self.encoder.pool(self.encoder(batch), batch)))


def _labels(dataset: Any, where: str) -> np.ndarray:
    ys = []
    for i in range(len(dataset)):
        y = dataset[i][1]
        y = float(torch.as_tensor(y).view(-1)[0])
        if not np.isfinite(y) or y != int(y) or y < 0:
            raise ValueError(f"graph fine-tuning: {where} item {i} has label {y!r}; class indices 0..C-1 expected")
        ys.append(int(y))
    return np.asarray(ys, dtype=np.int64)


def _predict(model: nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
    model.eval()
    preds = []
    with torch.no_grad():
        for batch, _ in loader:
            preds.append(model(batch.to(device)).argmax(-1).cpu().numpy())
    return np.concatenate(preds)


def finetune_task(encoder: nn.Module, task: ProbeTask, fcfg: FinetuneConfig, seed: int = 0,
                  device: Union[str, torch.device] = "cpu", progress: Optional[bool] = None) -> Dict[str, Any]:
    """Fine-tune a *copy* of ``encoder`` on ``task.train``; accuracy / macro-F1 on ``task.test``.

    Returns ``{"accuracy", "macro_f1", "train_loss_first", "train_loss_last", "train_accuracy",
    "encoder_change"}`` (relative L2 change of the encoder weights, > 0 iff gradients reached it).
    """
    from sklearn.metrics import accuracy_score, f1_score

    if task.task != "multiclass":
        raise ValueError(f"graph fine-tuning: task {task.name!r} is {task.task!r}; only graph classification "
                         "(multiclass) is supported")
    if fcfg.epochs < 1 or fcfg.batch_size < 1 or fcfg.lr <= 0:
        raise ValueError(f"graph fine-tuning: epochs, batch_size and lr must be positive, got {fcfg}")
    ytr = _labels(task.train, f"{task.name}/train")
    yte = _labels(task.test, f"{task.name}/test")
    classes = np.unique(ytr)
    if len(classes) < 2:
        raise ValueError(f"graph fine-tuning: the training split of {task.name!r} has only one class "
                         f"({classes.tolist()}, {len(ytr)} graphs); need at least two")
    num_classes = int(max(ytr.max(), yte.max() if len(yte) else 0)) + 1
    device = torch.device(device)

    torch.manual_seed(seed)
    model = GraphClassifier(copy.deepcopy(encoder), num_classes, fcfg.head_dropout).to(device)
    before = torch.cat([p.detach().flatten().clone() for p in model.encoder.parameters()])
    for p in model.encoder.parameters():
        p.requires_grad_(not fcfg.freeze_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=fcfg.lr, weight_decay=fcfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    # drop_last avoids a 1-graph batch (BatchNorm needs > 1 value) when the split size is unlucky
    drop_last = len(task.train) % fcfg.batch_size == 1
    train_loader = DataLoader(task.train, batch_size=fcfg.batch_size, shuffle=True, generator=gen,
                              collate_fn=task.collate_fn, drop_last=drop_last)
    losses: List[float] = []
    epochs = range(fcfg.epochs)
    from sslab.core.progress import show_progress

    if show_progress(progress):
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"finetune {task.name}", leave=False)
    for _ in epochs:
        model.train()
        total, n = 0.0, 0
        for batch, y in train_loader:
            logits = model(batch.to(device))
            loss = nn.functional.cross_entropy(logits, y.long().view(-1).to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"graph fine-tuning: non-finite loss on {task.name!r}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * y.numel()
            n += y.numel()
        losses.append(total / max(n, 1))
    after = torch.cat([p.detach().flatten() for p in model.encoder.parameters()]).cpu()
    eval_bs = max(fcfg.batch_size, 64)
    pred_te = _predict(model, DataLoader(task.test, batch_size=eval_bs, collate_fn=task.collate_fn), device)
    pred_tr = _predict(model, DataLoader(task.train, batch_size=eval_bs, collate_fn=task.collate_fn), device)
    return {
        "accuracy": float(accuracy_score(yte, pred_te)),
        "macro_f1": float(f1_score(yte, pred_te, average="macro")),
        "train_accuracy": float(accuracy_score(ytr, pred_tr)),
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "encoder_change": float((after - before.cpu()).norm() / before.norm().clamp_min(1e-12)),
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
    }


def finetune(target: Union[str, Path, nn.Module], cfg: Optional[Any] = None, overrides: Sequence[str] = (),
             compare_random_init: bool = True, progress: Optional[bool] = None, **fcfg_overrides: Any) -> Dict[str, Any]:
    """Fine-tune a graph run (dir / exported encoder) or an encoder module on the probe split(s).

    ``cfg`` (an ``ExperimentConfig``) is read from the run's ``config.yaml`` when ``target`` is a run dir;
    it is required for a bare module. Returns ``{"rows": [...], "summary": {...}, "finetune": {...}}`` with
    one row per (task, encoder) — encoders ``pretrained`` and ``random_init`` — and, for k-fold splits, the
    mean/std accuracy per encoder (``summary``).
    """
    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder, load_encoder
    from sslab.core.trainer import select_device
    from sslab.modalities.graph import GraphModality, summarize_folds
    from sslab.run import seed_everything

    if isinstance(target, nn.Module):
        if cfg is None:
            raise ValueError("graph fine-tuning: pass cfg (an ExperimentConfig) with an encoder module")
        encoder = target
    else:
        path = Path(target)
        if cfg is None:
            if not (path / "config.yaml").is_file():
                raise FileNotFoundError(f"{path} is not a run directory (no config.yaml); pass cfg")
            cfg = load_experiment(path / "config.yaml", list(overrides))
        encoder = load_encoder(path)
    if cfg.modality != "graph":
        raise ValueError(f"graph fine-tuning: experiment modality is {cfg.modality!r}, expected 'graph'")
    modality = GraphModality(cfg)
    fcfg = replace(modality.data_cfg.finetune, **fcfg_overrides)
    encoders: Dict[str, nn.Module] = {"pretrained": encoder}
    if compare_random_init:
        spec = getattr(encoder, "sslab_spec", None)
        if spec is None:
            raise ValueError("graph fine-tuning: the encoder has no sslab_spec; build it with "
                             "sslab.core.export.build_encoder or pass compare_random_init=False")
        seed_everything(cfg.seed)  # the init the pretraining run started from (as sslab.run.probe)
        encoders["random_init"] = build_encoder(spec)
    device = select_device(cfg.train.device)
    rows = []
    for task in modality.probe_tasks():
        for name, enc in encoders.items():
            res = finetune_task(enc, task, fcfg, seed=cfg.seed, device=device, progress=progress)
            rows.append({"task": task.name, "encoder": name, "kind": "finetune", **res})
    return {"rows": rows, "summary": summarize_folds(rows), "finetune": fcfg.__dict__.copy()}


def format_finetune(result: Dict[str, Any]) -> str:
    """Markdown table of a :func:`finetune` result (per-task rows, then fold means)."""
    lines = ["| task | encoder | accuracy | macro F1 | train loss first → last | encoder Δ |",
             "|---|---|---:|---:|---|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['task']} | {r['encoder']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
                     f"{r['train_loss_first']:.3f} → {r['train_loss_last']:.3f} | {r['encoder_change']:.3f} |")
    for k, v in result["summary"].items():
        lines.append(f"\n{k}: accuracy {v['mean']:.3f} ± {v['std']:.3f} over {v['folds']} split(s)")
    return "\n".join(lines)
