"""Issue 19, vision: pretrain POA on digits, probe on another image set (data.probe); refusals up front;
``sslab extract`` offers only the trained sizes and ``--probe`` takes ``sslab probe``'s overrides."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sslab.cli import main as cli_main
from sslab.core.config import ConfigError, load_experiment
from sslab.run import pretrain

torch.set_num_threads(1)

POA = {"name": "poa", "out_dim": 16, "head_hidden": 16, "head_bottleneck": 8, "widths": [12, 24], "depths": [2]}
BASE = {
    "modality": "vision", "seed": 0, "name": "poa",
    "encoder": {"name": "elastic_vit", "img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 24,
                "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "global_pool": "avg"},
    "objective": POA,
    "train": {"steps": 2, "batch_size": 16, "progress": False, "log_every": 1},
    "optim": {"lr": 1e-3},
}


def _npz(path, n=60, size=28, rgb=False, seed=0):
    """A tiny MedMNIST-style file: 73% majority class (BreastMNIST-like), class = a bright square."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "val", "test"):
        y = (rng.random(n) > 0.73).astype(np.int64)
        img = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
        img[y == 1, 8:20, 8:20] = 220
        if rgb:
            img = np.repeat(img[..., None], 3, axis=-1)
        out[f"{split}_images"], out[f"{split}_labels"] = img, y[:, None]
    np.savez(path, **out)
    return path


def _cfg(tmp_path, probe):
    return load_experiment(base={**BASE, "output_dir": str(tmp_path),
                                 "data": {"source": "digits", "img_size": 16, "channels": 1, "probe": probe}})


def test_poa_on_digits_probed_on_another_npz_and_extract_offers_trained_sizes(tmp_path, capsys):
    npz = _npz(tmp_path / "breast.npz")
    run = pretrain(_cfg(tmp_path, {"source": "npz", "path": str(npz)}))
    # --all extracts the trained grid (widths 12, 24 x depth 2), never depth 1
    assert cli_main(["extract", str(run), "--all"]) == 0
    assert sorted(p.name for p in (run / "extracted").iterdir()) == ["w12_d2", "w24_d2"]
    assert cli_main(["extract", str(run), "--width", "12", "--depth", "1"]) == 2
    assert "was not trained" in capsys.readouterr().err
    assert cli_main(["extract", str(run), "--all", "--depths", "1"]) == 2
    # --probe takes `sslab probe` overrides: probe the 28x28 npz (resized to 16) without class weights
    assert cli_main(["extract", str(run), "--all", "--probe", "probe.class_weight=none", "--no-progress"]) == 0
    rows = json.loads((run / "probe_sizes.json").read_text())["rows"]
    floors = [r for r in rows if "width" not in r]
    assert [r["encoder"] for r in floors] == ["floor:raw_pixels"]  # the classical floor, once
    rows = [r for r in rows if "width" in r]
    assert {r["task"] for r in rows} == {"medmnist"} and {r["n_test"] for r in rows} == {60}
    assert {r["class_weight"] for r in rows} == {"none"}
    assert {(r["width"], r["depth"]) for r in rows} == {(12, 2), (24, 2)}
    for r in rows:  # binary: AUC, or flagged as degenerate (majority class only) - never a bare accuracy
        assert "auc" in r or r["degenerate"].startswith("one predicted class")


@pytest.mark.parametrize("probe, match", [
    ({"source": "npz", "img_size": 32}, r"asks for 1x32x32 images, the encoder takes 1x16x16"),
    ({"source": "npz", "rgb": True}, r"3-channel \(RGB\) images but the encoder takes 1 channel"),
    ({"source": "npz", "path": "/nonexistent/x.npz"}, r"data.probe.path: /nonexistent/x.npz not found"),
])
def test_incompatible_probe_images_are_refused_before_pretraining(tmp_path, probe, match):
    probe = dict(probe)
    rgb = probe.pop("rgb", False)
    probe.setdefault("path", str(_npz(tmp_path / "p.npz", rgb=rgb)))
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path, probe))
    assert not (tmp_path / "poa").exists()
