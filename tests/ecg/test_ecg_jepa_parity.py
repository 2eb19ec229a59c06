"""sslab computes the same function as the original ECG-JEPA (kweimann/ECG-JEPA, commit 504b4e5b).

``../shared/data/reference/ecg_jepa/`` holds the original code's initial weights, two batches with their
masks, per-parameter gradients and losses, and the weights after two AdamW steps (its README lists the
conventions).  The reference model is built here purely from configuration (``vit1d`` + ``jepa`` specs through
the registries) and trained by sslab's own ``Trainer.train_step``, so the test covers the optimizer groups, the
EMA placement and the schedules as shipped.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict

import pytest
import torch

from sslab.core.config import ExperimentConfig, from_dict
from sslab.core.export import build_encoder, load_encoder
from sslab.core.registry import IMPORTERS, OBJECTIVES
from sslab.core.trainer import Trainer
from sslab.importers.ecg_jepa import encoder_spec, reference_key_to_sslab, sslab_key_to_reference

# the original ECG-JEPA model as sslab configuration (the fixture's tiny sizes; see experiments/ecg/jepa_original_vitxs.yaml)
ENCODER = {"name": "vit1d", "in_chans": 12, "patch_size": 25, "dim": 64, "depth": 2, "heads": 4,
           "num_registers": 1, "bias": False, "norm_eps": 1e-6}
OBJECTIVE = {"name": "jepa", "predictor_dim": 32, "predictor_depth": 2, "predictor_heads": 4,
             "momentum": [0.998, 0.9995], "loss": "l1", "target_norm": "none", "ema_at": "forward",
             "token_weight_decay": False}
OPTIM = {"lr": 1e-3, "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.01, "betas": [0.9, 0.99],
         "eps": 1e-6, "clip_grad": None}


@pytest.fixture(scope="module")
def reference(shared_data: Path) -> Dict[str, object]:
    from safetensors.torch import load_file

    root = shared_data / "reference" / "ecg_jepa"
    if not root.is_dir():
        pytest.skip(f"ECG-JEPA reference outputs not found at {root}")
    return {"root": root, "json": json.loads((root / "ecg_jepa_reference.json").read_text()),
            "init": load_file(str(root / "ecg_jepa_reference_init.safetensors")),
            "steps": load_file(str(root / "ecg_jepa_reference_steps.safetensors")),
            "after2": load_file(str(root / "ecg_jepa_reference_after2.safetensors"))}


def _batch(steps, s: int) -> Dict[str, torch.Tensor]:
    return {"inputs": steps[f"step{s}.inputs"], "context_idx": steps[f"step{s}.context_idx"],
            "target_idx": steps[f"step{s}.target_idx"]}


def _objective(init) -> torch.nn.Module:
    torch.manual_seed(0)
    obj = OBJECTIVES.build("jepa", encoder=build_encoder(ENCODER), **{k: v for k, v in OBJECTIVE.items() if k != "name"})
    state = {reference_key_to_sslab(k[len("init."):]): v for k, v in init.items()}
    obj.load_state_dict(state, strict=True)  # every tensor maps 1:1, nothing left over
    return obj


def test_encoder_spec_from_reference_config_is_the_test_configuration(reference):
    spec = encoder_spec(reference["json"]["config"])
    assert {k: spec[k] for k in ENCODER} == ENCODER and spec["qkv_bias"] is False and spec["mlp_ratio"] == 4.0
    assert reference_key_to_sslab("target_encoder.patch_embed.proj.weight") == "target.module.patch_embed.weight"
    assert sslab_key_to_reference("target.module.patch_embed.weight") == "target_encoder.patch_embed.proj.weight"


def test_two_training_steps_reproduce_losses_gradients_and_weights(reference, tmp_path):
    """Both losses (1e-6), every gradient (1e-5) and every weight after two steps, incl. the EMA target."""
    init, steps, after2 = reference["init"], reference["steps"], reference["after2"]
    ref_losses = reference["json"]["losses"]
    obj = _objective(init)
    cfg = from_dict(ExperimentConfig, {"name": "parity", "output_dir": str(tmp_path), "modality": "ecg",
                                       "encoder": ENCODER, "objective": OBJECTIVE, "optim": OPTIM,
                                       "train": {"steps": 10, "batch_size": 4, "device": "cpu", "progress": False}})
    trainer = Trainer(obj, list(range(8)), None, cfg, tmp_path)
    decayed = {n for g in trainer.optimizer.param_groups if g["weight_decay"] > 0 for n in g["names"]}
    assert "encoder.registers" not in decayed and "predictor.mask_token" not in decayed
    assert "encoder.patch_embed.weight" in decayed and "predictor.embed.weight" in decayed
    grads: Dict[str, torch.Tensor] = {}

    def grab(*_):
        grads.update({n: p.grad.clone() for n, p in obj.named_parameters() if p.requires_grad})

    trainer.optimizer.register_step_pre_hook(grab)
    max_grad_diff = 0.0
    for s in range(2):
        logged = trainer.train_step(iter([_batch(steps, s)]))
        assert logged["loss"] == pytest.approx(ref_losses[s], abs=1e-6), (s, logged["loss"], ref_losses[s])
        ref_grads = {reference_key_to_sslab(k[len(f"step{s}.grad."):]): v for k, v in steps.items()
                     if k.startswith(f"step{s}.grad.")}
        assert set(ref_grads) == set(grads)
        for name, g in ref_grads.items():
            torch.testing.assert_close(grads[name], g, atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
            max_grad_diff = max(max_grad_diff, float((grads[name] - g).abs().max()))
    state = obj.state_dict()
    ref_state = {reference_key_to_sslab(k[len("after2."):]): v for k, v in after2.items()}
    assert set(ref_state) == set(state)
    for name, v in ref_state.items():
        torch.testing.assert_close(state[name], v, atol=1e-6, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    # the EMA target moved ~1e-6 in two steps; its displacement must match too (an update after the step
    # instead of at the start of the next forward doubles it, a wrong momentum changes it by (1-m) ratios)
    for name, v in ref_state.items():
        if name.startswith("target."):
            t0 = init["init." + sslab_key_to_reference(name)]
            torch.testing.assert_close(state[name] - t0, v - t0, atol=3e-8, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    print(f"max |grad - reference| {max_grad_diff:.2e}")


def test_importer_writes_an_encoder_equal_to_the_reference_target(reference, tmp_path):
    root = reference["root"]
    ckpt = tmp_path / "after2.safetensors"
    ckpt.write_bytes((root / "ecg_jepa_reference_after2.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="need the configuration as JSON"):
        IMPORTERS.get("ecg-jepa")(ckpt, tmp_path / "x")
    cfg = root / "ecg_jepa_reference.json"
    out = IMPORTERS.get("ecg-jepa")(ckpt, tmp_path / "enc", config=cfg)
    enc = load_encoder(out)
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["spec"]["bias"] is False and meta["pipeline"]["fs"] == 500 and meta["pipeline"]["crop_samples"] == 1000
    assert len(meta["pipeline"]["norm"]["std"]) == 12
    after2 = reference["after2"]
    for name, v in enc.state_dict().items():
        assert torch.equal(v, after2["after2.target_encoder." + sslab_key_to_reference(name)]), name
    # and the imported encoder computes the targets of the trained objective
    obj = _objective(reference["init"])
    obj.load_state_dict({reference_key_to_sslab(k[len("after2."):]): v for k, v in after2.items()})
    x = reference["steps"]["step0.inputs"]
    torch.testing.assert_close(enc(x), obj.target(x), atol=0, rtol=0)
    # the context encoder, and a .pt checkpoint in the original pretrain.py format
    pt = tmp_path / "chkpt_2.pt"
    torch.save({"model": {k[len("after2."):]: v for k, v in after2.items()}, "config": reference["json"]["config"],
                "step": 2}, pt)
    ctx = load_encoder(IMPORTERS.get("ecg-jepa")(pt, tmp_path / "ctx", which="encoder"))
    assert torch.equal(ctx.patch_embed.weight, after2["after2.encoder.patch_embed.proj.weight"])
    with pytest.raises(ValueError, match="which must be one of"):
        IMPORTERS.get("ecg-jepa")(pt, tmp_path / "y", which="predictor")
    with pytest.raises(ValueError, match="unknown options"):
        IMPORTERS.get("ecg-jepa")(pt, tmp_path / "y", layers=3)
    # a tensor that does not map is an error naming it, unless dropped deliberately (sslab import --ignore)
    extra = {k[len("after2."):]: v for k, v in after2.items()}
    extra["target_encoder.head.weight"] = torch.zeros(5, 64)
    torch.save({"model": extra, "config": reference["json"]["config"]}, pt)
    with pytest.raises(ValueError, match="head.weight"):
        IMPORTERS.get("ecg-jepa")(pt, tmp_path / "z")
    assert load_encoder(IMPORTERS.get("ecg-jepa")(pt, tmp_path / "z", ignore=["head."])).dim == 64


def test_benchmark_baseline_is_the_reference_function(reference, repo_root):
    """The re-implementation timed by benchmarks/ecg_jepa_step.py reproduces the reference's losses and weights."""
    spec = importlib.util.spec_from_file_location("ecg_jepa_step", repo_root / "benchmarks" / "ecg_jepa_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    c = reference["json"]["config"]
    model = bench.ReferenceJEPA(n_patches=c["channel_size"] // c["patch_size"], in_chans=12, patch=c["patch_size"],
                                dim=c["dim"], depth=c["depth"], heads=c["num_heads"], pred_dim=c["pred_dim"],
                                pred_depth=c["pred_depth"], pred_heads=c["pred_num_heads"], steps=c["steps"])
    model.load_state_dict({k[len("init."):]: v for k, v in reference["init"].items()}, strict=True)
    opt = model.optimizer(lr=1e-3, weight_decay=0.01)
    for s in range(2):
        b = _batch(reference["steps"], s)
        loss = model(b["inputs"], b["context_idx"], b["target_idx"])
        assert float(loss.detach()) == pytest.approx(reference["json"]["losses"][s], abs=1e-6)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, reference["after2"]["after2." + k], atol=1e-6, rtol=0)


