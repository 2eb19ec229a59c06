"""Issue 14: ``sslab import hf-wav2vec2`` / ``timm-vit`` from tiny random checkpoints built here (no network).
The imported folder gives the source model's features, refuses unmapped keys by name, embeds raw input,
probes, and starts pretraining through ``encoder.init_from``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sslab
from sslab.cli import main
from sslab.encoders.wav2vec2 import tiny_config

TINY = tiny_config(conv_dim=[16] * 7, hidden_size=32, intermediate_size=64, codevector_dim=32,
                   proj_codevector_dim=16, num_codevectors_per_group=16)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(**TINY)
    pre = Wav2Vec2ForPreTraining(cfg).eval()
    pre.save_pretrained(root / "pretraining")
    ctc = Wav2Vec2ForCTC(cfg).eval()
    ctc.save_pretrained(root / "ctc")
    return root, pre, ctc


def test_hf_wav2vec2_import_matches_the_hf_model(hf_folders, tmp_path):
    root, pre, _ = hf_folders
    assert main(["import", "hf-wav2vec2", str(root / "pretraining"), "--out", str(tmp_path / "imp")]) == 0
    enc = sslab.load_encoder(tmp_path / "imp")
    x = torch.randn(2, 6000)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), pre.wav2vec2(x).last_hidden_state, rtol=0, atol=1e-6)
        # raw waveform at another rate -> the pipeline resamples and normalises, then mean-pools
        z = enc.embed_raw(np.sin(np.linspace(0, 300, 8000)).astype(np.float32), sample_rate=8000)
    assert z.shape == (1, 32)
    meta = json.loads((tmp_path / "imp" / "encoder.json").read_text())
    assert meta["pipeline"]["sample_rate"] == 16000 and meta["provenance"]["imported_from"]["format"] == "hf-wav2vec2"
    with pytest.raises(ValueError, match="pass sample_rate="):
        enc.preprocess(np.zeros(16000, np.float32))


def test_hf_ctc_head_must_be_dropped_explicitly(hf_folders, tmp_path, capsys):
    root, _, ctc = hf_folders
    assert main(["import", "hf-wav2vec2", str(root / "ctc"), "--out", str(tmp_path / "a")]) == 2
    assert "do not map to the sslab encoder: lm_head.bias, lm_head.weight" in capsys.readouterr().err
    assert main(["import", "hf-wav2vec2", str(root / "ctc"), "--out", str(tmp_path / "b"), "--ignore", "lm_head."]) == 0
    prov = json.loads((tmp_path / "b" / "encoder.json").read_text())["provenance"]
    assert "model.quantizer.codevectors" in prov["initialised_not_imported"]  # pretraining heads: listed, not silent
    assert "left at initial values" in (tmp_path / "b" / "README.md").read_text()
    x = torch.randn(1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(sslab.load_encoder(tmp_path / "b")(x), ctc.wav2vec2(x).last_hidden_state,
                                   rtol=0, atol=1e-6)


def test_an_unknown_key_is_an_error_naming_it(hf_folders, tmp_path):
    from safetensors.torch import load_file, save_file

    root, _, _ = hf_folders
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((root / "pretraining" / "config.json").read_text())
    state = load_file(str(root / "pretraining" / "model.safetensors"))
    state["wav2vec2.encoder.layers.9.extra.weight"] = torch.zeros(2)
    state["decoder.weight"] = torch.zeros(2)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match=r"key\(s\) do not map to the sslab encoder: decoder.weight"):
        main_import = sslab.core.registry.IMPORTERS.get("hf-wav2vec2")
        main_import(str(bad), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"unexpected 1 key\(s\): model.wav2vec2.encoder.layers.9.extra.weight"):
        main_import(str(bad), str(tmp_path / "out"), ignore=["decoder."])


def test_hf_bare_model_and_old_weight_norm_names(hf_folders, tmp_path):
    """A bare ``Wav2Vec2Model`` folder whose positional conv uses the pre-parametrization weight-norm names
    (``weight_g`` / ``weight_v``, as in the published facebook/wav2vec2-* checkpoints)."""
    from safetensors.torch import load_file, save_file

    root, pre, _ = hf_folders
    bare = tmp_path / "bare"
    pre.wav2vec2.save_pretrained(bare)
    state = load_file(str(bare / "model.safetensors"))
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                              "weight_v"): v for k, v in state.items()}
    assert any(k.endswith("weight_g") for k in old) and not any(k.startswith("wav2vec2.") for k in old)
    save_file(old, str(bare / "model.safetensors"))
    assert main(["import", "hf-wav2vec2", str(bare), "--out", str(tmp_path / "imp")]) == 0
    x = torch.randn(1, 5000)
    with torch.no_grad():
        torch.testing.assert_close(sslab.load_encoder(tmp_path / "imp")(x), pre.wav2vec2(x).last_hidden_state,
                                   rtol=0, atol=1e-6)


def test_imported_wav2vec2_probes_and_continues_pretraining(hf_folders, tmp_path):
    from sslab.core.config import load_experiment
    from sslab.run import pretrain, probe

    root, _, _ = hf_folders
    imp = tmp_path / "imp"
    assert main(["import", "hf-wav2vec2", str(root / "pretraining"), "--out", str(imp)]) == 0
    cfg = load_experiment(None, [
        "name=cont", "modality=speech", f"output_dir={tmp_path}", "data.source=synthetic",
        "data.synthetic={num_speakers: 2, utts_per_speaker: 3, min_seconds: 0.6, max_seconds: 0.9}",
        "data.max_seconds=1.0", "data.probe_seconds=0.3", "data.probe_tasks=[speaker]",
        f"encoder={{name: wav2vec2, init_from: {imp}}}", "objective.name=wav2vec2", "train.batch_size=3",
        "train.steps=1", "train.progress=false"])
    result = probe(imp, cfg=cfg, progress=False)  # the imported folder itself, beside random init
    assert {r["encoder"] for r in result["rows"]} == {"pretrained", "random_init"}
    assert "speaker_id" in (imp / "README.md").read_text()  # the probe table lands in the model card
    run = pretrain(cfg)
    assert sslab.load_encoder(run).dim == 32


def test_timm_vit_import(tmp_path, capsys):
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=48,
                            depth=2, num_heads=3, num_classes=5).eval()
    torch.save({"model": vit.state_dict()}, tmp_path / "vit.pth")
    args = ["import", "timm-vit", str(tmp_path / "vit.pth"), "--out", str(tmp_path / "imp"), "--set", "num_heads=3"]
    assert main(args) == 2
    assert "do not map to the sslab encoder: head.bias, head.weight" in capsys.readouterr().err
    assert main([*args, "--ignore", "head."]) == 0
    enc = sslab.load_encoder(tmp_path / "imp")
    img = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit.forward_head(vit.forward_features(img), pre_logits=True)
        torch.testing.assert_close(enc.pool(enc(img)), ref, rtol=0, atol=1e-6)
        z = enc.embed_raw([(np.random.rand(32, 32, 3) * 255).astype(np.uint8)])
    assert z.shape == (1, 48)
    spec = json.loads((tmp_path / "imp" / "encoder.json").read_text())
    assert spec["pipeline"]["mean"] == 0.5 and spec["spec"]["img_size"] == 32  # timm's pretrained cfg; pos_embed
    with pytest.raises(ValueError, match="image size 24x24, but the encoder was trained and probed on 32x32"):
        enc.preprocess(np.zeros((24, 24, 3), np.uint8))
    # a timm/HF-hub style folder: config.json (architecture, model_args, pretrained_cfg) + model.safetensors
    from safetensors.torch import save_file

    hub = tmp_path / "hub"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in vit.state_dict().items() if not k.startswith("head.")},
              str(hub / "model.safetensors"))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    (hub / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "model_args": {"num_heads": 3},
                                                 "pretrained_cfg": {"mean": mean, "std": std}}))
    assert main(["import", "timm-vit", str(hub), "--out", str(tmp_path / "hub_imp")]) == 0
    enc2 = sslab.load_encoder(tmp_path / "hub_imp")
    assert enc2.pipeline.spec["mean"] == mean
    img8 = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    x = enc2.preprocess(img8)
    ref = (torch.from_numpy(img8).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]) / \
        torch.tensor(std)[:, None, None]
    torch.testing.assert_close(x[0], ref)  # per-channel normalisation
