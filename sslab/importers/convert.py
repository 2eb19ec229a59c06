"""Shared pieces of checkpoint importers: read a state dict from any file, map its keys explicitly (a key
that does not map is an error naming it), and write the sslab encoder folder (weights, spec, pipeline,
provenance, model card) so that ``sslab.load_encoder`` / ``sslab embed`` / ``sslab probe`` /
``encoder.init_from`` use it like a pretrained run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from sslab.core.errors import UserError

PathLike = Union[str, Path]


class CheckpointImportError(UserError, ValueError):
    """A checkpoint that cannot be converted; the message names the file and the keys."""


def read_state_dict(path: PathLike, nested: Sequence[str] = ("state_dict", "model", "module", "encoder")
                    ) -> Dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch pickle (``weights_only=True``), unwrapping one level of
    ``{"state_dict": ...}`` / ``{"model": ...}`` nesting."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with arbitrary objects are refused by weights_only
        raise CheckpointImportError(f"{path}: cannot read as a tensor-only torch checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(obj, Mapping):
        for key in nested:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointImportError(f"{path}: not a state dict (name -> tensor)")
    return dict(obj)


def map_keys(state: Mapping[str, torch.Tensor], rule: Callable[[str], Optional[str]], ignore: Iterable[str] = (),
             where: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """``{rule(k): v}``; keys starting with an ``ignore`` prefix are dropped; a key the rule maps to ``None``
    is an error listing every such key."""
    ignore = tuple(ignore)
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    for k, v in state.items():
        if ignore and k.startswith(ignore):
            continue
        new = rule(k)
        if new is None:
            unmapped.append(k)
        else:
            out[new] = v
    if unmapped:
        raise CheckpointImportError(f"{where}: {len(unmapped)} key(s) do not map to the sslab encoder: {', '.join(sorted(unmapped))}"
                           " (drop deliberately with --ignore PREFIX, e.g. a classifier head)")
    return out


def load_checked(encoder: nn.Module, state: Dict[str, torch.Tensor], where: str,
                 may_stay_initialised: Tuple[str, ...] = ()) -> List[str]:
    """Load ``state`` into ``encoder``; shape mismatches and unexpected keys are errors, missing keys are
    errors unless they start with one of ``may_stay_initialised`` (pretraining-only heads). Returns the keys
    left at their initial values."""
    expected = encoder.state_dict()
    unexpected = sorted(k for k in state if k not in expected)
    missing = sorted(k for k in expected if k not in state)
    bad_missing = [k for k in missing if not k.startswith(may_stay_initialised)] if may_stay_initialised else missing
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
              if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = []
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected)}")
    if bad_missing:
        problems.append(f"missing {len(bad_missing)} key(s): {', '.join(bad_missing)}")
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs encoder): {'; '.join(shapes)}")
    if problems:
        raise CheckpointImportError(f"{where}: " + "; ".join(problems))
    encoder.load_state_dict(state, strict=False)
    return missing


def write_import(encoder: nn.Module, out_dir: PathLike, fmt: str, checkpoint: PathLike,
                 pipeline: Optional[Dict[str, Any]], initialised: Sequence[str] = (), **info: Any) -> Path:
    """Save an imported encoder as an sslab encoder folder (steps 0, provenance names the source)."""
    from sslab.core.export import provenance, save_encoder

    prov = provenance(config=None, data={"imported": f"{fmt} checkpoint {checkpoint}"},
                      imported_from={"format": fmt, "path": str(checkpoint), **info},
                      initialised_not_imported=list(initialised))
    return save_encoder(encoder, out_dir, extra={"modality": (pipeline or {}).get("kind"), "steps": 0},
                        pipeline=pipeline, provenance=prov)


def read_json(path: PathLike) -> Dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointImportError(f"{path}: cannot read JSON ({err})") from None
