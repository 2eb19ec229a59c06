"""Shared helpers for low-rank adapters on any ``nn.Module``: picking target Linear layers (with
layer selection, LayRA-style "first/last k blocks only"), replacing modules, counting parameters."""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

LayerSpec = Union[None, Sequence[int], str]


def num_layers(model: nn.Module, layers_pattern: str) -> int:
    """Number of indexed children in ``<layers_pattern>.<i>`` module paths (e.g. ``blocks``)."""
    rx = re.compile(rf"(?:^|\.){re.escape(layers_pattern)}\.(\d+)(?:\.|$)")
    idx = {int(m.group(1)) for name, _ in model.named_modules() if (m := rx.search(name))}
    if not idx:
        raise ValueError(f"no modules named '{layers_pattern}.<i>' in {type(model).__name__}; "
                         "set layers_pattern to the name of the block list (e.g. 'blocks', 'layers')")
    return max(idx) + 1


def resolve_layers(model: nn.Module, layers: LayerSpec, layers_pattern: str) -> Optional[List[int]]:
    """``None`` (all), a list of indices, or ``"first:k"``, ``"last:k"``, ``"first:k,last:m"`` (LayRA)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        n = num_layers(model, layers_pattern)
        out: List[int] = []
        for part in layers.split(","):
            where, _, k = part.strip().partition(":")
            if where not in ("first", "last") or not k.isdigit() or int(k) < 1:
                raise ValueError(f"layer selection {layers!r}: use 'first:k', 'last:k' or both comma-separated")
            k_ = min(int(k), n)
            out.extend(range(k_) if where == "first" else range(n - k_, n))
        return sorted(set(out))
    out = [int(i) for i in layers]
    n = num_layers(model, layers_pattern)
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"layer indices {bad} out of range: the model has {n} '{layers_pattern}' layers")
    return sorted(set(out))


def target_linears(model: nn.Module, target_modules: Union[str, Sequence[str]],
                   layers: Optional[List[int]] = None, layers_pattern: str = "blocks") -> List[str]:
    """Names of ``nn.Linear`` modules whose name ends with one of ``target_modules`` (or matches the
    regex when a string is given), restricted to the selected ``layers``."""
    rx_layer = re.compile(rf"(?:^|\.){re.escape(layers_pattern)}\.(\d+)\.")
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if isinstance(target_modules, str):
            ok = re.fullmatch(target_modules, name) is not None
        else:
            ok = any(name == t or name.endswith("." + t) for t in target_modules)
        if not ok:
            continue
        if layers is not None:
            m = rx_layer.search(name)
            if m is None or int(m.group(1)) not in layers:
                continue
        names.append(name)
    if not names:
        raise ValueError(f"no nn.Linear matches target_modules={target_modules!r} (layers={layers}) in "
                         f"{type(model).__name__}; Linear layers: "
                         f"{[n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:10]}")
    return names


def replace_modules(model: nn.Module, names: Sequence[str], factory: Callable[[nn.Linear], nn.Module]) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, factory(getattr(parent, child)))


def count_parameters(model: nn.Module) -> Dict[str, float]:
    """Total and trainable parameter counts (shared tensors counted once)."""
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"total": total, "trainable": trainable, "trainable_frac": trainable / max(total, 1)}


def lora_init_(a: torch.Tensor) -> torch.Tensor:
    """Kaiming-uniform init of LoRA's down projection (as in peft/Hu et al. 2022)."""
    return nn.init.kaiming_uniform_(a, a=5 ** 0.5)
