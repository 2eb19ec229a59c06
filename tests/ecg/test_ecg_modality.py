"""ECG modality plugin: config validation, crop-averaged embedding, synthetic + PTB-XL data, run/probe."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sslab.core.config import ConfigError, load_experiment
from sslab.modalities.ecg import ECGModality, collate_crops

ENC = "encoder={name: vit1d, in_chans: 12, patch_size: 5, dim: 32, depth: 2, heads: 2}"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(tmp_path, *extra):
    return load_experiment(None, [f"output_dir={tmp_path}", "name=t", "modality=ecg", ENC, "objective={name: jepa}",
                                  "data.synthetic={n_records: 40, duration: 5.0}", f"data.cache_dir={tmp_path}/c",
                                  "data.workers=1", "train.steps=4", "train.batch_size=8", "train.progress=false",
                                  *extra])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'data.sorce'"):
        ECGModality(_cfg(tmp_path, "data.sorce=ptbxl"))
    with pytest.raises(ConfigError, match=r"data.source: expected one of \['synthetic', 'ptbxl', 'wfdb'\]"):
        ECGModality(_cfg(tmp_path, "data.source=edf"))
    with pytest.raises(ConfigError, match="data.path: the ptbxl source needs a folder"):
        ECGModality(_cfg(tmp_path, "data.source=ptbxl"))
    with pytest.raises(ConfigError, match="not a multiple of encoder.patch_size 5"):
        ECGModality(_cfg(tmp_path, "data.crop_seconds=2.52"))
    with pytest.raises(ConfigError, match=r"encoder.in_chans \(12\) must equal the number of data.leads \(2\)"):
        ECGModality(_cfg(tmp_path, "data.leads=[I, II]"))


def test_embed_averages_crops(tmp_path):
    from sslab.core.export import build_encoder

    mod = ECGModality(_cfg(tmp_path))
    enc = build_encoder(mod.cfg.encoder).eval()
    a, b = torch.randn(3, 12, 250), torch.randn(2, 12, 250)
    inputs, y = collate_crops([(a, torch.tensor(0)), (b, torch.tensor(1))])
    with torch.no_grad():
        z = mod.embed(enc, inputs)
        ref = torch.stack([enc.pool(enc(a)).mean(0), enc.pool(enc(b)).mean(0)])
    torch.testing.assert_close(z, ref)
    assert y.tolist() == [0, 1]


def test_synthetic_pretrain_and_probe(tmp_path):
    from sslab.run import pretrain, probe

    cfg = _cfg(tmp_path)
    mod = ECGModality(cfg)
    ds, col = mod.pretrain_data()
    assert len(ds) == 30  # 25 % held out for probing
    batch = col([ds[i] for i in range(4)])
    assert batch["inputs"].shape == (4, 12, 250) and batch["context_idx"].shape[1] + batch["target_idx"].shape[1] == 50
    run = pretrain(cfg)
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses and all(np.isfinite(losses))
    res = probe(run, cfg=cfg, progress=False)
    tasks = {(r["task"], r["encoder"]) for r in res["rows"]}
    assert ("synthetic_morphology", "pretrained") in tasks and ("synthetic_heart_rate", "random_init") in tasks


@pytest.mark.parametrize("export", ["target", "context"])
def test_jepa_exports_the_chosen_encoder(tmp_path, export):
    """Default: the trained context encoder is exported; ``export: target`` exports the EMA encoder."""
    from sslab.core.checkpoint import latest_checkpoint
    from sslab.core.export import load_encoder
    from sslab.run import pretrain

    cfg = _cfg(tmp_path, "objective={name: jepa, momentum: [0.9, 0.9]" + ("" if export == "context" else
                                                                          ", export: target") + "}")
    run = pretrain(cfg)
    state = torch.load(latest_checkpoint(run / "checkpoints"), map_location="cpu", weights_only=False)["objective"]
    exported = load_encoder(run).state_dict()
    prefix = {"target": "target.module.", "context": "encoder."}[export]
    other = {"target": "encoder.", "context": "target.module."}[export]
    for k, v in exported.items():
        torch.testing.assert_close(v, state[prefix + k], rtol=0, atol=0)
    w = "patch_embed.weight" if "patch_embed.weight" in exported else next(iter(exported))
    assert not torch.equal(exported[w], state[other + w])  # EMA 0.9 over 4 steps: the two encoders differ


def test_ptbxl_source(tmp_path, shared_data):
    cfg = _cfg(tmp_path, "data.source=ptbxl", f"data.path={shared_data / 'ecg' / 'ptbxl'}",
               "data.pretrain_folds=[3]", "data.probe_train_folds=[3]", "data.probe_test_folds=[6]")
    mod = ECGModality(cfg)
    ds, col = mod.pretrain_data()
    assert len(ds) == 34  # strat_fold 3 of the shared subset
    x = ds[0]
    assert x.shape == (12, 250) and abs(float(x.mean())) < 1.0 and float(x.abs().max()) <= 5.0
    (task,) = mod.probe_tasks()
    assert task.task == "multilabel" and task.class_names == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert len(task.train) == 34 and len(task.test) == 33
    crops, y = task.test[0]
    assert crops.shape == (7, 12, 250) and y.shape == (5,)  # 2.5 s crops every 1.25 s over 10 s
