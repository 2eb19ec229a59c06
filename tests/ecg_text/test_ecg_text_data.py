"""ECG-report pairs: blank-report policy, sentence splitting, collator, synthetic reports, PTB-XL and
WFDB-header pairs on ../shared/data, German tokenisation, text encoder (config / local HF path / MLM)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.datasets.ecg_text import (ReportCollator, ReportError, check_reports, header_report,
                                     is_blank, ptbxl_pairs, split_sentences, synthetic_report, wfdb_header_pairs)
from sslab.encoders.report_text import ReportTextEncoder, mlm_pretrain, report_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ecg_root(shared_data) -> Path:
    return shared_data / "ecg"


CORPUS = ["sinusrhythmus normales ekg", "sinusrhythmus linkstyp qt-verlängerung",
          "sinus rhythm. left axis deviation. left anterior fascicular block.",
          "sinusrhythmus periphere niederspannung", "sinus rhythm. normal ecg.",
          "vorhofflimmern mit schneller überleitung. linksschenkelblock."] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return report_tokenizer(CORPUS, vocab_size=200)


def test_blank_reports_error_or_counted_skip():
    for text in ["", "   ", " . ", "...;", "-- !", None, float("nan")]:
        assert is_blank(text)
    assert not is_blank("qt 450")
    names = ["rec1", "rec2", "rec3"]
    with pytest.raises(ReportError, match="rec2: report is empty or punctuation-only"):
        check_reports(names, ["sinus rhythm.", " .. ", "normal ecg"], "error")
    keep, stats = check_reports(names, ["sinus rhythm.", " .. ", "  "], "skip")
    assert keep == [0] and stats.skipped_empty == ["rec2", "rec3"] and stats.kept == 1 and stats.total == 3
    assert "2 skipped" in stats.summary()
    with pytest.raises(ValueError, match="on_empty"):
        check_reports(names, ["a", "b", "c"], "drop")


def test_split_sentences():
    assert split_sentences("sinus rhythm. left axis deviation.  prolonged qt.") == [
        "sinus rhythm.", "left axis deviation.", "prolonged qt."]
    assert split_sentences("sinusrhythmus linkstyp sonst normales ekg") == ["sinusrhythmus linkstyp sonst normales ekg"]
    assert split_sentences("qrs 0.12 s. ok") == ["qrs 0.12 s.", "ok"]  # decimals are not sentence ends
    assert split_sentences(" . ;") == []


def test_tokenizer_keeps_german_words(tokenizer):
    toks = tokenizer.tokenize("Sinusrhythmus Linkstyp QT-Verlängerung. Überleitung")
    assert "[UNK]" not in toks
    joined = "".join(t.replace("##", "") for t in toks)
    assert "verlängerung" in joined and "überleitung" in joined  # umlauts kept, lowercased


def test_collator_sentence_ids_and_errors(tokenizer):
    col = ReportCollator(tokenizer, max_len=12)
    b = col([(torch.zeros(12, 50), "sinus rhythm. normal ecg."), (torch.ones(12, 50), "sinusrhythmus normales ekg")])
    ids, sid, att = b["input_ids"], b["sentence_ids"], b["attention_mask"]
    assert b["ecg"].shape == (2, 12, 50)
    assert ids[0, 0] == tokenizer.cls_token_id and sid[0, 0] == -1
    n0 = int(att[0].sum())
    assert ids[0, n0 - 1] == tokenizer.sep_token_id and sid[0, n0 - 1] == -1
    assert set(sid[0, 1:n0 - 1].tolist()) == {0, 1} and set(sid[1][att[1].bool()].tolist()) == {-1, 0}
    assert (sid[att == 0] == -1).all() and (ids[att == 0] == tokenizer.pad_token_id).all()
    long = col.encode(["sinus rhythm. " * 20])
    assert long["input_ids"].shape[1] == 12 and long["input_ids"][0, -1] == tokenizer.sep_token_id
    with pytest.raises(ReportError, match="empty or punctuation-only"):
        col.encode(["sinus rhythm.", " ... "])


def test_synthetic_report_names_the_parameters():
    rng = np.random.default_rng(0)
    brady = synthetic_report({"rhythm": 0, "morphology": 0, "heart_rate": 50.0, "hrv": 1.0, "noise": 0.0}, rng)
    assert "brady" in brady and "signal quality" in brady
    af = synthetic_report({"rhythm": 2, "morphology": 4, "heart_rate": 120.0, "hrv": 1.0, "noise": 0.07}, rng)
    assert "atrial fibrillation with rapid" in af and "irregularly irregular" in af and "noisy" in af
    tachy = synthetic_report({"rhythm": 2, "morphology": 1, "heart_rate": 120.0, "hrv": 5.0, "noise": 0.03}, rng)
    assert "tachy" in tachy and "sinus arrhythmia" in tachy and "qrs" in tachy


def test_ptbxl_pairs_blank_report_policy(ecg_root):
    root = ecg_root / "ptbxl"
    with pytest.raises(ReportError, match="ecg_id 443"):
        ptbxl_pairs(root, folds=[1, 2, 3, 4, 5, 6, 7], label_set="all", on_empty="error")
    src = ptbxl_pairs(root, folds=[1, 2, 3, 4, 5, 6, 7], label_set="all", on_empty="skip")
    assert src.stats.total == 309 and src.stats.kept == 308 and src.stats.skipped_empty[0].endswith("ecg_id 443")
    assert len(src.records) == len(src.reports) == 308
    i = src.ids.index("1")
    assert src.reports[i] == "sinusrhythmus periphere niederspannung"
    sup = ptbxl_pairs(root, folds=[6, 7], label_set="superdiagnostic", on_empty="skip")
    assert sup.classes == ["CD", "HYP", "MI", "NORM", "STTC"] and sup.labels.shape == (len(sup.reports), 5)


def test_header_reports_ptbdb_and_cinc(ecg_root):
    src = wfdb_header_pairs(ecg_root / "ptbdb")
    assert len(src.reports) == 1
    text = src.reports[0]
    assert "reason for admission: myocardial infarction." in text
    assert "infero-latera" in text and "n/a" not in text and "age" not in text
    cinc = wfdb_header_pairs(ecg_root / "cinc2021")
    assert len(cinc.reports) == 32 and cinc.stats.skipped_empty == []
    assert all("snomed" not in r for r in cinc.reports), "every Dx code of the sample is in dx_mapping"
    assert header_report(["Age: 50", "Sex: Male", "Dx: 426783006"], {"426783006": "sinus rhythm"}) == "sinus rhythm."
    assert header_report(["Age: 50", "Dx: 1"], {}) == "snomed 1."
    # MIT-BIH record 100's header has no report text: a counted skip or a clear error
    with pytest.raises(ReportError, match="100: report is empty"):
        wfdb_header_pairs(ecg_root / "mitdb")
    assert wfdb_header_pairs(ecg_root / "mitdb", on_empty="skip").stats.kept == 0


def test_text_encoder_local_hf_path_and_mlm(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(str(tmp_path / "bert"))
    enc = ReportTextEncoder(pretrained_path=str(tmp_path / "bert"))
    assert enc.dim == 32 and enc.max_len == 32
    tok2 = report_tokenizer([], path=tmp_path / "bert")
    assert tok2("sinusrhythmus")["input_ids"] == tokenizer("sinusrhythmus")["input_ids"]
    with pytest.raises(FileNotFoundError, match="not a local HF model folder"):
        ReportTextEncoder(pretrained_path=str(tmp_path / "missing"))
    # MLM further-pretraining lowers the masked-token loss on the report corpus
    torch.manual_seed(0)
    small = ReportTextEncoder(vocab_size=len(tokenizer), dim=32, depth=1, heads=2, max_len=32, dropout=0.0)
    losses = mlm_pretrain(small, tokenizer, CORPUS, steps=60, batch_size=16, lr=3e-3, progress=False)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_modality_validates_the_blank_report_policy(tmp_path):
    from sslab.core.config import ConfigError, load_experiment
    from sslab.core.modality import build_modality

    base = [f"output_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(ConfigError, match="on_empty_report: expected 'error' or 'skip', got 'drop'"):
        build_modality(load_experiment("experiments/ecg_text/melp_synthetic.yaml", base + ["data.on_empty_report=drop"]))
    with pytest.raises(ConfigError, match=r"data.report_facts: a non-empty subset .* got \['rate', 'heart'\]"):
        build_modality(load_experiment("experiments/ecg_text/melp_synthetic.yaml",
                                       base + ["data.report_facts=[rate,heart]"]))
