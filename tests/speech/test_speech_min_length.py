"""A clip too short for the model is named before training even with data.min_seconds=0 (issue 17)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sslab.core.config import load_experiment
from sslab.datasets.audio import AudioFileError
from sslab.modalities.speech import SpeechModality, min_samples_for
from sslab.objectives.wav2vec2 import conv_output_lengths

import torch


def test_clip_shorter_than_the_model_minimum_is_named(tmp_path):
    rng = np.random.default_rng(0)
    for name, seconds in (("a.wav", 1.0), ("b.wav", 1.0), ("tiny.wav", 0.012)):
        sf.write(tmp_path / name, 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
    cfg = load_experiment(None, ["modality=speech", "data.source=folder", f"data.path={tmp_path}",
                                 "data.min_seconds=0", "encoder.name=wav2vec2", "objective.name=wav2vec2",
                                 "objective.mask_length=10", "train.progress=false"])
    with pytest.raises(AudioFileError, match=r"tiny\.wav: too short for the model: 0\.012 s < 0\.225 s .*"
                                             r"objective\.mask_length=10.*data\.min_seconds >= 0\.225"):
        SpeechModality(cfg).pretrain_data()
    kernel, stride = [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]
    need = min_samples_for(11, kernel, stride)
    assert int(conv_output_lengths(torch.tensor([need]), kernel, stride)) == 11
    assert int(conv_output_lengths(torch.tensor([need - 1]), kernel, stride)) == 10
