"""Experiment configuration: typed dataclasses loaded from YAML plus ``key.sub=value`` overrides.

Every unknown key and every wrongly typed value is an error that names its dotted path, so a typo
in an experiment file fails before any compute is spent.  Modality-specific sections (``data``,
``encoder``, ``objective``) are free-form dicts here and are validated by the plugin with
:func:`from_dict` against its own dataclass.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import yaml

from sslab.core.errors import UserError

C = TypeVar("C")


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the dotted key."""


@dataclass
class OptimConfig:
    """AdamW + warmup/cosine schedule. ``lr_scales`` maps a parameter-name prefix to an LR factor."""

    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.05
    weight_decay_end: Optional[float] = None  # cosine weight-decay schedule end value
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: Optional[float] = 1.0
    schedule: str = "cosine"  # cosine | constant
    lr_scales: Dict[str, float] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Loop settings shared by every objective."""

    steps: int = 1000
    batch_size: int = 32  # global batch per optimizer step = batch_size * grad_accum * world_size
    grad_accum: int = 1
    num_workers: int = 0
    shuffle: bool = True  # False: dataset order every epoch (curricula ordered by a quality score)
    length_bucketing: int = 0  # >0: sort pools of batch_size*N samples by the dataset's `lengths` (less padding)
    device: str = "auto"  # auto (cuda > cpu) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    distributed: str = "ddp"  # ddp | fsdp (only used under torchrun)
    log_every: int = 1  # metrics.jsonl line every N steps (reduced across ranks)
    ckpt_every: int = 0  # 0: only at the end
    keep_last: int = 3
    tensorboard: bool = False
    progress: Optional[bool] = None  # None: bars only when stderr is a terminal (sslab.core.progress)
    # true: continue from run_dir/checkpoints if present (refused if the config changed in a way that alters
    # training, see sslab.core.rundir); "force": resume even then (logged, recorded in the run dir);
    # false: never resume (refused if the run dir already has checkpoints)
    resume: Union[bool, str] = True
    stop_after: Optional[int] = None  # leave after this many steps in this launch (checkpointed; relaunch resumes)


@dataclass
class ProbeConfig:
    """Frozen-feature evaluation (linear probe and kNN), optionally end-to-end fine-tuning."""

    label_fractions: List[float] = field(default_factory=lambda: [1.0])
    C: float = 1.0
    max_iter: int = 2000
    class_weight: Optional[str] = "balanced"  # class-balanced logistic regression; null or "none": off
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_standardize: bool = False  # z-score features with the train split's statistics before cosine kNN
    compare_random_init: bool = True
    batch_size: int = 64
    floors: bool = True  # classical-floor rows ("floor:<name>") from Modality.floor_features
    cv: Dict[str, Any] = field(default_factory=dict)  # {folds, repeats, seed}: repeated K-fold (sslab.eval.cv)
    #: end-to-end fine-tuning rows ("<task>:finetune") beside the linear probe; empty: off. Keys are the
    #: modality's (Modality.finetune_options; tables: steps, lr, head_lr, batch_size)
    finetune: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One experiment: which modality, data, encoder, objective and how to train and probe."""

    name: str = "run"
    modality: str = ""
    seed: int = 0
    output_dir: str = "runs"
    data: Dict[str, Any] = field(default_factory=dict)
    encoder: Dict[str, Any] = field(default_factory=dict)
    objective: Dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# --------------------------------------------------------------------------- typed conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` to annotation ``tp``; raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, path)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, List, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list/tuple, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (dict, Dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_tp, val_tp = args or (Any, Any)
        return {k: _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: Type[C], data: Mapping[str, Any], path: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise :class:`ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where + unknown[0]!r}; valid keys{' in ' + path if path else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """Dataclass (nested) -> plain YAML-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


# --------------------------------------------------------------------------- YAML + overrides


def parse_override(text: str) -> Tuple[List[str], Any]:
    """``"train.steps=100"`` -> (["train", "steps"], 100); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    return key.split("."), value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply dotted overrides to a nested dict (copying it). Creates missing sub-dicts."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_experiment(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                    base: Optional[Mapping[str, Any]] = None) -> ExperimentConfig:
    """YAML file (and/or ``base`` dict) + overrides -> validated :class:`ExperimentConfig`."""
    data: Dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(load_yaml(path))
    data = apply_overrides(data, overrides)
    return validate_experiment(from_dict(ExperimentConfig, data))


def _check(ok: bool, key: str, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {need}, got {value!r}")


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


def validate_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """Range checks of the ``train`` and ``optim`` sections; each failure names its key.

    Types are checked by :func:`from_dict`; this catches values of the right type that make no sense
    (``optim.lr=-1``, ``train.ckpt_every=-5``, ``optim.betas=[0.9, 1.5]``) before any compute is spent.
    """
    t, o = cfg.train, cfg.optim
    for key in ("steps", "batch_size", "grad_accum"):
        _check(getattr(t, key) > 0, f"train.{key}", getattr(t, key), "must be a positive integer")
    for key in ("num_workers", "length_bucketing", "ckpt_every", "keep_last"):
        _check(getattr(t, key) >= 0, f"train.{key}", getattr(t, key), "must be >= 0")
    _check(t.log_every >= 1, "train.log_every", t.log_every, "must be >= 1")
    _check(t.stop_after is None or t.stop_after > 0, "train.stop_after", t.stop_after, "must be a positive integer")
    _check(t.resume in (True, False, "force"), "train.resume", t.resume, "must be true, false or 'force'")
    _check(t.precision in ("auto", "bf16", "fp32"), "train.precision", t.precision, "must be auto, bf16 or fp32")
    _check(t.distributed in ("ddp", "fsdp"), "train.distributed", t.distributed, "must be ddp or fsdp")
    for key in ("lr", "min_lr", "weight_decay", "eps"):
        v = getattr(o, key)
        _check(_finite(v) and v >= 0, f"optim.{key}", v, "must be a finite number >= 0")
    _check(o.weight_decay_end is None or (_finite(o.weight_decay_end) and o.weight_decay_end >= 0),
           "optim.weight_decay_end", o.weight_decay_end, "must be a finite number >= 0")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "must be >= 0")
    for i, b in enumerate(o.betas):
        _check(_finite(b) and 0.0 <= b < 1.0, f"optim.betas[{i}]", b, "must be in [0, 1)")
    _check(o.clip_grad is None or (_finite(o.clip_grad) and o.clip_grad >= 0), "optim.clip_grad", o.clip_grad,
           "must be a finite number >= 0 (0 or null: no clipping)")
    _check(o.schedule in ("cosine", "constant"), "optim.schedule", o.schedule, "must be cosine or constant")
    for prefix, scale in o.lr_scales.items():
        _check(_finite(scale) and scale >= 0, f"optim.lr_scales.{prefix}", scale, "must be a finite number >= 0")
    return cfg


def save_experiment(cfg: ExperimentConfig, path: Union[str, Path]) -> None:
    from sslab.core.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
