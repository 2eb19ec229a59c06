"""Modality plugins: each names its datasets, collator, default encoder/objective and probe tasks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

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

    # -- the encoder artifact (issue 14): preprocessing as data, applied by ``sslab embed``
    def input_pipeline(self) -> Dict[str, Any]:
        """JSON-serialisable description of the exact preprocessing of pretraining AND probing, stored in
        ``encoder/encoder.json`` under ``"pipeline"``; ``"kind"`` names the
        :class:`~sslab.core.pipeline.InputPipeline` that applies it. Default: ``{}`` (none recorded)."""
        return {}

    def pipeline_files(self) -> Dict[str, Path]:
        """Files the pipeline needs (name in the encoder folder -> source path), e.g. a tokenizer."""
        return {}

    def read_raw(self, paths: Sequence[Union[str, Path]],
                 pipeline: Optional[Mapping[str, Any]] = None) -> Iterator[Tuple[str, Any]]:
        """``(row_name, item)`` for every row of raw files, preprocessed exactly as the probe's items;
        ``pipeline`` defaults to :meth:`input_pipeline`. Batch items with the pipeline's ``collate``."""
        from sslab.core.pipeline import build_pipeline

        spec = dict(pipeline) if pipeline is not None else self.input_pipeline()
        folder = self.cfg.run_dir / "encoder" if (self.cfg.run_dir / "encoder").is_dir() else None
        pipe = build_pipeline(spec, folder)
        if pipe is None:
            raise NotImplementedError(f"modality {type(self).__name__} records no input pipeline")
        return pipe.read(paths)


def build_modality(cfg: ExperimentConfig) -> Modality:
    if not cfg.modality:
        raise ValueError(f"experiment needs 'modality' (one of: {', '.join(MODALITIES.names())})")
    return MODALITIES.get(cfg.modality)(cfg)
