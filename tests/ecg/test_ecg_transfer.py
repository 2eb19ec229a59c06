"""Issue 19, ECG: pretrain on synthetic ECGSYN records, probe on real PTB-XL records (data.probe); other
rates / lead sets / crop lengths and label-less probe sources are refused before pretraining."""
from __future__ import annotations

import pytest

from sslab.core.config import ConfigError, load_experiment
from sslab.modalities.ecg import ECGModality
from sslab.run import pretrain, probe

ENC = "encoder={name: vit1d, in_chans: 12, patch_size: 5, dim: 16, depth: 1, heads: 2}"


def _cfg(tmp_path, *extra):
    return load_experiment(None, [f"output_dir={tmp_path}/runs", "name=t", "modality=ecg", ENC, "objective={name: jepa}",
                                  "data.synthetic={n_records: 24, duration: 5.0}", f"data.cache_dir={tmp_path}/c",
                                  "data.workers=1", "train.steps=2", "train.batch_size=8", "train.progress=false",
                                  "data.probe_train_folds=[3]", "data.probe_test_folds=[6]", *extra])


def test_synthetic_pretraining_probed_on_ptbxl(tmp_path, shared_data):
    ptbxl = shared_data / "ecg" / "ptbxl"
    cfg = _cfg(tmp_path, f"data.probe={{source: ptbxl, path: {ptbxl}}}")
    run = pretrain(cfg)
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"ptbxl_superdiagnostic"}
    assert {r["n_train"] for r in rows} == {34} and all(r["kind"] == "multilabel" for r in rows)
    # the legacy keys name the same probe data
    legacy = ECGModality(_cfg(tmp_path, "data.probe_source=ptbxl", f"data.probe_path={ptbxl}"))
    assert [t.name for t in legacy.probe_tasks()] == ["ptbxl_superdiagnostic"]
    with pytest.raises(ConfigError, match="disagrees with data.probe.source"):
        ECGModality(_cfg(tmp_path, "data.probe_source=synthetic", "data.probe={source: ptbxl}")).probe_data_config()


@pytest.mark.parametrize("probe, match", [
    ("{source: ptbxl, path: PTBXL, fs: 500}", r"data.probe.fs=500.0 Hz differs from the pretraining data.fs=100.0 Hz"),
    ("{source: ptbxl, path: PTBXL, leads: [I, II]}", r"data.probe.leads=\['I', 'II'\] differ from the pretraining "
                                                     r"data.leads=\['I', 'II', 'III'"),
    ("{source: wfdb, path: PTBXL}", r"wfdb records carry no labels"),
    ("{source: ptbxl, path: /nonexistent}", r"/nonexistent is not a PTB-XL folder"),
])
def test_incompatible_probe_ecgs_are_refused_before_pretraining(tmp_path, shared_data, probe, match):
    cfg = _cfg(tmp_path, "data.probe=" + probe.replace("PTBXL", str(shared_data / "ecg" / "ptbxl")))
    with pytest.raises(ConfigError, match=match):
        pretrain(cfg)
    assert not (tmp_path / "runs").exists()
