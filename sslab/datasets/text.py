"""Text corpora: plain text / JSONL files with optional metadata and quality scores, plus two
built-in corpora that need no download (PTB-XL free-text ECG reports and Python's bundled
documentation, ``pydoc_data.topics``).

Every reader yields :class:`TextDocument` records. Bad input (unparsable JSON, a missing text
field, a missing CSV column) raises :class:`CorpusError` naming the file and line; empty documents
are skipped and *counted* (``CorpusStats.skipped_empty``), never dropped silently.
"""
from __future__ import annotations

import ast
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

PathLike = Union[str, Path]

#: PTB-XL diagnostic superclasses (Wagner et al. 2020, Sci. Data 7:154), in a fixed order.
PTBXL_SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")


class CorpusError(ValueError):
    """A corpus file that cannot be read as documented; the message names file and line."""


@dataclass
class TextDocument:
    """One document. ``metadata`` is a short string (URL, source, device) used by MeCo;
    ``score`` a quality score used by conditional training and curricula; ``label`` a class name
    used only by probes."""

    text: str
    metadata: Optional[str] = None
    score: Optional[float] = None
    label: Optional[str] = None
    source: str = ""


@dataclass
class CorpusStats:
    """Counts kept by the readers so that skipped items are visible."""

    documents: int = 0
    skipped_empty: int = 0
    files: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- plain files


def iter_jsonl(path: PathLike, text_field: str = "text", metadata_field: Optional[str] = "metadata",
               score_field: Optional[str] = "score", stats: Optional[CorpusStats] = None) -> Iterator[TextDocument]:
    """Stream documents from a JSON-lines file (one object per line; constant memory).

    ``metadata_field`` may name a string field (``url``, ``source``) or be ``None``;
    a missing metadata/score field on a line is allowed (``None``), a missing text field is not.
    """
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    stats.files.append(str(path))
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(obj, dict):
                raise CorpusError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            if text_field not in obj:
                raise CorpusError(f"{path}:{lineno}: missing text field {text_field!r} (keys: {sorted(obj)})")
            text = obj[text_field]
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{lineno}: field {text_field!r} must be a string, got {type(text).__name__}")
            if not text.strip():
                stats.skipped_empty += 1
                continue
            meta = obj.get(metadata_field) if metadata_field else None
            if meta is not None and not isinstance(meta, str):
                meta = json.dumps(meta, ensure_ascii=False)
            score = obj.get(score_field) if score_field else None
            if score is not None:
                try:
                    score = float(score)
                except (TypeError, ValueError) as err:
                    raise CorpusError(f"{path}:{lineno}: score field {score_field!r} is not a number: {score!r}") from err
                if score != score:
                    raise CorpusError(f"{path}:{lineno}: score field {score_field!r} is NaN")
            stats.documents += 1
            yield TextDocument(text=text, metadata=meta, score=score, source=f"{path.name}:{lineno}")


def iter_text_file(path: PathLike, split: str = "blank_line", stats: Optional[CorpusStats] = None) -> Iterator[TextDocument]:
    """Stream documents from a UTF-8 text file: one per paragraph (``blank_line``) or per ``line``."""
    if split not in ("blank_line", "line"):
        raise ValueError(f"split must be 'blank_line' or 'line', got {split!r}")
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    stats.files.append(str(path))
    buf: List[str] = []
    try:
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if split == "line":
                    if line.strip():
                        stats.documents += 1
                        yield TextDocument(text=line.strip(), source=path.name)
                    else:
                        stats.skipped_empty += 1
                    continue
                if line.strip():
                    buf.append(line.rstrip("\n"))
                elif buf:
                    stats.documents += 1
                    yield TextDocument(text="\n".join(buf), source=path.name)
                    buf = []
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err})") from err
    if buf:
        stats.documents += 1
        yield TextDocument(text="\n".join(buf), source=path.name)


