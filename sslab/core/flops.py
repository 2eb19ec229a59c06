"""FLOPs of one training step, for equal-compute comparisons between objectives (e.g. MLM vs
ELECTRA: Clark et al. 2020 compare at equal pre-training FLOPs)."""
from __future__ import annotations

from typing import Any

import torch


def training_step_flops(cfg: Any, seed: int = 0, batches: int = 4) -> float:
    """Mean FLOPs of one forward + backward of the experiment's objective over ``batches`` real batches
    of ``cfg.train.batch_size`` pretraining items (``torch.utils.flop_counter.FlopCounterMode``: matmuls
    and convolutions; element-wise ops are not counted). Builds the modality, so it trains or loads the
    run's tokenizer / data exactly as ``sslab pretrain`` would.

    An MLM head only scores the masked tokens, so one batch's count depends on how many tokens its
    masks hit (1-6 on 8 short PTB-XL reports). The random state is therefore reset to ``seed`` after
    the model is built: two configs that differ only in model size see the same batches and masks.
    Averaging over several batches also evens out the mask counts.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from sslab.core.modality import build_modality

    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    torch.manual_seed(seed)
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    if len(dataset) == 0:
        raise ValueError(f"experiment {cfg.name!r}: the pretraining dataset is empty")
    objective = modality.build_objective(modality.build_encoder())
    torch.manual_seed(seed)  # masks and generator samples must not depend on how much RNG the init used
    size, total = cfg.train.batch_size, 0
    for b in range(batches):
        items = [dataset[(b * size + i) % len(dataset)] for i in range(size)]
        batch = collate(items) if collate is not None else torch.utils.data.default_collate(items)
        with FlopCounterMode(display=False) as counter:
            objective(batch)["loss"].backward()
        total += counter.get_total_flops()
        objective.zero_grad(set_to_none=True)
    return float(total) / batches
