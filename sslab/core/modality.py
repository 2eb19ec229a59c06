"""Modality plugins: each names its datasets, collator, default encoder/objective and probe tasks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from sslab.core.config import ExperimentConfig
from sslab.core.export import build_encoder
from sslab.core.registry import MODALITIES, OBJECTIVES

TASKS = ("multiclass", "multilabel", "regression")


@dataclass
class ProbeTask:
    """A labelled evaluation: items of ``train``/``test`` are ``(inputs, label)``."""

    name: str
    task: str
    train: Dataset
    test: Dataset
    collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None
    class_names: Optional[List[str]] = None
    #: per item of ``train`` then ``test``: a group id that cross-validation keeps on one side (e.g. the
    #: utterance of a speech chunk); ``None``: items are independent
    groups: Optional[Sequence[Any]] = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"probe task {self.name!r}: task must be one of {TASKS}, got {self.task!r}")


class Modality:
    """Base plugin with sensible defaults; subclasses implement data and probe tasks."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable[[Sequence[Any]], Any]]]:
        raise NotImplementedError(f"modality {type(self).__name__} defines no pretraining data")

    def probe_tasks(self) -> List[ProbeTask]:
        return []

    def build_encoder(self) -> nn.Module:
        return build_encoder(self.cfg.encoder)

    def build_objective(self, encoder: nn.Module) -> nn.Module:
        spec = dict(self.cfg.objective)
        if "name" not in spec:
            raise ValueError(f"objective section needs a 'name' (one of: {', '.join(OBJECTIVES.names())})")
        name = spec.pop("name")
        return OBJECTIVES.build(name, encoder=encoder, **spec)

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        """Frozen features for probing: pooled encoder tokens, ``[B, D]``."""
        return encoder.pool(encoder(inputs))

    def floor_features(self, task: ProbeTask) -> Dict[str, Any]:
        """Classical floors of ``task`` (no pretraining): ``{name: (train_features, test_features)}`` or
        ``{name: sslab.eval.floors.Floor(train, test, scorer)}``, aligned with the task's items.
        Probe rows of a floor have ``encoder="floor:<name>"``. Default: none."""
        return {}


def build_modality(cfg: ExperimentConfig) -> Modality:
    if not cfg.modality:
        raise ValueError(f"experiment needs 'modality' (one of: {', '.join(MODALITIES.names())})")
    return MODALITIES.get(cfg.modality)(cfg)
