"""Low-rank adapters (LoRA via peft, DyLoRA, SwitchLoRA) for any encoder with Linear layers."""
from sslab.encoders.adapters.adapted import ADAPTERS, AdaptedEncoder, apply_adapter
from sslab.encoders.adapters.common import count_parameters, resolve_layers
from sslab.encoders.adapters.dylora import DyLoRALinear, set_rank
from sslab.encoders.adapters.switchlora import SwitchLoRALinear, switch_all

__all__ = ["ADAPTERS", "AdaptedEncoder", "apply_adapter", "count_parameters", "resolve_layers",
           "DyLoRALinear", "set_rank", "SwitchLoRALinear", "switch_all"]
