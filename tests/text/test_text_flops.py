"""``sslab.core.flops.training_step_flops``: the equal-compute budget of the MLM-vs-ELECTRA figures."""
from __future__ import annotations

from pathlib import Path

import pytest
from text_helpers import one_thread  # noqa: F401

from sslab.core.config import load_experiment
from sslab.core.flops import training_step_flops

EXP = Path(__file__).resolve().parents[2] / "experiments" / "text"


def _cfg(name: str, tmp: Path, shared: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_experiment(EXP / name, [f"output_dir={tmp}", f"data.shared_data={shared}",
                                        f"data.tokenizer_cache={tmp / 'tok'}", "encoder.dim=32",
                                        "train.batch_size=8", *extra])


def test_step_flops_are_deterministic_and_rank_objectives_and_sizes(tmp_path: Path, shared_data: Path) -> None:
    mlm = training_step_flops(_cfg("mlm_ptbxl.yaml", tmp_path, shared_data, "encoder.depth=2"))
    assert mlm == training_step_flops(_cfg("mlm_ptbxl.yaml", tmp_path, shared_data, "encoder.depth=2"))
    deeper = training_step_flops(_cfg("mlm_ptbxl.yaml", tmp_path, shared_data, "encoder.depth=4"))
    electra = training_step_flops(_cfg("electra_gdes_ptbxl.yaml", tmp_path, shared_data, "encoder.depth=2"))
    # same batches and masks at both depths (the RNG is reset after the model is built), so doubling the
    # depth doubles the blocks' FLOPs and leaves the embedding-side and MLM-head FLOPs as they were
    assert 1.5 * mlm < deeper < 2.0 * mlm
    # ...so the step cost is exactly linear in depth (it is not if the masks follow the init's RNG use)
    deepest = training_step_flops(_cfg("mlm_ptbxl.yaml", tmp_path, shared_data, "encoder.depth=6"))
    assert deepest - deeper == deeper - mlm
    # ELECTRA runs a (half-depth) generator plus the discriminator on the same batch
    assert 1.2 * mlm < electra < 2.0 * mlm
    with pytest.raises(ValueError, match="batches must be >= 1"):
        training_step_flops(_cfg("mlm_ptbxl.yaml", tmp_path, shared_data), batches=0)


def test_step_flops_count_forward_and_backward(tmp_path: Path, shared_data: Path) -> None:
    """Every matmul input here needs a gradient (the first layer is an embedding), so backward costs
    twice the forward: the training step is 3x the FLOPs of a forward pass on the same batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sslab.core.modality import build_modality

    cfg = _cfg("mlm_ptbxl.yaml", tmp_path, shared_data, "encoder.depth=2")
    step = training_step_flops(cfg, seed=0, batches=1)
    torch.manual_seed(0)  # the same model, batch and masks as training_step_flops(cfg, seed=0, batches=1)
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    objective = modality.build_objective(modality.build_encoder())
    torch.manual_seed(0)
    batch = collate([dataset[i % len(dataset)] for i in range(cfg.train.batch_size)])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        objective(batch)
    assert step == 3 * counter.get_total_flops()
