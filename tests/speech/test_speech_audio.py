"""Audio data pipeline: decoding, resampling, mono, normalisation, crops, bad files, batching, sampling."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sslab.datasets.audio import (AudioCollator, AudioDataset, AudioFileError, AudioItem, load_audio,
                                  read_manifest, scan_folder)
from sslab.core.data import ResumableBatchSampler
from sslab.datasets.audio_sampling import (TemperatureResampledDataset, language_probabilities, padding_fraction,
                                           temperature_weights)
from sslab.datasets.audio_synthetic import SyntheticSpeechDataset



def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), data, sr, subtype=subtype)
    return path


# --------------------------------------------------------------------------- decoding


def test_resample_to_16k_keeps_pitch_and_length(tmp_path):
    p = _write(tmp_path / "a.wav", _sine(440.0, 22050, 1.0), 22050)
    wave = load_audio(p)
    assert abs(wave.numel() - 16000) <= 1
    spec = np.abs(np.fft.rfft(wave.numpy()))
    peak_hz = np.argmax(spec) * 16000 / wave.numel()
    assert abs(peak_hz - 440.0) < 2.0


def test_stereo_is_mixed_down_to_mono(tmp_path):
    left, right = _sine(300, 16000, 0.5, 0.4), _sine(500, 16000, 0.5, 0.2)
    p = _write(tmp_path / "st.flac", np.stack([left, right], 1), 16000)
    wave = load_audio(p)
    assert wave.dim() == 1
    np.testing.assert_allclose(wave.numpy(), (left + right) / 2, atol=1e-4)


def test_ogg_decodes(tmp_path):
    p = tmp_path / "a.ogg"
    sf.write(str(p), _sine(200, 16000, 0.5), 16000, format="OGG", subtype="VORBIS")
    assert abs(load_audio(p).numel() - 8000) <= 1


def test_items_are_normalised_and_cropped_reproducibly(tmp_path):
    _write(tmp_path / "a.wav", 0.1 + _sine(300, 16000, 3.0, 0.3), 16000, "FLOAT")
    ds = AudioDataset.from_folder(tmp_path, max_seconds=1.0)
    torch.manual_seed(3)
    x1 = ds[0]["input_values"]
    torch.manual_seed(3)
    x2 = ds[0]["input_values"]
    assert x1.numel() == 16000 and torch.equal(x1, x2)
    assert abs(float(x1.mean())) < 1e-4 and abs(float(x1.std(unbiased=False)) - 1) < 1e-3
    fixed = AudioDataset.from_folder(tmp_path, max_seconds=1.0, random_crop=False, normalize=False)
    np.testing.assert_allclose(fixed[0]["input_values"].numpy(), (0.1 + _sine(300, 16000, 3.0, 0.3))[:16000], atol=1e-6)


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_folder(tmp_path):
    _write(tmp_path / "good1.wav", _sine(200, 16000, 1.0), 16000)
    _write(tmp_path / "good2.flac", _sine(300, 16000, 1.0), 16000)
    _write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    _write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage-not-a-wave-file" * 10)
    nan = _sine(200, 16000, 1.0)
    nan[100] = np.nan
    _write(tmp_path / "nan.wav", nan, 16000, "FLOAT")
    _write(tmp_path / "short.wav", _sine(200, 16000, 0.05), 16000)
    return tmp_path


@pytest.mark.parametrize("name,kind,words", [
    ("empty.wav", "empty", "0 samples"), ("silent.wav", "silent", "silent"),
    ("corrupt.wav", "corrupt", "cannot decode"), ("nan.wav", "nonfinite", "non-finite"),
    ("short.wav", "too_short", "too short"), ("missing.wav", "missing", "not found"),
])
def test_bad_file_error_names_file_and_problem(bad_folder, name, kind, words):
    with pytest.raises(AudioFileError) as err:
        AudioDataset([AudioItem(bad_folder / name)], min_seconds=0.5)
    assert err.value.kind == kind
    assert name in str(err.value) and words in str(err.value)


def test_skip_policy_counts_every_bad_file(bad_folder):
    with pytest.warns(UserWarning, match="skipped 5 of 7 files"):
        ds = AudioDataset.from_folder(bad_folder, on_bad="skip", min_seconds=0.5)
    assert len(ds) == 2
    assert sorted(p.name for p in (it.path for it in ds.items)) == ["good1.wav", "good2.flac"]
    assert dict(ds.skip_counts) == {"empty": 1, "silent": 1, "corrupt": 1, "nonfinite": 1, "too_short": 1}
    assert sorted(p.name for p, _ in ds.skipped) == ["corrupt.wav", "empty.wav", "nan.wav", "short.wav", "silent.wav"]


def test_default_policy_is_error_on_first_bad_file(bad_folder):
    with pytest.raises(AudioFileError):
        AudioDataset.from_folder(bad_folder)


def test_all_bad_is_an_error(tmp_path):
    _write(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(ValueError, match="no usable files"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        AudioDataset.from_folder(tmp_path, on_bad="skip")


def test_manifest_errors(tmp_path):
    (tmp_path / "m.tsv").write_text("wav\tspeaker\na.wav\ts1\n")
    with pytest.raises(ValueError, match=r"m.tsv: manifest needs a column"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "d.csv").write_text("path,duration\na.wav,abc\n")
    with pytest.raises(ValueError, match=r"row 2: duration 'abc'"):
        read_manifest(tmp_path / "d.csv")
    with pytest.raises(ValueError, match="no audio files"):
        scan_folder(tmp_path)


# --------------------------------------------------------------------------- shared real clips


def test_shared_manifest_loads_all_clips_at_16k(shared_data):
    ds = AudioDataset.from_manifest(shared_data / "speech" / "transcripts.tsv", validate="full")
    assert len(ds) == 43 and not ds.skipped
    assert sorted(set(it.language for it in ds.items)) == ["en", "ru", "zh"]
    lj = [i for i, it in enumerate(ds.items) if "LJ001-0001" in it.path.name][0]
    info = sf.info(str(ds.items[lj].path))
    assert info.samplerate == 22050
    assert abs(ds.durations[lj] - info.duration) < 1e-3  # resampled to 16 kHz, same duration
    assert abs(ds.waveform(lj).numel() - info.duration * 16000) <= 1


# --------------------------------------------------------------------------- batching


def test_collator_pads_with_attention_mask_and_min_crops():
    samples = [{"input_values": torch.randn(n), "index": i} for i, n in enumerate([100, 250, 40])]
    b = AudioCollator(pad_to_multiple_of=64)(samples)
    assert b["input_values"].shape == (3, 256)
    assert b["attention_mask"].sum(-1).tolist() == [100, 250, 40]
    assert torch.all(b["input_values"][2, 40:] == 0)
    torch.manual_seed(0)
    m = AudioCollator(mode="min")(samples)
    assert m["input_values"].shape == (3, 40) and bool(m["attention_mask"].all())
    with pytest.raises(ValueError, match="audio item 0"):
        AudioCollator()([{"input_values": torch.zeros(0), "index": 0}])


@pytest.fixture
def mixed_rates(tmp_path):
    """Clips at 22.05 / 8 / 16 / 44.1 kHz (stereo), one longer than the 1.5 s crop."""
    _write(tmp_path / "a.wav", _sine(220, 22050, 0.7), 22050)
    _write(tmp_path / "b.flac", _sine(330, 8000, 2.5), 8000)
    _write(tmp_path / "c.wav", _sine(440, 16000, 1.2), 16000)
    _write(tmp_path / "d.wav", np.stack([_sine(250, 44100, 0.9)] * 2, 1), 44100)
    return tmp_path


def test_lengths_are_samples_after_resampling_and_cropping(mixed_rates):
    full = AudioDataset.from_folder(mixed_rates, max_seconds=1.5)
    actual = [full[i]["input_values"].numel() for i in range(len(full))]
    assert full.lengths == actual == [11200, 24000, 19200, 14400]
    header = AudioDataset.from_folder(mixed_rates, max_seconds=1.5, validate="header")
    assert all(abs(a - b) <= 1 for a, b in zip(header.lengths, actual)), (header.lengths, actual)
    langs = ["x", "y", "x", "y"]
    res = TemperatureResampledDataset(full, langs, alpha=0.5, num_samples=9, seed=0)
    assert res.lengths == [full.lengths[int(j)] for j in res.draw]
    assert getattr(TemperatureResampledDataset(list(range(4)), langs), "lengths", None) is None


def test_header_lengths_decode_nothing(mixed_rates, monkeypatch):
    import sslab.datasets.audio as audio

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded audio")

    monkeypatch.setattr(audio, "load_audio", no_decoding)
    assert AudioDataset.from_folder(mixed_rates, max_seconds=1.5, validate="header").lengths[1] == 24000


def test_core_bucketing_on_shared_clip_lengths_cuts_padding(shared_data):
    """What ``train.length_bucketing`` does with the corpus' ``lengths`` (headers only, 15 s crop)."""
    ds = AudioDataset.from_manifest(shared_data / "speech" / "transcripts.tsv", validate="header", max_seconds=15.0)
    lengths = ds.lengths

    def padding(pool: int) -> float:
        s = ResumableBatchSampler(len(lengths), 8, seed=0, lengths=lengths if pool else None, bucket_pool=pool)
        fr = []
        for epoch in range(10):
            s.set_position(epoch, 0)
            fr.append(padding_fraction(lengths, [[i for i, _, _ in b] for b in s]))
        return float(np.mean(fr))

    assert padding(50) < 0.2 < 0.4 < padding(0)  # measured 0.15 vs 0.48 (benchmarks/speech_bucketing.py)