def iter_corpus(path: PathLike, stats: Optional[CorpusStats] = None, **kwargs: Any) -> Iterator[TextDocument]:
    """Stream a ``.txt``/``.jsonl`` file or every such file under a folder (sorted, recursive)."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus path does not exist")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"{path}: no .txt or .jsonl files in this folder")
    for f in files:
        if f.suffix == ".jsonl":
            yield from iter_jsonl(f, stats=stats, **{k: v for k, v in kwargs.items() if k != "split"})
        elif f.suffix == ".txt":
            yield from iter_text_file(f, split=kwargs.get("split", "blank_line"), stats=stats)
        else:
            raise CorpusError(f"{f}: unsupported corpus file type {f.suffix!r} (use .txt or .jsonl)")


# --------------------------------------------------------------------------- built-in corpora


def _require_columns(df: Any, path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def ptbxl_superclass_map(scp_statements: PathLike) -> Dict[str, str]:
    """SCP code -> diagnostic superclass from PTB-XL's ``scp_statements.csv``."""
    import pandas as pd

    path = Path(scp_statements)
    if not path.is_file():
        raise CorpusError(f"{path}: PTB-XL scp_statements.csv not found")
    df = pd.read_csv(path, index_col=0)
    _require_columns(df, path, ["diagnostic", "diagnostic_class"])
    diag = df[df["diagnostic"] == 1]
    return {str(code): str(cls) for code, cls in diag["diagnostic_class"].items() if isinstance(cls, str)}


def ptbxl_reports(root: PathLike, min_likelihood: float = 0.0,
                  stats: Optional[CorpusStats] = None) -> List[TextDocument]:
    """PTB-XL free-text reports (mostly German) with metadata, quality score and superclass label.

    * ``metadata``: ``"device <device> site <site>"`` (the recording source; used by MeCo),
    * ``score``: diagnostic certainty, the highest SCP likelihood of a diagnostic statement / 100
      (0 when the cardiologist gave none; used by conditional training and curricula; every row of
      the shared subset is human-validated, so validation carries no signal),
    * ``label``: the diagnostic superclass with the highest SCP likelihood (``None`` if none).

    Rows whose report is blank (ecg_id 443 in the shared subset) are skipped and counted in
    ``stats.skipped_empty`` (and warned about).

    Source: Wagner et al., "PTB-XL, a large publicly available electrocardiography dataset" (2020).
    """
    import pandas as pd

    root = Path(root)
    db = root / "ptbxl_database.csv"
    if not db.is_file():
        raise CorpusError(f"{db}: PTB-XL database CSV not found")
    df = pd.read_csv(db)
    _require_columns(df, db, ["ecg_id", "report", "scp_codes", "strat_fold"])
    code2cls = ptbxl_superclass_map(root / "scp_statements.csv")
    stats = stats if stats is not None else CorpusStats()
    stats.files.append(str(db))
    skipped: List[int] = []
    docs: List[TextDocument] = []
    for row in df.itertuples(index=False):
        report = row.report if isinstance(row.report, str) else ""
        if not report.strip():
            stats.skipped_empty += 1
            skipped.append(int(row.ecg_id))
            continue
        try:
            codes = ast.literal_eval(row.scp_codes)
        except (ValueError, SyntaxError) as err:
            raise CorpusError(f"{db}: ecg_id {row.ecg_id}: unparsable scp_codes {row.scp_codes!r}") from err
        best: Dict[str, float] = {}
        for code, lik in codes.items():
            cls = code2cls.get(code)
            if cls is not None and float(lik) >= min_likelihood:
                best[cls] = max(best.get(cls, -1.0), float(lik))
        label = max(best, key=lambda c: (best[c], -PTBXL_SUPERCLASSES.index(c))) if best else None
        device = str(getattr(row, "device", "unknown")).split()
        site = getattr(row, "site", None)
        meta = f"device {' '.join(device)} site {int(site) if site == site and site is not None else 'unknown'}"
        certainty = max(best.values()) / 100.0 if best else 0.0
        docs.append(TextDocument(text=report.strip(), metadata=meta, score=certainty,
                                 label=label, source=f"ptbxl:{row.ecg_id}:fold{int(row.strat_fold)}"))
    stats.documents += len(docs)
    if skipped:
        warnings.warn(f"{db}: skipped {len(skipped)} row(s) with a blank report (ecg_id {skipped[:10]})")
    return docs


