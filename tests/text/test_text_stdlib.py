"""The standard-library docstring corpus and its probe (docstring -> top-level module): labels and
sources are where the text came from, duplicates/short/unparsable docstrings are counted, not lost."""
from __future__ import annotations

import ast
import warnings
from collections import Counter
from pathlib import Path

import pytest

from sslab.datasets.text import CorpusError, CorpusStats, load_documents
from sslab.datasets.text_stdlib import (EXCLUDED_TOP_LEVEL, DocstringStats, stdlib_docstrings,
                                        stdlib_probe_documents, stdlib_root)

FAKE = {
    "alpha.py": '"""Alpha module documents the alpha things here."""\n'
                'def f():\n    """Return the alpha value of the thing."""\n'
                'def g():\n    """Return the alpha value of the thing."""\n'  # duplicate of f's
                'def h():\n    """Too short."""\n',
    "pkg/__init__.py": '"""The pkg package holds the beta helpers."""\n',
    "pkg/sub/mod.py": 'class C:\n    """A class inside a nested package module."""\n'
                      '    async def m(self):\n        """An async method with a docstring too."""\n',
    "pkg/tests/test_x.py": '"""A test module that must be excluded entirely."""\n',
    "test/support.py": '"""The CPython test suite is excluded entirely too."""\n',
    "broken.py": 'def f(:\n    """This file does not parse at all."""\n',
}


def _fake_stdlib(tmp_path: Path) -> Path:
    for rel, src in FAKE.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(src)
    return tmp_path


def test_labels_sources_and_counted_leftovers(tmp_path: Path) -> None:
    root = _fake_stdlib(tmp_path)
    stats = DocstringStats()
    with pytest.warns(UserWarning, match=r"1 stdlib file\(s\) could not be parsed.*broken\.py"):
        docs = stdlib_docstrings(root, stats=stats)
    assert [(d.label, d.source) for d in docs] == [
        ("alpha", "stdlib:alpha.py:1"), ("alpha", "stdlib:alpha.py:2"), ("pkg", "stdlib:pkg/__init__.py:1"),
        ("pkg", "stdlib:pkg/sub/mod.py:1"), ("pkg", "stdlib:pkg/sub/mod.py:3")]
    assert docs[1].text == "Return the alpha value of the thing." and docs[0].metadata == "docs.python.org/alpha"
    assert stats.duplicates == 1 and stats.too_short == 1 and stats.documents == 5
    assert len(stats.unparsable) == 1 and "SyntaxError" in stats.unparsable[0]
    assert stats.files == 4  # alpha, broken, pkg/__init__, pkg/sub/mod; tests/ and test/ are excluded


def test_empty_root_and_missing_root_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="standard-library folder not found"):
        stdlib_docstrings(tmp_path / "nope")
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(CorpusError, match="no docstrings"):
        stdlib_docstrings(tmp_path)


def test_real_stdlib_sources_point_at_the_docstring() -> None:
    docs = stdlib_docstrings()
    assert len(docs) > 3000 and len({d.text for d in docs}) == len(docs)  # deduplicated
    assert not {d.label for d in docs} & set(EXCLUDED_TOP_LEVEL)
    root = stdlib_root()
    for d in docs[:: max(1, len(docs) // 40)]:  # ~40 spread over the corpus
        _, rel, line = d.source.split(":")
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        node = next(n for n in ast.walk(tree) if getattr(n, "lineno", 1) == int(line)
                    and isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                    and ast.get_docstring(n) == d.text)
        assert node is not None and rel.split("/")[0].removesuffix(".py") == d.label
    assert stdlib_docstrings() == docs  # deterministic


def test_probe_keeps_modules_above_the_cut_and_reports_the_rest() -> None:
    docs, left_out = stdlib_probe_documents(min_per_class=80)
    counts = Counter(d.label for d in docs)
    assert len(counts) >= 10 and min(counts.values()) >= 80
    assert left_out and max(left_out.values()) < 80 and not set(left_out) & set(counts)
    assert len(docs) + sum(left_out.values()) == len(stdlib_docstrings())
    with pytest.raises(CorpusError, match="lower data.probe_min_per_class"):
        stdlib_probe_documents(min_per_class=10**6)


def test_builtin_source_name_and_modality_probe(tmp_path: Path) -> None:
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real stdlib parses without a skip warning
        stats = CorpusStats()
        assert load_documents(["stdlib_docs"], stats=stats) == stdlib_docstrings()
        assert stats.documents == len(stdlib_docstrings())
    exp = Path(__file__).resolve().parents[2] / "experiments" / "text" / "mlm_stdlib_docs.yaml"
    cfg = load_experiment(exp, [f"output_dir={tmp_path}", f"data.tokenizer_cache={tmp_path / 'tok'}",
                                "data.vocab_size=500", "data.probe_min_per_class=200"])
    task = build_modality(cfg).probe_tasks()[0]
    docs, _ = stdlib_probe_documents(min_per_class=200)
    assert task.name == "stdlib_docstring_module" and len(task.train) + len(task.test) == len(docs)
    assert task.class_names == sorted({d.label for d in docs})
    train_counts = Counter(task.train.labels)
    test_counts = Counter(task.test.labels)
    for c in range(len(task.class_names)):  # stratified 75/25
        assert abs(test_counts[c] / (train_counts[c] + test_counts[c]) - 0.25) < 0.02
    again = build_modality(cfg).probe_tasks()[0]
    assert again.test.ids == task.test.ids  # fixed split
    assert max(len(i) for i in task.train.ids) <= 64  # data.max_len
