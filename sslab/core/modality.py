"""Modality plugins: each names its datasets, collator, default encoder/objective and probe tasks.

Transfer evaluation (pretrain on one dataset, probe on another): ``data.probe`` is a sub-dict naming the
probe data independently of the pretraining data - ``source``, ``path`` and any of the modality's own
``data`` options, with the same key names and meanings. :func:`probe_data_dict` merges it over the
pretraining section (``path`` is only inherited when ``source`` is too), and :meth:`Modality.probe_twin`
builds the same plugin on that merged section, whose ``probe_tasks()`` the plugin then returns.
:meth:`Modality.check_probe_compatible` is called by ``sslab.run.pretrain`` before any training: a plugin
aligns the two input spaces or refuses with an error naming both sides.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import Dataset

from sslab.core.config import ConfigError, ExperimentConfig
from sslab.core.export import build_encoder
from sslab.core.registry import MODALITIES, OBJECTIVES

if TYPE_CHECKING:
    from sslab.eval.floors import Scorer

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


def probe_section(data: Mapping[str, Any], aliases: Mapping[str, str] = {}) -> Dict[str, Any]:
    """``data.probe`` with legacy flat keys folded in (``aliases``: old key -> key in ``data.probe``, e.g.
    the graph plugin's ``probe_source`` -> ``source``); empty when the probe uses the pretraining data.
    Giving an alias and its ``data.probe`` key with different values is an error."""
    raw = data.get("probe")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"data.probe must be a mapping (source, path and data options for the probe data), "
                          f"got {raw!r}")
    out = dict(raw)
    for old, new in aliases.items():
        val = data.get(old)
        if val is None or val == "":
            continue
        if new in out and out[new] != val:
            raise ConfigError(f"data.{old}={val!r} (an alias of data.probe.{new}) disagrees with "
                              f"data.probe.{new}={out[new]!r}; give one of them")
        out[new] = val
    return out


def probe_data_dict(data: Mapping[str, Any], aliases: Mapping[str, str] = {},
                    source_key: str = "source") -> Optional[Dict[str, Any]]:
    """The ``data`` section the probe data is built from: the pretraining section with ``data.probe``
    merged over it, or ``None`` when there is no ``data.probe``. ``path`` (and other ``*path`` keys) of the
    pretraining data are dropped when the probe names another ``source``: they locate the other data."""
    section = probe_section(data, aliases)
    if all(data.get(k) == v for k, v in section.items()):
        return None  # empty, or naming exactly the pretraining data
    base = {k: v for k, v in data.items() if k != "probe" and k not in aliases}
    if source_key in section and section[source_key] != data.get(source_key):
        base = {k: v for k, v in base.items() if not k.endswith("path")}
    return {**base, **section}


class Modality:
    """Base plugin with sensible defaults; subclasses implement data and probe tasks."""

    probe_aliases: Dict[str, str] = {}
    """Legacy flat ``data`` keys that name probe data: old key -> key inside ``data.probe``."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self._twin: Optional["Modality"] = None

    # ------------------------------------------------------------------ transfer evaluation
    def probe_data_config(self) -> Optional[Dict[str, Any]]:
        """The merged ``data`` section of the probe data (:func:`probe_data_dict`), or ``None``."""
        return probe_data_dict(self.cfg.data, self.probe_aliases)

    def probe_twin(self) -> Optional["Modality"]:
        """The same plugin built on the probe data section (``None`` without ``data.probe``): its
        ``probe_tasks()`` are the transfer probe tasks. Built once."""
        if self._twin is None:
            merged = self.probe_data_config()
            if merged is None:
                return None
            cfg = copy.copy(self.cfg)
            cfg.data = merged
            try:
                self._twin = type(self)(cfg)
            except ValueError as err:  # ConfigError included: say it is the probe side
                msg = f"data.probe (the probe data, merged over the pretraining data section): {err}"
                try:
                    wrapped: ValueError = type(err)(msg)
                except Exception:  # an exception type with another constructor
                    wrapped = ConfigError(msg)
                raise wrapped from err
        return self._twin

    def check_probe_compatible(self) -> None:
        """Refuse, before pretraining, probe data whose input space the encoder cannot take (the error names
        both sides). Default: build the probe twin, which validates the merged ``data`` section."""
        self.probe_twin()

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

    # -- probe.finetune: end-to-end fine-tuning rows beside the linear probe
    def finetune_options(self, options: Mapping[str, Any]) -> Any:
        """The validated ``probe.finetune`` options (a one-line ``ConfigError`` naming a bad key), checked by
        ``sslab.run.pretrain`` before training and by the probe. Default: this modality has no protocol."""
        raise ConfigError(f"probe.finetune: the {self.cfg.modality} modality has no fine-tuning protocol")

    def finetune_scorer(self, task: ProbeTask, encoder: nn.Module, options: Any) -> "Scorer":
        """A :data:`~sslab.eval.floors.Scorer` that fine-tunes a *copy* of ``encoder`` end to end on ``task``:
        ``score(train_idx, y_train, test_idx, y_test, kind, seed)``, where the indices count the task's train
        items then its test items (so ``probe.cv`` can pool them), returns the test metrics. The probe draws
        ``train_idx`` as it draws the linear probe's label subsample; rows get ``task="<task>:finetune"``."""
        raise ConfigError(f"probe.finetune: the {self.cfg.modality} modality has no fine-tuning protocol")

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
            raise ValueError(f"modality {type(self).__name__} records no input pipeline: sslab embed cannot read raw "
                             "files for it")
        return pipe.read(paths)


def build_modality(cfg: ExperimentConfig) -> Modality:
    if not cfg.modality:
        raise ValueError(f"experiment needs 'modality' (one of: {', '.join(MODALITIES.names())})")
    return MODALITIES.get(cfg.modality)(cfg)