def pydoc_topics() -> List[TextDocument]:
    """Python's bundled reference documentation (``pydoc_data.topics``), one document per topic,
    metadata ``docs.python.org/<topic>``. Paragraphs of a topic stay in one document."""
    from pydoc_data.topics import topics

    return [TextDocument(text=text.strip(), metadata=f"docs.python.org/{name}", source=f"pydoc:{name}")
            for name, text in sorted(topics.items()) if text.strip()]


def ptbxl_fold(doc: TextDocument) -> int:
    """The ``strat_fold`` a PTB-XL document came from (encoded in ``source``)."""
    try:
        return int(doc.source.rsplit("fold", 1)[1])
    except (IndexError, ValueError) as err:
        raise ValueError(f"document {doc.source!r} is not a PTB-XL report") from err


def order_by_score(docs: Sequence[TextDocument], descending: bool = False) -> List[TextDocument]:
    """Quality curriculum: documents sorted by score (``None`` first); stable for ties."""
    missing = [d for d in docs if d.score is None]
    scored = sorted((d for d in docs if d.score is not None), key=lambda d: d.score, reverse=descending)
    return missing + scored


def _ptbxl_source(shared_data: Optional[PathLike], stats: CorpusStats) -> List[TextDocument]:
    if shared_data is None:
        raise CorpusError("source 'ptbxl' needs data.shared_data (the folder holding ecg/ptbxl)")
    return ptbxl_reports(Path(shared_data) / "ecg" / "ptbxl", stats=stats)


def _stdlib_source(shared_data: Optional[PathLike], stats: CorpusStats) -> List[TextDocument]:
    from sslab.datasets.text_stdlib import stdlib_docstrings

    docs = stdlib_docstrings()
    stats.documents += len(docs)
    return docs


#: built-in corpora by name: ``(shared_data, stats) -> documents``
BUILTIN_SOURCES: Dict[str, Callable[[Optional[PathLike], CorpusStats], List[TextDocument]]] = {
    "ptbxl": _ptbxl_source,
    "pydoc": lambda shared_data, stats: pydoc_topics(),
    "stdlib_docs": _stdlib_source,
}


def load_documents(sources: Iterable[Union[str, Dict[str, Any]]], shared_data: Optional[PathLike] = None,
                   stats: Optional[CorpusStats] = None) -> List[TextDocument]:
    """Materialise documents from a list of sources: a built-in corpus name (``"ptbxl"``, ``"pydoc"``,
    ``"stdlib_docs"`` = standard-library docstrings, :mod:`sslab.datasets.text_stdlib`), a path, or a dict
    ``{"path": ..., "text_field": ..., "metadata_field": ..., "score_field": ..., "split": ...}``."""
    stats = stats if stats is not None else CorpusStats()
    docs: List[TextDocument] = []
    for src in sources:
        if isinstance(src, str) and src in BUILTIN_SOURCES:
            docs.extend(BUILTIN_SOURCES[src](shared_data, stats))
        elif isinstance(src, (str, Path)):
            docs.extend(iter_corpus(src, stats=stats))
        elif isinstance(src, dict):
            kw = dict(src)
            path = kw.pop("path", None)
            if path is None:
                raise CorpusError(f"corpus source {src!r} needs a 'path'")
            docs.extend(iter_corpus(path, stats=stats, **kw))
        else:
            raise CorpusError(f"unknown corpus source {src!r}: use one of {sorted(BUILTIN_SOURCES)}, "
                              "a path or a mapping with 'path'")
    if stats.skipped_empty and any(not f.endswith(".csv") for f in stats.files):
        warnings.warn(f"skipped {stats.skipped_empty} empty document(s) in {stats.files}")
    if not docs:
        raise CorpusError(f"corpus sources {list(sources)} yielded no documents")
    return docs
