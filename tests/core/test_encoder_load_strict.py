"""Issue 14: strict loading (missing / unexpected keys listed), input refusals that say what was expected
(lead set, image size, table schema, feature count), one-line CLI errors, the model card, provenance,
the probe table in the folder, and ``encoder.init_from``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sslab
from sslab.cli import main
from sslab.core.export import WEIGHTS, EncoderLoadError, build_encoder, save_encoder
from sslab.core.pipeline import InputMismatch, build_pipeline

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
VECTOR = {"kind": "vector", "n_features": 8, "scale": 2.0, "columns": None, "label_column": None}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder({"name": "mlp", "in_dim": 8, "dim": 4, "hidden": [6]})
    return save_encoder(enc, tmp_path / "enc", pipeline=VECTOR), enc


def _rewrite(folder, change):
    state = load_file(str(folder / WEIGHTS))
    change(state)
    save_file(state, str(folder / WEIGHTS))


def test_load_refuses_missing_keys_and_lists_them(folder, capsys):
    path, _ = folder
    _rewrite(path, lambda s: (s.pop("net.0.bias"), s.pop("net.4.weight")))
    with pytest.raises(EncoderLoadError, match=r"missing 2 key\(s\): net\.0\.bias, net\.4\.weight"):
        sslab.load_encoder(path)
    np.save(path.parent / "x.npy", np.zeros((2, 8)))
    assert main(["embed", str(path), str(path.parent / "x.npy"), "--out", str(path.parent / "f.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "net.0.bias" in err and err.startswith("sslab embed: error:")


def test_load_refuses_unexpected_keys_and_lists_them(folder):
    path, _ = folder
    _rewrite(path, lambda s: s.update({"head.weight": torch.zeros(2, 4), "extra": torch.zeros(1)}))
    with pytest.raises(EncoderLoadError, match=r"unexpected 2 key\(s\): extra, head\.weight"):
        sslab.load_encoder(path)


def test_loaded_encoder_carries_its_preprocessing(folder):
    path, enc = folder
    loaded = sslab.load_encoder(path)
    raw = np.arange(16, dtype=np.float64).reshape(2, 8)
    x = loaded.preprocess(raw)
    torch.testing.assert_close(x, torch.tensor(raw / 2.0, dtype=torch.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_raw(raw), enc.eval().pool(enc(x)))
    with pytest.raises(InputMismatch, match=r"expected rows of 8 features, got shape \(2, 5\)"):
        loaded.preprocess(np.zeros((2, 5)))


def test_model_card_provenance_and_probe_table_in_the_folder(folder):
    from sslab.core.export import record_probe

    path, _ = folder
    card = (path / "README.md").read_text()
    assert "# sslab encoder: mlp" in card and "divided by 2.0" in card and "Not probed yet" in card
    rows = [{"task": "t", "encoder": "pretrained", "kind": "multiclass", "label_fraction": 1.0, "accuracy": 0.75},
            {"task": "t", "encoder": "random_init", "kind": "multiclass", "label_fraction": 1.0, "accuracy": 0.5}]
    record_probe(path, rows)
    meta = json.loads((path / "encoder.json").read_text())
    assert meta["probe"]["rows"][0]["accuracy"] == 0.75
    card = (path / "README.md").read_text()
    assert "| t | pretrained |" in card and "0.7500" in card and "Not probed yet" not in card


def test_ecg_refuses_another_lead_set(tmp_path):
    import wfdb

    spec = {"kind": "ecg", "fs": 100.0, "leads": LEADS, "storage_dtype": "float32", "norm": None,
            "crop_samples": 250, "eval_stride_samples": 125}
    pipe = build_pipeline(spec)
    with pytest.raises(InputMismatch, match=r"expects leads \['I', 'II', .*missing \['III', 'aVR'"):
        pipe.preprocess(np.random.randn(2, 1000), fs=500, leads=["I", "II"])
    with pytest.raises(InputMismatch, match="has 3 leads; the encoder expects 12"):
        pipe.preprocess(np.random.randn(3, 1000), fs=100)
    (item,) = pipe.preprocess(np.random.randn(12, 5000), fs=500)  # 10 s at another rate: resampled to 100 Hz
    assert item.shape == (7, 12, 250)  # 2.5 s crops every 1.25 s
    sig = np.random.default_rng(0).normal(size=(1000, 2))
    wfdb.wrsamp("two", fs=500, units=["mV", "mV"], sig_name=["I", "II"], p_signal=sig, fmt=["16", "16"],
                write_dir=str(tmp_path))
    with pytest.raises(InputMismatch, match=r"two: the encoder expects leads .* missing \['III'"):
        list(pipe.read([tmp_path]))


def test_vision_refuses_another_image_size():
    spec = {"kind": "vision", "img_size": 16, "channels": 1, "mean": 0.5, "std": 0.25, "source_size": [28, 28]}
    pipe = build_pipeline(spec)
    with pytest.raises(InputMismatch, match=r"image size 32x32, but the encoder was trained and probed on 28x28"):
        pipe.preprocess(np.zeros((32, 32), np.uint8))
    (ok,) = pipe.preprocess(np.zeros((28, 28), np.uint8))
    assert ok.shape == (1, 16, 16)
    pipe.allow_resize = True  # sslab embed --allow-resize
    assert pipe.preprocess(np.zeros((32, 32), np.uint8))[0].shape == (1, 16, 16)


def test_table_refuses_another_schema(tmp_path):
    spec = {"kind": "table", "schema": {"columns": [{"name": "age", "type": "numeric"},
                                                    {"name": "color", "type": "categorical"}],
                                        "target": "y", "task": "binary"}, "read": {}}
    pipe = build_pipeline(spec, tmp_path)
    csv_file = tmp_path / "other.csv"
    csv_file.write_text("age,colour,y\n31,red,yes\n")
    with pytest.raises(InputMismatch, match=r"missing columns \['color'\], unexpected columns \['colour'\]; "
                                            r"expected \['age', 'color'\]"):
        list(pipe.read([csv_file]))


def test_init_from_starts_pretraining_from_an_encoder_folder(tmp_path):
    from sslab.core.config import load_experiment
    from sslab.run import pretrain

    base = ["modality=vector", "objective={name: masked_feature, in_dim: 64}", "train.steps=2",
            "train.batch_size=32", "train.progress=false", f"output_dir={tmp_path}"]
    first = pretrain(load_experiment(None, [*base, "name=a", "encoder={name: mlp, in_dim: 64, dim: 8, hidden: [16]}"]))
    # optim.lr=0: the second run's weights stay where init_from put them
    cfg = load_experiment(None, [*base, "name=b", f"encoder={{init_from: {first / 'encoder'}}}", "optim.lr=0.0",
                                 "optim.min_lr=0.0"])
    second = pretrain(cfg)
    a, b = load_file(str(first / "encoder" / WEIGHTS)), load_file(str(second / "encoder" / WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    spec = json.loads((second / "encoder" / "encoder.json").read_text())["spec"]
    assert "init_from" not in spec and spec["hidden"] == [16]  # the export stands alone


def test_embed_output_formats(folder, tmp_path):
    import pandas as pd

    from sslab.commands.embed import write_features

    names, X = ["a.npy:0", "a.npy:1"], np.arange(8, dtype=np.float32).reshape(2, 4)
    write_features(tmp_path / "f.csv", names, X)
    frame = pd.read_csv(tmp_path / "f.csv")
    assert list(frame.columns) == ["input", "f0", "f1", "f2", "f3"] and frame["input"].tolist() == names
    np.testing.assert_array_equal(frame[["f0", "f1", "f2", "f3"]].to_numpy(np.float32), X)
    with pytest.raises(ValueError, match="use one of .npy, .csv, .parquet"):
        write_features(tmp_path / "f.txt", names, X)
    path, _ = folder
    np.save(tmp_path / "x.npy", np.ones((3, 8)))
    assert main(["embed", str(path), str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npy")]) == 0
    index = (tmp_path / "z.index.csv").read_text().splitlines()
    assert index[0] == "row,input" and index[3] == f"2,{tmp_path / 'x.npy'}:2" and np.load(tmp_path / "z.npy").shape == (3, 4)


def test_export_survives_a_failing_pipeline_description(tmp_path, monkeypatch):
    from sslab.core.config import load_experiment
    from sslab.modalities.vector import VectorModality
    from sslab.run import pretrain

    def broken(self):
        raise FileNotFoundError("probe table gone")

    monkeypatch.setattr(VectorModality, "input_pipeline", broken)
    cfg = load_experiment(None, ["modality=vector", "objective={name: masked_feature, in_dim: 64}", "train.steps=1",
                                 "encoder={name: mlp, in_dim: 64, dim: 8, hidden: [16]}", "train.progress=false",
                                 f"output_dir={tmp_path}", "name=r"])
    with pytest.warns(UserWarning, match="probe table gone"):
        run = pretrain(cfg)
    assert sslab.load_encoder(run).pipeline is None
    assert "export-time error: FileNotFoundError: probe table gone" in (run / "encoder" / "README.md").read_text()
