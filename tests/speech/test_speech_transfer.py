"""Issue 19, speech: wav2vec2 pretrained on generated audio, probed on the shared real clips (data.probe);
another sample rate, an unlabelled folder or a missing manifest is refused before pretraining."""
from __future__ import annotations

import pytest
import torch

from sslab.core.config import ConfigError, load_experiment
from sslab.run import pretrain, probe

TINY = ("encoder.config={conv_dim: [16, 16, 16, 16, 16, 16, 16], hidden_size: 32, intermediate_size: 64, "
        "num_hidden_layers: 1, num_attention_heads: 2, codevector_dim: 32, proj_codevector_dim: 16, "
        "num_codevectors_per_group: 16, num_conv_pos_embeddings: 16, num_conv_pos_embedding_groups: 2}")


def _cfg(tmp_path, probe):
    return load_experiment(None, [
        "name=s", "modality=speech", f"output_dir={tmp_path}/runs", "data.source=synthetic",
        "data.synthetic={num_speakers: 2, utts_per_speaker: 3, min_seconds: 0.6, max_seconds: 0.9}",
        "data.max_seconds=1.0", "encoder.name=wav2vec2", TINY, "objective.name=wav2vec2", "train.steps=1",
        "train.batch_size=3", "train.progress=false", "data.probe_tasks=[speaker]", "data.probe_seconds=1.0",
        f"data.probe={probe}"])


def test_pretrain_on_generated_audio_probe_speakers_of_real_clips(tmp_path, shared_data):
    torch.set_num_threads(1)
    run = pretrain(_cfg(tmp_path, f"{{source: shared, shared_data: {shared_data}, validate: header}}"))
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"speaker_id"}
    assert min(r["n_train"] for r in rows) > 12  # the real clips, not the 6 generated utterances


@pytest.mark.parametrize("probe, match", [
    ("{source: shared, sample_rate: 8000}", r"data.probe.sample_rate=8000 differs from the pretraining "
                                            r"data.sample_rate=16000"),
    ("{source: folder, path: FOLDER}", r"a folder scan has no speaker/language labels"),
    ("{source: manifest, path: /nonexistent.tsv}", r"manifest /nonexistent.tsv not found"),
])
def test_incompatible_probe_audio_is_refused_before_pretraining(tmp_path, probe, match):
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path, probe.replace("FOLDER", str(tmp_path))))
    assert not (tmp_path / "runs").exists()