def test_shipped_original_config_uses_the_parity_conventions(repo_root):
    """experiments/ecg/jepa_original_vitxs.yaml is the tested configuration at the original's ViT-XS sizes."""
    from sslab.core.config import load_experiment

    cfg = load_experiment(repo_root / "experiments" / "ecg" / "jepa_original_vitxs.yaml")
    conventions = ("num_registers", "bias", "norm_eps", "patch_size", "in_chans")
    assert {k: cfg.encoder[k] for k in conventions} == {k: ENCODER[k] for k in conventions}
    assert {k: cfg.objective[k] for k in ("loss", "target_norm", "ema_at", "token_weight_decay", "momentum")} == \
        {k: OBJECTIVE[k] for k in ("loss", "target_norm", "ema_at", "token_weight_decay", "momentum")}
    assert cfg.optim.clip_grad is None and cfg.optim.eps == OPTIM["eps"] and list(cfg.optim.betas) == OPTIM["betas"]
    spec = dict(cfg.objective)
    obj = OBJECTIVES.build(spec.pop("name"), encoder=build_encoder(cfg.encoder), **spec)
    assert sum(p.numel() for p in obj.encoder.parameters()) == 3_600_000  # the original config file: "learnable encoder parameters: 3,600,000"
    assert obj.predictor.dim == 96 and len(obj.predictor.blocks) == 8
