"""Each modality's classical floor (``Modality.floor_features``): computed from the probe task's own items,
aligned with them, and cheap enough to sit in every probe report."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslab.core.config import load_experiment
from sslab.core.modality import Modality, build_modality
from sslab.eval.floors import Floor, as_floor


def _check_aligned(floors, task):
    assert floors, "no floor"
    for name, value in floors.items():
        f = as_floor(name, value)
        assert len(f.train) == len(task.train) and len(f.test) == len(task.test), name
        if not hasattr(f.train, "iloc") and np.asarray(f.train).dtype != object:
            assert np.isfinite(np.asarray(f.train, dtype=float)).all(), name


def test_base_default_and_bad_floor_values():
    assert Modality.floor_features(object(), None) == {}  # type: ignore[arg-type]
    assert as_floor("x", (np.zeros((2, 1)), np.zeros((1, 1)))).scorer is None
    with pytest.raises(ValueError, match="floor 'x': expected"):
        as_floor("x", np.zeros(3))
    assert isinstance(as_floor("y", Floor(1, 2)), Floor)


def test_ecg_neurokit_floor_is_cached_and_matches_the_records(tmp_path):
    from sslab.eval.ecg_baseline import extract

    cfg = load_experiment(None, [f"output_dir={tmp_path}", "modality=ecg", "objective={name: jepa}",
                                 "encoder={name: vit1d, in_chans: 12, patch_size: 5, dim: 32, depth: 1, heads: 2}",
                                 "data.synthetic={n_records: 16, duration: 5.0}", f"data.cache_dir={tmp_path}/c",
                                 "data.workers=1", "train.progress=false", "data.probe_labels=[morphology, heart_rate]"])
    modality = build_modality(cfg)
    morph, hr = modality.probe_tasks()
    floors = modality.floor_features(morph)
    _check_aligned(floors, morph)
    Xtr, Xte = floors["neurokit2"]
    assert Xtr.shape == (12, 80) and Xte.shape == (4, 80)  # 8 global + 6 per lead x 12
    sig, _, tr, _ = modality.synthetic()
    raw = extract([np.asarray(sig[i], dtype=np.float32) for i in tr[:2]], cfg.data["fs"] if "fs" in cfg.data else 100.0)
    np.testing.assert_allclose(Xtr[:2][np.isfinite(raw)], raw[np.isfinite(raw)])  # raw mV records, not normalised
    assert len(list((tmp_path / "c" / "ecg_floor").glob("*.npy"))) == 2  # train + test, shared by both tasks
    np.testing.assert_array_equal(modality.floor_features(hr)["neurokit2"][0], Xtr)


def test_text_tfidf_floor_scores_keywords(tmp_path, shared_data):
    from sslab.eval.probe import subsample

    csv = tmp_path / "probe.csv"
    csv.write_text("text,label\n" + "".join(f"sinusrhythmus normales ekg {i},a\nvorhofflimmern {i},b\n" for i in range(10)))
    cfg = load_experiment("experiments/text/mlm_ptbxl.yaml", [f"output_dir={tmp_path}", f"data.shared_data={shared_data}",
                                                              f"data.tokenizer_cache={tmp_path}/tok", f"data.probe={csv}"])
    modality = build_modality(cfg)
    task = modality.probe_tasks()[0]
    floors = modality.floor_features(task)
    _check_aligned(floors, task)
    f = floors["tfidf"]
    assert isinstance(f.train[0], str) and f.train[0] in csv.read_text()
    ytr, yte = np.array(task.train.labels), np.array(task.test.labels)
    res = f.scorer(f.train, ytr, f.test, yte, "multiclass", 0)
    assert res["accuracy"] == 1.0  # the class is one keyword away
    assert len(subsample(ytr, 0.2, "multiclass")) == 3


def test_graph_pooled_node_feature_floor(shared_data):
    cfg = load_experiment(None, ["modality=graph", "objective.name=graph_attr_mask", "encoder={name: gin, dim: 8, num_layers: 1}",
                                 "data={source: MUTAG, features: node_labels+degree, max_degree: 4}",
                                 f"data.tu_root={shared_data / 'graphs'}"])
    modality = build_modality(cfg)
    task = modality.probe_tasks()[0]
    Xtr, Xte = modality.floor_features(task)["pooled_node_features"]
    _check_aligned({"p": (Xtr, Xte)}, task)
    g = task.train[0][0]
    np.testing.assert_allclose(Xtr[0], torch.cat([g.x.float().mean(0), g.x.float().sum(0)]).numpy(), rtol=1e-6)


def test_speech_mfcc_floor_and_utterance_groups():
    cfg = load_experiment(None, ["modality=speech", "data.source=synthetic", "data.probe_tasks=[speaker]",
                                 "data.probe_seconds=1.0", "encoder.name=wav2vec2", "objective.name=wav2vec2",
                                 "data.synthetic={num_speakers: 3, utts_per_speaker: 4, min_seconds: 1.5, max_seconds: 2.5}"])
    modality = build_modality(cfg)
    task = modality.probe_tasks()[0]
    Xtr, Xte = modality.floor_features(task)["mfcc_stats"]
    _check_aligned({"m": (Xtr, Xte)}, task)
    assert Xtr.shape[1] == 40  # mean and std of 20 MFCCs
    assert task.groups == task.train.utterances + task.test.utterances  # CV keeps an utterance's chunks together


def test_vision_raw_pixel_floor():
    cfg = load_experiment(None, ["modality=vision", "objective.name=sit",
                                 "data={source: digits, img_size: 16, channels: 1, probe_max_train: 40, probe_max_test: 20}",
                                 "encoder={name: elastic_vit, img_size: 16, patch_size: 4, in_chans: 1, embed_dim: 24, "
                                 "depth: 1, num_heads: 2}"])
    modality = build_modality(cfg)
    task = modality.probe_tasks()[0]
    Xtr, Xte = modality.floor_features(task)["raw_pixels"]
    assert Xtr.shape == (40, 16 * 16) and Xte.shape == (20, 256)
    np.testing.assert_allclose(Xtr[3], task.train[3][0].flatten().numpy(), rtol=1e-6)
