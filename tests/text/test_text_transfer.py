"""Issue 19, text: pretrain (MLM) on one corpus, probe on another labelled CSV named by data.probe; another
tokenizer setting, a too-long max_len or a CSV without the text column is refused before pretraining."""
from __future__ import annotations

from pathlib import Path

import pytest
from text_helpers import one_thread  # noqa: F401

from sslab.core.config import ConfigError, load_experiment
from sslab.run import pretrain, probe

WORDS = "the heart rate is normal sinus rhythm with a left bundle branch block and no acute changes".split()


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    for i in range(30):
        (folder / f"d{i}.txt").write_text(" ".join(WORDS[(i + k) % len(WORDS)] for k in range(12)) + "\n")
    return folder


def _csv(path: Path, text_col: str = "text") -> Path:
    rows = [f"{'atrial fibrillation irregular' if i % 2 else 'normal sinus rhythm'} note {i},{'af' if i % 2 else 'sr'}"
            for i in range(40)]
    path.write_text(f"{text_col},label\n" + "\n".join(rows) + "\n")
    return path


def _cfg(tmp_path: Path, probe: str):
    corpus = _corpus(tmp_path / "corpus")
    return load_experiment(None, [
        "name=t", "modality=text", f"output_dir={tmp_path}/runs", f"data.sources=[{corpus}]", "data.vocab_size=200",
        "data.max_len=32", f"data.tokenizer_cache={tmp_path}/tok", "encoder={name: text_transformer, dim: 16, depth: 1, heads: 2}",
        "objective={name: mlm}", "train.steps=2", "train.batch_size=8", "train.progress=false", f"data.probe={probe}"])


def test_pretrain_on_a_corpus_probe_on_a_labelled_csv(tmp_path):
    csv = _csv(tmp_path / "notes.csv")
    run = pretrain(_cfg(tmp_path, f"{{source: csv, path: {csv}, test_fraction: 0.5}}"))
    rows = probe(run, progress=False)["rows"]
    assert {r["task"] for r in rows} == {"csv:notes"} and {r["n_test"] for r in rows} == {20}


@pytest.mark.parametrize("probe, match", [
    ("{source: csv, path: CSV, lowercase: false}", r"data.probe.lowercase=False differs from the pretraining "
                                                   r"data.lowercase=True"),
    ("{source: csv, path: CSV, max_len: 4096}", r"data.probe.max_len=4096 exceeds the encoder's max_len=512"),
    ("{source: csv, path: BADCSV}", r"lacks column\(s\) \['text'\]"),
    ("{source: csv, path: /nonexistent.csv}", r"probe CSV /nonexistent.csv not found"),
])
def test_incompatible_probe_texts_are_refused_before_pretraining(tmp_path, probe, match):
    probe = probe.replace("BADCSV", str(_csv(tmp_path / "bad.csv", "body"))).replace("CSV", str(_csv(tmp_path / "ok.csv")))
    with pytest.raises(ConfigError, match=match):
        pretrain(_cfg(tmp_path, probe))
    assert not (tmp_path / "runs").exists()
