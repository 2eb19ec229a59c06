"""FLOPs of one training step, for equal-compute comparisons between objectives (e.g. MLM vs
ELECTRA: Clark et al. 2020 compare at equal pre-training FLOPs)."""
from __future__ import annotations

from typing import Any

import torch


def training_step_flops(cfg: Any, seed: int = 0) -> float:
    """FLOPs of one forward + backward of the experiment's objective on one real batch of
    ``cfg.train.batch_size`` pretraining items (``torch.utils.flop_counter.FlopCounterMode``: matmuls
    and convolutions; element-wise ops are not counted). Builds the modality, so it trains or loads the
    run's tokenizer / data exactly as ``sslab pretrain`` would."""
    from torch.utils.flop_counter import FlopCounterMode

    from sslab.core.modality import build_modality

    torch.manual_seed(seed)
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    if len(dataset) == 0:
        raise ValueError(f"experiment {cfg.name!r}: the pretraining dataset is empty")
    objective = modality.build_objective(modality.build_encoder())
    items = [dataset[i % len(dataset)] for i in range(cfg.train.batch_size)]
    batch = collate(items) if collate is not None else torch.utils.data.default_collate(items)
    with FlopCounterMode(display=False) as counter:
        objective(batch)["loss"].backward()
    return float(counter.get_total_flops())
