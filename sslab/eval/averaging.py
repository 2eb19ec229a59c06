"""Weighted averaging of the last k checkpoints (checkpoint averaging / "latest weight averaging",
Vaswani et al. 2017 Sec. 6.1; Kaddour 2022 "Stop Wasting My Time! Saving Days of ImageNet and BERT
Training with Latest Weight Averaging"):

    theta_avg = sum_i w_i theta_i / sum_i w_i   over the last k checkpoints

Floating-point tensors are averaged (in float64, cast back); integer/bool buffers (step counters,
phase flags) are taken from the newest checkpoint. Works on sslab training checkpoints
(``checkpoints/step_*.pt``) and on exported ``encoder.safetensors`` files.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch

PathLike = Union[str, Path]
Weights = Union[None, str, Sequence[float]]


def resolve_weights(weights: Weights, k: int) -> List[float]:
    """``None``/``"uniform"``, ``"linear"`` (1..k, newest heaviest), ``"exp:<gamma>"`` (gamma^(k-1-i)),
    or an explicit list of ``k`` non-negative numbers (oldest first)."""
    if k < 1:
        raise ValueError("need at least one checkpoint to average")
    if weights is None or weights == "uniform":
        return [1.0] * k
    if weights == "linear":
        return [float(i + 1) for i in range(k)]
    if isinstance(weights, str) and weights.startswith("exp:"):
        gamma = float(weights[4:])
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"exp weights need 0 < gamma <= 1, got {gamma}")
        return [gamma ** (k - 1 - i) for i in range(k)]
    if isinstance(weights, str):
        raise ValueError(f"unknown weights {weights!r}: use uniform, linear, exp:<gamma> or a list of numbers")
    w = [float(x) for x in weights]
    if len(w) != k:
        raise ValueError(f"got {len(w)} weights for {k} checkpoints")
    if any(x < 0 or math.isnan(x) for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
    return w


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], weights: Weights = None,
                        names: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Weighted average of state dicts with identical keys and shapes (``names`` label errors)."""
    w = resolve_weights(weights, len(states))
    names = list(names) if names is not None else [f"state {i}" for i in range(len(states))]
    keys = list(states[0].keys())
    for s, n in zip(states[1:], names[1:]):
        if set(s.keys()) != set(keys):
            diff = sorted(set(s.keys()) ^ set(keys))[:5]
            raise ValueError(f"{n}: parameters differ from {names[0]} ({diff})")
    total = sum(w)
    out: Dict[str, torch.Tensor] = {}
    for key in keys:
        ref = states[0][key]
        for s, n in zip(states[1:], names[1:]):
            if s[key].shape != ref.shape:
                raise ValueError(f"{n}: {key} has shape {tuple(s[key].shape)}, {names[0]} has {tuple(ref.shape)}")
        if not torch.is_floating_point(ref):
            out[key] = states[-1][key].clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for s, wi in zip(states, w):
            acc += s[key].detach().to("cpu", torch.float64) * (wi / total)
        out[key] = acc.to(ref.dtype)
    return out


def _load_any(path: Path) -> Dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from sslab.core.checkpoint import load_checkpoint

    return load_checkpoint(path)["objective"]


def average_files(paths: Sequence[PathLike], weights: Weights = None) -> Dict[str, torch.Tensor]:
    """Average training checkpoints (their ``objective`` state) or ``.safetensors`` files."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: checkpoint not found")
    return average_state_dicts([_load_any(p) for p in paths], weights, names=[str(p) for p in paths])


def average_run(run_dir: PathLike, last: int = 3, weights: Weights = None,
                out_dir: Optional[PathLike] = None) -> Path:
    """Average the encoder weights of the last ``last`` checkpoints of a run and export them as an
    encoder folder (default ``<run>/encoder_avg``), loadable with ``sslab.load_encoder``."""
    from sslab.core.checkpoint import list_checkpoints
    from sslab.core.export import SPEC, build_encoder, inherit_artifact, save_encoder

    run_dir = Path(run_dir)
    ckpts = list_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        raise FileNotFoundError(f"{run_dir}: no checkpoints/step_*.pt to average (set train.ckpt_every)")
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    chosen = ckpts[-last:]
    if len(chosen) < last:
        raise ValueError(f"{run_dir}: asked for the last {last} checkpoints but only {len(chosen)} exist(s) "
                         f"({[p.name for p in ckpts]}); raise train.keep_last")
    avg = average_files(chosen, weights)
    enc_state = {k[len("encoder."):]: v for k, v in avg.items() if k.startswith("encoder.")}
    spec_file = run_dir / "encoder" / SPEC
    if not spec_file.is_file():
        raise FileNotFoundError(f"{spec_file}: the run has no exported encoder spec (did pretraining finish?)")
    meta = json.loads(spec_file.read_text())
    encoder = build_encoder(meta["spec"])
    missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{run_dir}: averaged checkpoint does not match the encoder spec "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    out = Path(out_dir) if out_dir is not None else run_dir / "encoder_avg"
    return save_encoder(encoder, out, state_dict=enc_state,
                        extra={"averaged": [p.name for p in chosen], "weights": resolve_weights(weights, len(chosen))},
                        **inherit_artifact(run_dir / "encoder", averaged=[p.name for p in chosen]))
