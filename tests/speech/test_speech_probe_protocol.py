"""The paired, repeated grouped-CV speaker probe of ``benchmarks/speech_probe_seeds.py`` (docs/speech.md,
"Base vs continued pretraining"): every chunk is used, chunks of one utterance never straddle train and
test, each repeat tests every chunk exactly once, and the pooled accuracy is what the folds say."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.core.config import load_experiment
from sslab.modalities.speech import SpeechModality

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("speech_probe_seeds", ROOT / "benchmarks" / "speech_probe_seeds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def modality() -> SpeechModality:
    cfg = load_experiment(None, [
        "name=t", "modality=speech", "seed=0", "data.source=synthetic", "data.probe_tasks=[speaker]",
        "data.probe_seconds=1.0",
        "data.synthetic={num_speakers: 4, utts_per_speaker: 5, min_seconds: 1.5, max_seconds: 3.2}",
        "encoder.name=wav2vec2", "objective.name=wav2vec2"])
    return SpeechModality(cfg)


def test_all_chunks_is_the_single_split_merged(bench, modality: SpeechModality) -> None:
    task = modality.probe_tasks()[0]
    chunks = bench.all_chunks(modality)
    assert sorted(chunks.chunks) == sorted(task.train.chunks + task.test.chunks)
    assert len(set(chunks.chunks)) == len(chunks.chunks)  # no chunk twice
    # label of a chunk = speaker of its utterance; 1 s chunks of 1.5-3.2 s utterances: 1-3 per utterance
    corpus = modality.corpus()
    names = task.class_names
    for (u, start, stop), lab in zip(chunks.chunks, chunks.labels):
        assert names[lab] == corpus.label(u)["speaker"]
        assert stop - start == 16000 and start % 16000 == 0
    assert set(chunks.utterances) == set(range(len(corpus)))


def test_cv_splits_grouped_stratified_and_each_chunk_tested_once(bench) -> None:
    rng = np.random.default_rng(0)
    utt_per_spk = [4, 4, 9, 6, 4]
    groups, y = [], []
    u = 0
    for spk, n_utt in enumerate(utt_per_spk):
        for _ in range(n_utt):
            k = int(rng.integers(1, 5))  # chunks per utterance
            groups += [u] * k
            y += [spk] * k
            u += 1
    y, groups = np.array(y), np.array(groups)
    splits = bench.cv_splits(y, groups, folds=4, repeats=3, cv_seed=0)
    assert len(splits) == 3 and all(len(r) == 4 for r in splits)
    for rep in splits:
        tested = np.concatenate([te for _, te in rep])
        assert sorted(tested.tolist()) == list(range(len(y)))  # every chunk tested exactly once
        for tr, te in rep:
            assert not set(groups[tr]) & set(groups[te])
            assert set(y[tr]) == set(y)  # every speaker has training utterances in every fold
            assert set(y[te]) == set(y)  # and test utterances (>= 4 utterances each, 4 folds)
    # repeats differ (the 9- and 6-utterance speakers are re-partitioned), and the split set is reproducible
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(splits[0], splits[1]))
    again = bench.cv_splits(y, groups, folds=4, repeats=3, cv_seed=0)
    assert all(np.array_equal(a[1], b[1]) for ra, rb in zip(splits, again) for a, b in zip(ra, rb))


def test_probe_cv_pooled_accuracy(bench) -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(24), 3)
    y = groups % 4
    splits = bench.cv_splits(y, groups, folds=3, repeats=2, cv_seed=0)
    separable = np.eye(4)[y] * 5 + rng.normal(0, 0.1, (len(y), 4))
    res = bench.probe_cv(separable, y, splits, knn_k=5)["repeats"]
    assert all(r["linear_acc"] == 1.0 and r["knn_acc"] == 1.0 for r in res)
    noise = rng.normal(0, 1, (len(y), 8))
    res = bench.probe_cv(noise, y, splits, knn_k=5)["repeats"]
    for r, rep in zip(res, splits):  # pooled = test-size-weighted fold mean
        sizes = [len(te) for _, te in rep]
        assert r["linear_acc"] == pytest.approx(np.average(r["fold_linear_acc"], weights=sizes))
        assert r["linear_acc"] < 0.6  # 4 classes, no signal: near chance 0.25


def test_embed_layers_shapes_and_layers_differ(bench, modality: SpeechModality) -> None:
    from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config

    torch.manual_seed(0)
    enc = Wav2Vec2Encoder(config=tiny_config())
    chunks = bench.all_chunks(modality)
    sub = type(chunks)(chunks.corpus, chunks.chunks[:6], chunks.labels[:6])
    feats = bench.embed_layers(enc, sub, ["conv", 0, 1, 2])
    assert feats["conv"].shape == (6, 32)  # conv_dim of tiny_config
    assert all(feats[layer].shape == (6, 64) for layer in (0, 1, 2))
    assert not np.allclose(feats[0], feats[2])
    # layer 2 = what the encoder's own default (last block, via the modality's embed) gives for layer=2
    batch, _ = __import__("sslab.modalities.speech", fromlist=["collate_probe"]).collate_probe([sub[i] for i in range(6)])
    with torch.no_grad():
        ref = enc.eval().embed(batch, layer=2).numpy()
    np.testing.assert_allclose(feats[2], ref, rtol=1e-5, atol=1e-6)
