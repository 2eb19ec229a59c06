"""Speech plugin end to end through the core Trainer: continued pretraining from a saved HF checkpoint,
HF export loadable by Wav2Vec2ForCTC, exact resume, probe tasks, config errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.core.config import ConfigError, load_experiment
from sslab.core.data import seeded_rng
from sslab.core.export import load_encoder
from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.modalities.speech import SpeechModality, export_hf
from sslab.objectives.wav2vec2 import Wav2Vec2Objective
from sslab.run import pretrain

TINY = tiny_config(conv_dim=[16] * 7, hidden_size=32, intermediate_size=64, codevector_dim=32,
                   proj_codevector_dim=16, num_codevectors_per_group=16)


def _cfg(tmp: Path, name: str, *extra: str, shared: Path | None = None):
    src = [f"data.source=shared", f"data.shared_data={shared}"] if shared else [
        "data.source=synthetic", "data.synthetic={num_speakers: 2, utts_per_speaker: 3, min_seconds: 0.6, max_seconds: 0.9}"]
    return load_experiment(None, [
        f"name={name}", "modality=speech", f"output_dir={tmp}", *src, "data.max_seconds=1.0",
        "encoder.name=wav2vec2", "objective.name=wav2vec2", "train.batch_size=3", "train.progress=false",
        "train.log_every=1", "optim.lr=2.0e-3", "optim.warmup_steps=0", *extra])


def _eval_loss(encoder: Wav2Vec2Encoder, batch: dict) -> float:
    obj = Wav2Vec2Objective(encoder).eval()
    with torch.no_grad():
        return float(obj(batch)["loss"])


def test_continued_pretraining_from_saved_checkpoint(tmp_path, shared_data):
    torch.manual_seed(0)
    base = Wav2Vec2Encoder(config=TINY)
    base.save_pretrained(tmp_path / "base")  # what a user's local XLS-R folder would be
    cfg = _cfg(tmp_path, "cont", f"encoder.pretrained={tmp_path / 'base'}", "train.steps=8", shared=shared_data)
    modality = SpeechModality(cfg)
    ds, collate = modality.pretrain_data()
    assert len(ds) == 43
    with seeded_rng(7):  # a fixed batch of real clips with fixed masks and distractors
        batch = collate([ds[i] for i in range(0, 43, 4)])
    before = _eval_loss(Wav2Vec2Encoder(pretrained=str(tmp_path / "base")), batch)

    run = pretrain(cfg)
    hf = run / "hf"
    after_enc = Wav2Vec2Encoder(pretrained=str(hf))
    after = _eval_loss(after_enc, batch)
    assert after < before - 0.05, (before, after)
    changed = [k for k, v in base.model.state_dict().items() if not torch.equal(v, after_enc.model.state_dict()[k])]
    assert len(changed) > 0.8 * len(base.model.state_dict())
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["gumbel_temperature"] == pytest.approx(0.5)
    assert {"contrastive_loss", "diversity_loss", "code_perplexity", "prob_perplexity"} <= set(metrics[-1])

    from transformers import Wav2Vec2ForCTC

    ctc = Wav2Vec2ForCTC.from_pretrained(str(hf))
    for k, v in after_enc.model.wav2vec2.state_dict().items():
        assert torch.equal(v, ctc.wav2vec2.state_dict()[k]), k
    # the sslab export is self-contained (config inline) and equals the HF folder's weights
    exported = load_encoder(run)
    assert "pretrained" not in exported.sslab_spec
    for k, v in exported.model.state_dict().items():
        assert torch.equal(v, after_enc.model.state_dict()[k]), k
    rebuilt = export_hf(run, tmp_path / "hf2")
    assert (rebuilt / "config.json").is_file()


@pytest.mark.parametrize("bucketing,stop_after", [(0, 2), (2, 3)])
def test_resume_is_exact(tmp_path, bucketing, stop_after):
    """Interrupt after ``stop_after`` of 4 steps (2 batches per epoch: 3 = mid-epoch) and relaunch."""
    enc = f"encoder.config={json.dumps(TINY)}"
    bk = f"train.length_bucketing={bucketing}"
    full = pretrain(_cfg(tmp_path, "full", enc, bk, "train.steps=4"))
    pretrain(_cfg(tmp_path, "part", enc, bk, "train.steps=4", f"train.stop_after={stop_after}"))
    part = pretrain(_cfg(tmp_path, "part", enc, bk, "train.steps=4"))
    a, b = load_encoder(full), load_encoder(part)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    la = [json.loads(l)["loss"] for l in (full / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(l)["loss"] for l in (part / "metrics.jsonl").read_text().splitlines()]
    assert la == lb and len(la) == 4


def test_length_bucketing_in_pretraining_cuts_padding(tmp_path, monkeypatch):
    """The same pretraining run with and without ``train.length_bucketing``: padding measured on the
    batches the trainer actually fed the objective (attention masks), every item seen once per epoch."""
    seen: list = []
    plain_data = SpeechModality.pretrain_data

    def recording(self):
        ds, collate = plain_data(self)
        lengths = ds.lengths

        def collate_and_record(samples):
            batch = collate(samples)
            real = batch["attention_mask"].sum(-1)
            assert real.tolist() == [lengths[int(i)] for i in batch["index"]]  # `lengths` = what is loaded
            seen.append((batch["index"].tolist(), int(real.sum()), batch["attention_mask"].numel()))
            return batch

        return ds, collate_and_record

    monkeypatch.setattr(SpeechModality, "pretrain_data", recording)
    synth = "data.synthetic={num_speakers: 2, utts_per_speaker: 4, min_seconds: 0.6, max_seconds: 2.0}"
    padding, batches = {}, {}
    for pool in (0, 4):  # 8 clips, batches of 2, one epoch; pool 4 x 2 = the whole epoch is sorted
        seen.clear()
        run = pretrain(_cfg(tmp_path, f"b{pool}", f"encoder.config={json.dumps(TINY)}", synth,
                            "data.max_seconds=2.0", "train.batch_size=2", "train.steps=4",
                            f"train.length_bucketing={pool}"))
        assert sorted(i for idx, _, _ in seen for i in idx) == list(range(8))
        padding[pool] = 1 - sum(r for _, r, _ in seen) / sum(t for _, _, t in seen)
        batches[pool] = {frozenset(idx) for idx, _, _ in seen}
    lengths = SpeechModality(load_experiment(run / "config.yaml")).corpus().lengths
    by_length = sorted(range(8), key=lambda i: lengths[i])
    assert batches[4] == {frozenset(by_length[k:k + 2]) for k in range(0, 8, 2)}  # neighbours in length share a batch
    assert batches[0] != batches[4]
    assert padding[4] < 0.7 * padding[0], padding  # measured 0.073 vs 0.123


def test_probe_tasks_split_by_utterance(tmp_path, shared_data):
    m = SpeechModality(_cfg(tmp_path, "p", f"encoder.config={json.dumps(TINY)}", shared=shared_data))
    tasks = {t.name: t for t in m.probe_tasks()}
    assert list(tasks) == ["speaker_id"]  # zh and ru have one clip each: language ID is dropped
    t = tasks["speaker_id"]
    assert len(t.class_names) == 8
    assert not set(t.train.utterances) & set(t.test.utterances)
    assert len(set(t.train.utterances)) + len(set(t.test.utterances)) == 39  # 8 speakers with >= 2 clips
    assert len(t.train) > len(t.class_names) and len(t.test) >= len(t.class_names)
    x, y = t.train[0]
    assert x["input_values"].numel() == 32000 and abs(float(x["input_values"].std()) - 1) < 1e-2
    synth = SpeechModality(_cfg(tmp_path, "s", f"encoder.config={json.dumps(TINY)}"))
    assert [t.name for t in synth.probe_tasks()] == ["speaker_id", "language_id"]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.sourc"):
        SpeechModality(_cfg(tmp_path, "e", "data.sourc=shared"))
    with pytest.raises(ConfigError, match="data.path is required"):
        SpeechModality(_cfg(tmp_path, "e", "data.source=folder"))
    with pytest.raises(ConfigError, match="unknown task 'emotion'"):
        SpeechModality(_cfg(tmp_path, "e", "data.probe_tasks=[emotion]"))


def test_language_temperature_resampling_and_min_collate(tmp_path, shared_data):
    m = SpeechModality(_cfg(tmp_path, "t", f"encoder.config={json.dumps(TINY)}", "data.language_alpha=0.0",
                            "data.epoch_size=3000", "data.collate=min", shared=shared_data))
    ds, collate = m.pretrain_data()
    assert len(ds) == 3000
    langs = [m.corpus().items[int(i)].language for i in ds.draw]
    share = {l: langs.count(l) / len(langs) for l in ("en", "ru", "zh")}
    assert all(abs(v - 1 / 3) < 0.04 for v in share.values()), share  # alpha=0: uniform over languages
    with seeded_rng(0):
        batch = collate([ds[i] for i in range(3)])
    assert bool(batch["attention_mask"].all()) and batch["mask_time_indices"].any(-1).all()
    assert (batch["negative_indices"][batch["mask_time_indices"]] >= 0).all()
