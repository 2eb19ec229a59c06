"""Issue 19, ECG-text: MELP pretrained on synthetic ECG-report pairs, its ECG tower probed on PTB-XL
(data.probe); another sampling rate / crop length or a label-less source is refused before pretraining."""
from __future__ import annotations

import pytest

from sslab.core.config import ConfigError, load_experiment
from sslab.run import pretrain, probe

SMALL = ["encoder={name: vit1d, in_chans: 12, patch_size: 25, dim: 16, depth: 1, heads: 2}",
         "objective.embed_dim=16", "objective.text={dim: 16, depth: 1, heads: 2, dropout: 0.0}",
         "objective.decoder={dim: 16, depth: 1, heads: 2}", "data.synthetic={n_records: 24, duration: 5.0}",
         "data.vocab_size=120", "train.steps=2", "train.batch_size=8", "train.progress=false", "data.workers=1"]


def _cfg(tmp_path, probe):
    return load_experiment("experiments/ecg_text/melp_synthetic.yaml", [
        f"output_dir={tmp_path}/runs", f"data.cache_dir={tmp_path / 'cache'}", *SMALL, f"data.probe={probe}"])


def test_melp_on_synthetic_pairs_probed_on_ptbxl(tmp_path, shared_data):
    ptbxl = shared_data / "ecg" / "ptbxl"
    run = pretrain(_cfg(tmp_path, f"{{source: ptbxl, path: {ptbxl}, pretrain_folds: [3], probe_train_folds: [3], "
                                  f"probe_test_folds: [6]}}"))
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"ptbxl_superdiagnostic"}
    assert {r["n_train"] for r in rows} == {34} and {r["encoder"] for r in rows} == {"pretrained", "random_init"}


@pytest.mark.parametrize("probe, match", [
    ("{source: ptbxl, path: PTBXL, fs: 500}", r"data.probe.fs=500.0 Hz differs from the pretraining data.fs=100.0 Hz"),
    ("{source: ptbxl, path: PTBXL, crop_seconds: 2.5}", r"data.probe.crop_seconds=2.5 s differs"),
    ("{source: wfdb, path: PTBXL}", r"wfdb header reports carry no class labels"),
])
def test_incompatible_probe_ecgs_are_refused_before_pretraining(tmp_path, shared_data, probe, match):
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path, probe.replace("PTBXL", str(shared_data / "ecg" / "ptbxl"))))
    assert not (tmp_path / "runs").exists()