def test_temperature_sampling_values():
    langs = ["en"] * 9 + ["zh"]
    q = language_probabilities(langs, alpha=0.7)
    z = 0.9 ** 0.7 + 0.1 ** 0.7
    assert q["en"] == pytest.approx(0.9 ** 0.7 / z) and q["zh"] == pytest.approx(0.1 ** 0.7 / z)
    assert language_probabilities(langs, alpha=1.0)["zh"] == pytest.approx(0.1)
    assert language_probabilities(langs, alpha=0.0)["zh"] == pytest.approx(0.5)
    # durations weight languages by hours, not by utterance count
    assert language_probabilities(["en", "zh"], sizes=[30.0, 10.0], alpha=1.0)["en"] == pytest.approx(0.75)
    w = temperature_weights(langs, alpha=0.7)
    assert w.sum() == pytest.approx(1.0) and w[-1] == pytest.approx(q["zh"])
    ds = TemperatureResampledDataset(list(range(10)), langs, alpha=0.7, num_samples=20000, seed=0)
    frac_zh = float(np.mean([ds[i] == 9 for i in range(len(ds))]))
    assert abs(frac_zh - q["zh"]) < 0.01
    with pytest.raises(ValueError, match="alpha"):
        language_probabilities(langs, alpha=1.5)


def test_synthetic_speech_is_deterministic_and_labelled():
    ds = SyntheticSpeechDataset(num_speakers=3, utts_per_speaker=2, min_seconds=0.5, max_seconds=0.8, seed=1)
    a, b = ds[4], SyntheticSpeechDataset(num_speakers=3, utts_per_speaker=2, min_seconds=0.5, max_seconds=0.8, seed=1)[4]
    assert torch.equal(a["input_values"], b["input_values"])
    assert a["speaker"] == "spk2" and a["language"] == "syn_c"
    assert 0.5 * 16000 <= a["input_values"].numel() <= 0.8 * 16000
    assert ds.lengths[4] == a["input_values"].numel()
    assert math.isclose(float(a["input_values"].std(unbiased=False)), 1.0, rel_tol=1e-3)
