"""SwitchLoRA optimizer-state handling (Zhou et al. 2024, Sec. 3.2): at a switch the AdamW moments of
the touched pairs (switched vector + its counterpart) are zeroed and nothing else changes; the
counterparts are frozen for ``freeze_steps`` steps; the layers get the optimizer through ``bind_optimizer``,
which the core Trainer calls on every submodule."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from text_helpers import one_thread  # noqa: F401

from sslab.core.config import load_experiment
from sslab.core.export import build_encoder
from sslab.core.modality import build_modality
from sslab.core.trainer import Trainer
from sslab.encoders.adapters import AdaptedEncoder, SwitchLoRALinear
from sslab.encoders.adapters.switchlora import switchlora_layers

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "text" / "switchlora_mlm_ptbxl.yaml"
SPEC = {"name": "adapted", "base": {"name": "text_transformer", "vocab_size": 120, "dim": 32, "depth": 2,
                                    "heads": 4, "max_len": 32},
        "adapter": {"kind": "switchlora", "r": 4, "target_modules": ["qkv", "fc2"], "switch_every": 5,
                    "freeze_steps": 2}}


def _train(enc: AdaptedEncoder, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
           step: int) -> Dict[str, Any]:
    """One step as the core Trainer does it: backward, optimizer step, then the step hook."""
    loss = ((enc(x).mean(1) - y) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return enc.on_step_end(step, 100) or {}


def _moments(opt: torch.optim.Optimizer, layer: SwitchLoRALinear) -> Dict[Tuple[str, str], torch.Tensor]:
    return {(f, k): opt.state[getattr(layer, f)][k].clone() for f in ("lora_A", "lora_B")
            for k in ("exp_avg", "exp_avg_sq")}


def test_switch_zeroes_the_moments_of_switched_pairs_only_and_keeps_the_output() -> None:
    torch.manual_seed(0)
    enc = build_encoder(SPEC)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    enc.bind_optimizer(opt)  # what the core Trainer does once AdamW exists
    x, y = torch.randint(60, 120, (8, 10)), torch.randn(8, 32)
    for step in range(1, 5):  # steps 1-4: no switch yet, moments become non-zero
        assert "switched" not in _train(enc, opt, x, y, step)
    layers = switchlora_layers(enc)
    assert all(m.optimizer is opt for m in layers)
    enc.eval()
    with torch.no_grad():
        out_before = enc(x)
    before = {id(m): (_moments(opt, m), m.lora_A.clone(), m.lora_B.clone()) for m in layers}
    assert all((v != 0).all() for mom, _, _ in before.values() for v in mom.values())
    log = enc.on_step_end(5, 100)  # what the Trainer calls after step 5: a switch is due
    with torch.no_grad():
        out_after = enc(x)
    torch.testing.assert_close(out_after, out_before, atol=1e-5, rtol=1e-5)  # output identical across the switch
    total_reset = 0
    for m in layers:
        mom, A0, B0 = before[id(m)]
        cols = (m.lora_B != B0).any(0).nonzero().squeeze(1).tolist()  # switched B columns
        rows = (m.lora_A != A0).any(1).nonzero().squeeze(1).tolist()  # switched A rows
        assert len(cols) == 1 and len(rows) == 1 and set(cols).isdisjoint(rows)
        pairs = sorted(cols + rows)
        assert m.frozen_A.tolist() == [2 if i in cols else 0 for i in range(4)]  # counterpart of a B switch
        assert m.frozen_B.tolist() == [2 if i in rows else 0 for i in range(4)]
        now = _moments(opt, m)
        for (factor, key), v in now.items():
            dim = 0 if factor == "lora_A" else 1
            touched = torch.zeros(4, dtype=torch.bool)
            touched[pairs] = True
            sel = touched[:, None].expand_as(v) if dim == 0 else touched[None, :].expand_as(v)
            assert torch.count_nonzero(v[sel]) == 0, (factor, key)  # reset
            assert torch.equal(v[~sel], mom[(factor, key)][~sel]), (factor, key)  # others untouched
            total_reset += int(sel.sum())
    assert log["switched"] == 2 * len(layers) and log["moments_reset"] == total_reset


def test_counterparts_stay_frozen_for_freeze_steps_then_train() -> None:
    torch.manual_seed(0)
    enc = build_encoder(SPEC)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    enc.bind_optimizer(opt)
    x, y = torch.randint(60, 120, (8, 10)), torch.randn(8, 32)
    for step in range(1, 6):
        _train(enc, opt, x, y, step)  # switch after step 5
    m = switchlora_layers(enc)[0]
    (i,) = (m.frozen_A > 0).nonzero().squeeze(1).tolist()  # A row frozen: its B column was switched
    (j,) = (m.frozen_B > 0).nonzero().squeeze(1).tolist()
    A5, B5 = m.lora_A.clone(), m.lora_B.clone()
    for step in (6, 7):  # freeze_steps = 2: no gradient, moments stay zero, values stay
        _train(enc, opt, x, y, step)
        assert torch.equal(m.lora_A[i], A5[i]) and torch.equal(m.lora_B[:, j], B5[:, j])
        assert torch.count_nonzero(opt.state[m.lora_A]["exp_avg"][i]) == 0
    assert not torch.equal(m.lora_B[:, i], B5[:, i])  # the switched vector itself trains at once
    assert not torch.equal(m.lora_A[j], A5[j])
    assert m.frozen_A.sum() == 0 and m.frozen_B.sum() == 0
    _train(enc, opt, x, y, 8)
    assert not torch.equal(m.lora_A[i], A5[i]) and not torch.equal(m.lora_B[:, j], B5[:, j])


def test_reset_can_be_switched_off_and_unbound_layers_reset_nothing() -> None:
    torch.manual_seed(0)
    spec = {**SPEC, "adapter": {**SPEC["adapter"], "reset_optimizer": False, "freeze_steps": 0}}
    enc = build_encoder(spec)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    enc.bind_optimizer(opt)  # bound, so only reset_optimizer: false keeps the moments
    x, y = torch.randint(60, 120, (8, 10)), torch.randn(8, 32)
    for step in range(1, 5):
        _train(enc, opt, x, y, step)
    m = switchlora_layers(enc)[0]
    mom = _moments(opt, m)
    assert enc.on_step_end(5, 100) == {"switched": 2 * len(switchlora_layers(enc)), "moments_reset": 0}
    assert all(torch.equal(v, mom[k]) for k, v in _moments(opt, m).items())
    fresh = build_encoder(SPEC)  # never bound to an optimizer: nothing to reset, no error
    assert fresh.on_step_end(5, 100)["moments_reset"] == 0


def test_core_trainer_run_resets_moments_and_loss_goes_down(tmp_path: Path) -> None:
    """Through the core Trainer (MLM on Python docs), which binds the optimizer: every switch logs reset entries."""
    corpus = tmp_path / "docs.jsonl"
    from text_helpers import pydoc_docs

    corpus.write_text("".join(json.dumps({"text": d.text[:400]}) + "\n" for d in pydoc_docs()))
    cfg = load_experiment(EXPERIMENT, [
        f"output_dir={tmp_path}", f"data.sources=[{corpus}]", "data.probe=none", "data.vocab_size=400",
        f"data.tokenizer_cache={tmp_path / 'tok'}", "encoder.base.dim=32", "encoder.base.depth=1",
        "encoder.adapter.r=4", "encoder.adapter.switch_every=4", "train.steps=12", "train.batch_size=8",
        "train.progress=false", "train.log_every=1", "train.ckpt_every=0", "optim.warmup_steps=0",
        "optim.lr=3.0e-3"])
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    objective = modality.build_objective(modality.build_encoder())
    Trainer(objective, dataset, collate, cfg, tmp_path / "run").fit()
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    switches = [r for r in logs if "switched" in r]
    assert [r["step"] for r in switches] == [4, 8, 12]
    assert all(r["moments_reset"] > 0 for r in switches)
    assert sum(r["loss"] for r in logs[-3:]) < sum(r["loss"] for r in logs[:3])
