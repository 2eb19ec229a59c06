"""Python standard-library docstrings: a real English technical corpus with a labelled task that
needs no download (issue 9: "Python's bundled documentation").

Every docstring (module, class, function) of the stdlib ``.py`` files of the running interpreter is
one document; its label is the **top-level module** it comes from (``email``, ``asyncio``,
``argparse`` ...). The probe asks: which part of the standard library does this docstring
document? The answer is spread over a large vocabulary (20 classes, 5,675 alphabetic word types on
CPython 3.11.7). There a learned low-dimensional representation can beat a random projection of the
bag of tokens. The PTB-XL report probe hinges on a handful of keywords and cannot show that
(docs/text.md).

Extraction is deterministic for a given Python version: files in sorted order, nodes in ``ast.walk``
order, docstrings cleaned by ``ast.get_docstring`` (dedented). Exact duplicates (the same docstring
on several overloads) are kept once and *counted*; files that do not parse are counted and named in a
warning; nothing is dropped silently.
"""
from __future__ import annotations

import ast
import sysconfig
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sslab.datasets.text import CorpusError, TextDocument

#: stdlib trees that are not library documentation: test suites, the IDLE / turtle demo apps,
#: the Python-2 fixtures of lib2to3, Tk GUI bindings, and third-party packages in site-packages.
EXCLUDED_TOP_LEVEL = ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "tkinter",
                      "turtledemo", "ensurepip")
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class DocstringStats:
    """What the extraction kept and what it left out (and why)."""

    files: int = 0
    documents: int = 0
    too_short: int = 0
    duplicates: int = 0
    unparsable: List[str] = field(default_factory=list)


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _top_level(rel: Tuple[str, ...]) -> str:
    """``email/mime/text.py`` -> ``email``; ``argparse.py`` -> ``argparse``."""
    return rel[0] if len(rel) > 1 else Path(rel[0]).stem


def stdlib_docstrings(root: Optional[Path] = None, min_words: int = 5,
                      exclude: Sequence[str] = EXCLUDED_TOP_LEVEL,
                      stats: Optional[DocstringStats] = None) -> List[TextDocument]:
    """One :class:`TextDocument` per unique docstring of at least ``min_words`` words.

    ``label`` = top-level module, ``metadata`` = ``docs.python.org/<module>``, ``source`` =
    ``stdlib:<relative path>:<line>``. Parsing the stdlib takes a few seconds; the result is cached
    per (root, min_words, exclude) and every call returns fresh copies.
    """
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise CorpusError(f"{root}: standard-library folder not found")
    docs, found = _extract(str(root.resolve()), min_words, tuple(exclude))
    if stats is not None:
        stats.files, stats.documents = found.files, found.documents
        stats.too_short, stats.duplicates = found.too_short, found.duplicates
        stats.unparsable = list(found.unparsable)
    if found.unparsable:
        warnings.warn(f"{len(found.unparsable)} stdlib file(s) could not be parsed and were skipped: "
                      f"{found.unparsable[:5]}")
    if not docs:
        raise CorpusError(f"{root}: no docstrings of >= {min_words} words found")
    return [replace(d) for d in docs]


@lru_cache(maxsize=4)
def _extract(root_str: str, min_words: int, exclude: Tuple[str, ...]) -> Tuple[Tuple[TextDocument, ...],
                                                                               DocstringStats]:
    root = Path(root_str)
    stats = DocstringStats()
    excluded = set(exclude)
    seen: set = set()
    docs: List[TextDocument] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if excluded.intersection(rel[:-1]) or _top_level(rel) in excluded:
            continue
        stats.files += 1
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError) as err:
            stats.unparsable.append(f"{path}: {type(err).__name__}")
            continue
        top = _top_level(rel)
        for node in ast.walk(tree):
            if not isinstance(node, _DOC_NODES):
                continue
            text = ast.get_docstring(node)
            if not text:
                continue
            if len(text.split()) < min_words:
                stats.too_short += 1
                continue
            if text in seen:
                stats.duplicates += 1
                continue
            seen.add(text)
            line = getattr(node, "lineno", 1)
            docs.append(TextDocument(text=text, metadata=f"docs.python.org/{top}", label=top,
                                     source=f"stdlib:{'/'.join(rel)}:{line}"))
    stats.documents = len(docs)
    return tuple(docs), stats


def stdlib_probe_documents(min_per_class: int = 80, root: Optional[Path] = None,
                           min_words: int = 5) -> Tuple[List[TextDocument], Dict[str, int]]:
    """The labelled probe set: docstrings of the top-level modules with at least ``min_per_class``
    docstrings (20 classes, 3,306 docstrings on CPython 3.11). Returns the documents and the count
    of every class left out (so the cut is visible)."""
    docs = stdlib_docstrings(root=root, min_words=min_words)
    counts = Counter(d.label for d in docs)
    keep = {c for c, n in counts.items() if n >= min_per_class}
    if len(keep) < 2:
        raise CorpusError(f"stdlib probe: only {len(keep)} module(s) have >= {min_per_class} docstrings; "
                          "lower data.probe_min_per_class")
    left_out = {c: n for c, n in counts.items() if c not in keep}  # type: ignore[misc]
    return [d for d in docs if d.label in keep], left_out
