"""Vision plugin end to end on the embedded digits: Trainer pretraining (SiT, POA), probes beside
random init, ``sslab extract`` checkpoints that load into plain timm and match the elastic forward."""
from __future__ import annotations

import json

import pytest
import torch

from sslab.cli import main as cli_main
from sslab.commands.extract import load_timm_checkpoint
from sslab.core.config import ConfigError, load_experiment
from sslab.core.export import load_encoder
from sslab.modalities.vision import VisionModality, probe_sizes
from sslab.run import pretrain, probe

torch.set_num_threads(1)

BASE = {
    "modality": "vision", "seed": 0,
    "data": {"source": "digits", "img_size": 16, "channels": 1, "n_global": 2, "probe_max_train": 300,
             "probe_max_test": 150},
    "encoder": {"name": "elastic_vit", "img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 24,
                "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "global_pool": "avg"},
    "train": {"steps": 3, "batch_size": 16, "progress": False, "log_every": 1},
    "optim": {"lr": 1e-3},
}


def _cfg(tmp_path, name, objective, **data):
    base = {**BASE, "name": name, "output_dir": str(tmp_path), "objective": objective,
            "data": {**BASE["data"], **data}}
    return load_experiment(base=base)


def test_poa_pretrain_extract_and_probe_every_size(tmp_path):
    cfg = _cfg(tmp_path, "poa", {"name": "poa", "out_dim": 32, "head_hidden": 32, "head_bottleneck": 16,
                                 "widths": [12, 24], "depths": [1, 2], "ibot_weight": 0.5},
               n_local=1, local_size=8)
    run = pretrain(cfg)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and all("kl_teacher_elastic" in m for m in metrics)
    elastic = load_encoder(run)
    # CLI: standalone timm checkpoint of one size == elastic forward of that size
    assert cli_main(["extract", str(run), "--width", "12", "--depth", "1"]) == 0
    folder = run / "extracted" / "w12_d1"
    plain = load_timm_checkpoint(folder)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(plain.forward_features(x), elastic(x, width=12, depth=1), atol=1e-5)
        assert torch.allclose(load_encoder(folder)(x), elastic(x, width=12, depth=1), atol=1e-5)
    meta = json.loads((folder / "config.json").read_text())
    # timm's own pretrained-file loading path accepts the checkpoint as well
    import timm

    native = timm.create_model(meta["architecture"], pretrained=True, **meta["model_args"],
                               pretrained_cfg_overlay={"file": str(folder / "model.safetensors"), "num_classes": 0})
    with torch.no_grad():
        assert torch.allclose(native.eval().forward_features(x), plain.forward_features(x), atol=1e-6)
    assert meta["model_args"]["embed_dim"] == 12 and meta["model_args"]["depth"] == 1
    assert meta["num_params"] == sum(p.numel() for p in plain.parameters())
    assert cli_main(["extract", str(run), "--width", "13", "--depth", "1"]) == 2  # clear error, no traceback
    # one table: every size beside the same size at random init
    result = probe_sizes(run, sizes=[(12, 1), (24, 2)], progress=False)
    names = [r["encoder"] for r in result["rows"]]
    assert names == ["w12_d1/pretrained", "w12_d1/random_init", "w24_d2/pretrained", "w24_d2/random_init",
                     "floor:raw_pixels"]  # the classical floor once, beside every size
    for r in result["rows"][:-1]:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["knn_accuracy"] <= 1.0 and r["num_params"] > 0
    assert (run / "probe_sizes.md").is_file() and (run / "probe_sizes.png").stat().st_size > 0


def test_sit_pretrain_and_probe_beside_random_init(tmp_path):
    cfg = _cfg(tmp_path, "sit", {"name": "sit", "proj_hidden": 32, "proj_dim": 16})
    modality = VisionModality(cfg)
    ds, collate = modality.pretrain_data()
    batch = collate([ds[i] for i in range(4)])
    ratio = batch["corrupt_mask"][0].float().mean().item()
    assert 0.5 <= ratio <= 0.7 and len(batch["corrupted"]) == 2  # corruption made in the collator
    run = pretrain(cfg)
    result = probe(run, progress=False)
    assert [r["encoder"] for r in result["rows"]] == ["pretrained", "random_init", "floor:raw_pixels"]
    assert all("knn_accuracy" in r for r in result["rows"] if not r["encoder"].startswith("floor:"))


def test_vision_config_rejects_bad_keys_and_sizes(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'data.imgsize'"):
        VisionModality(_cfg(tmp_path, "bad", {"name": "sit"}, imgsize=16))
    with pytest.raises(ValueError, match="not a multiple of encoder.patch_size"):
        VisionModality(_cfg(tmp_path, "bad", {"name": "sit"}, img_size=18))
    with pytest.raises(ValueError, match="data.source must be one of"):
        VisionModality(_cfg(tmp_path, "bad", {"name": "sit"}, source="jpeg")).pretrain_data()
    with pytest.raises(ValueError, match="data.path must name a MedMNIST"):
        VisionModality(_cfg(tmp_path, "bad", {"name": "sit"}, source="npz")).pretrain_data()


def test_poa_exact_resume(tmp_path):
    """4 steps straight == 2 steps, stop, resume 2: elastic size draws, iBOT masks, centers, EMA teacher."""
    objective = {"name": "poa", "out_dim": 16, "head_hidden": 16, "head_bottleneck": 8, "widths": [12, 24],
                 "depths": [1, 2], "ibot_weight": 0.5, "koleo_weight": 0.1}
    flat = lambda run: torch.cat([p.detach().flatten() for p in load_encoder(run).parameters()])
    base = _cfg(tmp_path, "resumed", objective, n_local=1, local_size=8)
    base.train.steps = 4
    base.train.stop_after = 2
    pretrain(base)
    base.train.stop_after = None
    resumed = pretrain(base)
    straight_cfg = _cfg(tmp_path, "straight4", objective, n_local=1, local_size=8)
    straight_cfg.train.steps = 4
    straight = pretrain(straight_cfg)
    assert torch.equal(flat(resumed), flat(straight))
    steps = [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["sit", "poa"])
def test_experiment_files_build(name, repo_root):
    cfg = load_experiment(repo_root / "experiments" / "vision" / f"{name}.yaml")
    modality = VisionModality(cfg)
    objective = modality.build_objective(modality.build_encoder())
    assert cfg.data["source"] == "npz" and "pneumoniamnist" in cfg.data["path"]
    assert objective.encoder.dim == 64 and objective.encoder.img_size == cfg.data["img_size"]
