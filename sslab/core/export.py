"""Encoder export: ``encoder.safetensors`` + ``encoder.json`` (registry name and kwargs).

``load_encoder(path)`` rebuilds the encoder from the registry and loads the weights, with no
training code and no network: this is what downstream notebooks and fine-tuning scripts use.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from sslab.core.io import atomic_write, atomic_write_text
from sslab.core.registry import ENCODERS

WEIGHTS = "encoder.safetensors"
SPEC = "encoder.json"


def build_encoder(spec: Mapping[str, Any]) -> nn.Module:
    """Build ``ENCODERS[spec['name']](**rest)`` and remember ``spec`` for export."""
    if "name" not in spec:
        raise ValueError(f"encoder spec needs a 'name' (one of: {', '.join(ENCODERS.names())}); got {dict(spec)}")
    spec = dict(spec)
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    encoder = ENCODERS.build(spec["name"], **kwargs)
    encoder.sslab_spec = spec  # type: ignore[assignment]
    return encoder


def save_encoder(encoder: nn.Module, out_dir: Union[str, Path],
                 state_dict: Optional[Dict[str, torch.Tensor]] = None,
                 extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``out_dir/encoder.safetensors`` and ``out_dir/encoder.json`` atomically."""
    from safetensors.torch import save_file

    spec = getattr(encoder, "sslab_spec", None)
    if spec is None:
        raise ValueError("encoder was not built with sslab.core.export.build_encoder; its spec is unknown")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else encoder.state_dict()
    # safetensors refuses shared storage; clone so tied weights are stored (and reloaded) separately
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    atomic_write(out_dir / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    meta = {"spec": spec, "dim": getattr(encoder, "dim", None), **(extra or {})}
    atomic_write_text(out_dir / SPEC, json.dumps(meta, indent=2))
    return out_dir


def _resolve(path: Union[str, Path]) -> Path:
    path = Path(path)
    candidates = [path, path / "encoder"] if path.is_dir() else [path.parent]
    for c in candidates:
        if (c / WEIGHTS).is_file() and (c / SPEC).is_file():
            return c
    raise FileNotFoundError(
        f"no exported encoder at {path}: expected {WEIGHTS} and {SPEC} in it or in its encoder/ folder"
    )


def load_encoder(path: Union[str, Path], map_location: str = "cpu") -> nn.Module:
    """Load an exported encoder (run dir, its ``encoder/`` folder, or the .safetensors file)."""
    from safetensors.torch import load_file

    folder = _resolve(path)
    meta = json.loads((folder / SPEC).read_text())
    encoder = build_encoder(meta["spec"])
    state = load_file(str(folder / WEIGHTS), device=map_location)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{folder / WEIGHTS}: weights do not match the encoder spec "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return encoder.eval()
