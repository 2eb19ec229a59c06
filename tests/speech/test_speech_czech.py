"""Transcribed Czech corpus (speech_cs): Ogg Vorbis reading + resampling, NFC transcripts, level splits."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.core.config import load_experiment
from sslab.datasets.audio import load_audio
from sslab.datasets.audio_transcribed import labelled_subset, level_split, normalize_transcript, read_transcribed
from sslab.modalities.speech import SpeechModality

sf = pytest.importorskip("soundfile")


def _tone(freq: float, seconds: float, sr: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_ogg(path: Path, freq: float, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _tone(freq, seconds), 22050, format="OGG", subtype="VORBIS")


def test_ogg_vorbis_22k_is_decoded_and_resampled_to_16k(tmp_path: Path) -> None:
    assert "VORBIS" in sf.available_subtypes("OGG"), "the installed libsndfile cannot encode/decode Vorbis"
    _write_ogg(tmp_path / "a.ogg", 440.0, 1.0)
    assert sf.info(str(tmp_path / "a.ogg")).samplerate == 22050
    wave = load_audio(tmp_path / "a.ogg", 16000)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.numel() - 16000) <= 2  # 1 s at 16 kHz
    spectrum = torch.fft.rfft(wave).abs()
    peak_hz = float(spectrum.argmax()) * 16000 / wave.numel()
    assert abs(peak_hz - 440.0) < 3.0  # the tone survives Vorbis + resampling at the right pitch


def _manifest(root: Path, rows: list) -> Path:
    lines = ["file\tlanguage\tlevel\tdialog_id\tspeaker\tseconds\ttext\tenglish"]
    for i, (level, speaker, text, seconds) in enumerate(rows):
        rel = f"cs/{level}/c{i}.ogg"
        _write_ogg(root / rel, 200.0 + 40 * i, seconds)
        lines.append(f"{rel}\tcs\t{level}\tc{i}\t{speaker}\t{seconds}\t{text}\tenglish {i}")
    path = root / "transcripts.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ROWS = [("lvl1", "font_small", unicodedata.normalize("NFD", "Řekni, že ne!"), 0.6),
        ("lvl1", "font_big", "Ano — \"proč\" ne?", 0.7),
        ("lvl1", "", "", 0.5),  # no text, no speaker: pretraining only
        ("lvl2", "font_small", "Žluťoučký kůň.", 0.6), ("lvl2", "font_big", "Úžasné", 0.6),
        ("lvl3", "font_small", "Čas jít", 0.6), ("lvl3", "font_big", "Ještě ne", 0.6),
        ("lvl4", "font_small", "Dobře", 0.6), ("lvl4", "font_big", "Hm", 0.6)]


def test_transcripts_are_nfc_with_diacritics_and_empty_text_is_unlabelled(tmp_path: Path) -> None:
    items = read_transcribed(_manifest(tmp_path, ROWS))
    assert len(items) == 9
    assert items[0].text == "Řekni, že ne!" and unicodedata.is_normalized("NFC", items[0].text)
    assert len(items[0].text) == 13  # composed: one code point per letter
    assert items[2].text is None and items[2].speaker is None and items[2].group == "lvl1"
    assert items[0].path == tmp_path / "cs/lvl1/c0.ogg" and items[0].duration == pytest.approx(0.6)
    assert normalize_transcript(items[1].text) == "ano proč ne"
    assert normalize_transcript(r"v C:\\WINDOWS\\CONFIG") == "v c windows config"
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\tlevel\ttext\nx.ogg\tl\thi\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv: missing column\(s\) \['speaker'\]"):
        read_transcribed(bad)


def test_level_split_holds_out_whole_levels(tmp_path: Path) -> None:
    items = read_transcribed(_manifest(tmp_path, ROWS))
    for seed in range(5):
        train, test = level_split(items, test_fraction=0.3, seed=seed)
        assert {it.group for it in train}.isdisjoint({it.group for it in test})
        assert len(train) + len(test) == len(items)
        assert sum(it.duration for it in test if it.text) >= 0.3 * sum(it.duration for it in items if it.text)
        assert {it.text for it in test if it.text}.isdisjoint({it.text for it in train if it.text})
    train, test = level_split(items, test_levels=["lvl2", "lvl4"])
    assert {it.group for it in test} == {"lvl2", "lvl4"}
    with pytest.raises(ValueError, match="unknown level"):
        level_split(items, test_levels=["nope"])
    sub10 = labelled_subset(train, minutes=1.0 / 60, seed=0)
    sub_all = labelled_subset(train, minutes=2.4 / 60, seed=0)
    assert all(it.text for it in sub_all) and sub_all[: len(sub10)] == sub10  # transcribed only, nested
    with pytest.raises(ValueError, match="only"):
        labelled_subset(train, minutes=10.0)


def test_speech_cs_source_pretrains_on_training_levels_only(tmp_path: Path) -> None:
    _manifest(tmp_path / "speech_cs", ROWS)
    cfg = load_experiment("experiments/speech/wav2vec2_czech.yaml",
                          [f"data.shared_data={tmp_path}", "data.ctc.test_levels=[lvl2, lvl4]", "data.validate=full"])
    modality = SpeechModality(cfg)
    train, test = modality.split_items()
    corpus = modality.corpus()
    assert [it.path for it in corpus.items] == [it.path for it in train]
    assert not {it.group for it in corpus.items} & {it.group for it in test}
    ds, collate = modality.pretrain_data()
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["input_values"].shape[0] == len(train)
    assert {it.group for it in test} == {"lvl2", "lvl4"}
    assert sum(it.text is None for it in corpus.items) == 1  # the untranscribed clip is pretraining data
    (task,) = modality.probe_tasks()
    assert task.name == "speaker_id" and task.class_names == ["font_big", "font_small"]
    test_paths = {it.path for it in test}
    assert {task.test.corpus.items[u].path for u in task.test.utterances} <= test_paths
    assert not {task.train.corpus.items[u].path for u in task.train.utterances} & test_paths

