"""Low-rank pretraining adapters for any encoder, and the ``adapted`` encoder that wraps one.

Kinds (``ADAPTERS``):
* ``lora``: peft LoRA (Hu et al. 2022, ``h = W0 x + (alpha/r) B A x``) injected in place with
  ``layers_to_transform`` / ``layers_pattern``; ``layers: "first:k,last:k"`` gives LayRA-style
  first/last-layers-only adaptation;
* ``dylora``: :mod:`.dylora` (rank sampled per step, nested ranks usable after training);
* ``switchlora``: :mod:`.switchlora` (vectors switched from a candidate pool, output unchanged; the
  optimizer moments of switched pairs are zeroed and their counterparts frozen for ``freeze_steps``).

``freeze_rest=False`` (default) keeps every non-adapted parameter trainable (low-rank *pretraining*
as in ReLoRA/SwitchLoRA: embeddings, norms and heads train fully, the adapted Linear weights are
frozen); ``freeze_rest=True`` freezes everything but the adapters (LoRA fine-tuning).

Experiment YAML::

    encoder: {name: adapted, base: {name: text_transformer, dim: 128, depth: 4},
              adapter: {kind: switchlora, r: 8, target_modules: [qkv, proj, fc1, fc2], switch_every: 10}}
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from sslab.core.registry import ENCODERS
from sslab.encoders.adapters.common import (LayerSpec, count_parameters, replace_modules, resolve_layers,
                                            target_linears)
from sslab.encoders.adapters.dylora import DyLoRALinear, dylora_layers, set_rank
from sslab.encoders.adapters.switchlora import (SwitchLoRALinear, switch_all, switch_due, switchlora_layers,
                                                tick_all)

ADAPTER_PARAM_MARKERS = ("lora_",)


def _finish(model: nn.Module, freeze_rest: bool) -> None:
    for name, p in model.named_parameters():
        if any(m in name for m in ADAPTER_PARAM_MARKERS):
            p.requires_grad_(True)
        elif freeze_rest:
            p.requires_grad_(False)


def apply_lora(model: nn.Module, names: List[str], r: int = 8, alpha: float = 8.0, dropout: float = 0.0,
               target_modules: Union[str, Sequence[str]] = ("qkv",), layers: Optional[List[int]] = None,
               layers_pattern: str = "blocks", freeze_rest: bool = False, **_: Any) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=list(target_modules) if not isinstance(target_modules, str) else target_modules,
                     layers_to_transform=layers, layers_pattern=layers_pattern if layers is not None else None)
    frozen_linear = {f"{n}.weight" for n in names} | {f"{n}.bias" for n in names}
    model = inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        # peft renames the wrapped layer to <name>.base_layer
        plain = name.replace(".base_layer", "")
        if plain in frozen_linear:
            p.requires_grad_(False)
        elif "lora_" not in name:
            p.requires_grad_(not freeze_rest)
    return model


def apply_dylora(model: nn.Module, names: List[str], r: int = 8, alpha: float = 8.0, r_min: int = 1,
                 freeze_rest: bool = False, **_: Any) -> nn.Module:
    replace_modules(model, names, lambda lin: DyLoRALinear(lin, r=r, alpha=alpha, r_min=r_min))
    _finish(model, freeze_rest)
    return model


def apply_switchlora(model: nn.Module, names: List[str], r: int = 8, alpha: float = 8.0,
                     num_candidates: int = 0, freeze_steps: int = 5, reset_optimizer: bool = True,
                     freeze_rest: bool = False, **_: Any) -> nn.Module:
    replace_modules(model, names, lambda lin: SwitchLoRALinear(lin, r=r, alpha=alpha, num_candidates=num_candidates,
                                                               freeze_steps=freeze_steps,
                                                               reset_optimizer=reset_optimizer))
    _finish(model, freeze_rest)
    return model


ADAPTERS: Dict[str, Callable[..., nn.Module]] = {
    "lora": apply_lora,
    "dylora": apply_dylora,
    "switchlora": apply_switchlora,
}

_KNOWN_KEYS = {"kind", "r", "alpha", "dropout", "target_modules", "layers", "layers_pattern", "freeze_rest",
               "r_min", "num_candidates", "switch_every", "switch_num", "switch_decay_steps", "freeze_steps",
               "reset_optimizer"}


def apply_adapter(model: nn.Module, kind: str, target_modules: Union[str, Sequence[str]] = ("qkv", "proj"),
                  layers: LayerSpec = None, layers_pattern: str = "blocks", **kwargs: Any) -> nn.Module:
    """Inject adapter ``kind`` into the Linear layers of ``model`` named by ``target_modules``
    (suffixes, or a full-name regex) in the selected ``layers`` of ``<layers_pattern>.<i>``."""
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {sorted(ADAPTERS)}")
    unknown = set(kwargs) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown adapter option(s) {sorted(unknown)}; valid: {sorted(_KNOWN_KEYS)}")
    idx = resolve_layers(model, layers, layers_pattern)
    names = target_linears(model, target_modules, idx, layers_pattern)
    return ADAPTERS[kind](model, names, target_modules=target_modules, layers=idx,
                          layers_pattern=layers_pattern, **kwargs)


class AdaptedEncoder(nn.Module):
    """An encoder with adapters; delegates ``forward``/``pool``/``dim`` and drives rank sampling
    (DyLoRA) and vector switching (SwitchLoRA) from ``on_step_end``."""

    def __init__(self, base: nn.Module, adapter: Mapping[str, Any]) -> None:
        super().__init__()
        adapter = dict(adapter)
        if "kind" not in adapter:
            raise ValueError(f"adapter section needs 'kind' (one of {sorted(ADAPTERS)})")
        self.kind = adapter["kind"]
        self.switch_every = int(adapter.pop("switch_every", 0))
        self.switch_num = int(adapter.pop("switch_num", 1))
        self.switch_decay_steps = int(adapter.pop("switch_decay_steps", 0))
        self.base = apply_adapter(base, **adapter)
        self.dim = base.dim
        for attr in ("causal", "vocab_size", "max_len"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        if self.kind == "dylora":
            set_rank(self.base, seed=0)

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def forward(self, inputs: Any, mask: Any = None) -> Any:
        return self.base(inputs, mask)

    def pool(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        return self.base.pool(tokens, *args, **kwargs)

    def train(self, mode: bool = True) -> "AdaptedEncoder":
        super().train(mode)
        if self.kind == "dylora" and not mode:
            set_rank(self.base, dylora_layers(self.base)[0].r)  # evaluate at full rank unless set_rank later
        return self

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """SwitchLoRA: reset moments in ``optimizer`` (the core Trainer calls this on every submodule)."""
        for m in switchlora_layers(self.base):
            m.bind_optimizer(optimizer)

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        # seeded by the step: identical on every DDP rank and across resume
        if self.kind == "dylora":
            return {"dylora_rank": set_rank(self.base, seed=step)}
        if self.kind == "switchlora":
            tick_all(self.base)  # the step that just ended counts towards the freeze
            if switch_due(step, self.switch_every, self.switch_decay_steps):
                n = switch_all(self.base, self.switch_num, seed=step)
                return {"switched": n, "moments_reset": sum(m.last_reset for m in switchlora_layers(self.base))}
        return None

    def parameter_counts(self) -> Dict[str, float]:
        return count_parameters(self)


@ENCODERS.register("adapted")
def adapted(base: Mapping[str, Any], adapter: Mapping[str, Any]) -> AdaptedEncoder:
    """Build ``base`` from the encoder registry and wrap it with ``adapter``."""
    base = dict(base)
    if "name" not in base:
        raise ValueError("adapted encoder: 'base' needs a 'name'")
    name = base.pop("name")
    return AdaptedEncoder(ENCODERS.build(name, **base), adapter)
