"""``table`` pipeline: a CSV with the probed table's schema -> the shared WordPiece tokenizer
(``tokenizer.json`` in the encoder folder) -> TabUnit cells (numeric columns standardised with the probe's
training-split mean/std) -> the row encoder's [CLS] token (UniTabE, Yang et al. ICLR 2024, Sec. 3)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from sslab.core.pipeline import InputMismatch, InputPipeline, PathLike, expand_paths
from sslab.core.registry import PIPELINES


@PIPELINES.register("table")
class TablePipeline(InputPipeline):
    """Spec keys: ``schema`` ({columns: [{name, type}], target, task}), ``tokenizer``, ``digits``,
    ``num_stats`` ({column: [mean, std]}), ``read`` (CSV options: separator, header, missing, drop,
    value_maps). Input with other feature columns is refused, naming the missing and unexpected ones."""

    usage = "enc.embed_raw(frame)   # pandas DataFrame with the schema's columns"

    files = ("tokenizer.json",)

    def __init__(self, spec: Any, folder: Any = None) -> None:
        super().__init__(spec, folder)
        self._tok: Any = None

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from sslab.datasets.tables_tokenize import TableTokenizer

            text = self.file(self.spec.get("tokenizer", "tokenizer.json")).read_text()
            self._tok = TableTokenizer.from_str(text, int(self.spec.get("digits", 4)))
        return self._tok

    @property
    def columns(self) -> List[str]:
        return [c["name"] for c in self.spec["schema"]["columns"]]

    def check_columns(self, found: Sequence[str], where: str) -> None:
        want = self.columns
        target = self.spec["schema"].get("target")
        drop = set(self.spec.get("read", {}).get("drop", []))
        missing = [c for c in want if c not in found]
        extra = [c for c in found if c not in want and c != target and c not in drop]
        if missing or extra:
            raise InputMismatch(f"{where}: table schema differs from the encoder's: missing columns {missing}, "
                                f"unexpected columns {extra}; expected {want}"
                                + (f" (+ optional target {target!r})" if target else ""))

    def _table_items(self, frame: Any, where: str) -> List[Dict[str, torch.Tensor]]:
        from sslab.datasets.tables import DEFAULT_MISSING, table_from_frame
        from sslab.datasets.tables_tokenize import TokenizedTable

        read = dict(self.spec.get("read", {}))
        cols = [str(c) for c in frame.columns]
        self.check_columns(cols, where)
        target = self.spec["schema"].get("target")
        drop = [c for c in cols if c == target or c in set(read.get("drop", []))]
        types = {c["name"]: c["type"] for c in self.spec["schema"]["columns"]}
        value_maps = {k: v for k, v in (read.get("value_maps") or {}).items() if k in types}
        missing = read.get("missing")
        table = table_from_frame(frame, "input", None, types, DEFAULT_MISSING if missing is None else missing, drop,
                                 None, value_maps, where)
        table = table.subset(list(range(len(table))), self.columns)  # the encoder's column order
        stats = {k: (float(v[0]), float(v[1])) for k, v in (self.spec.get("num_stats") or {}).items()}
        tok = TokenizedTable(table, self.tokenizer, stats)
        return [tok.row(i) for i in range(len(tok))]

    def preprocess(self, raw: Any, **meta: Any) -> List[Dict[str, torch.Tensor]]:
        """``raw``: a pandas DataFrame (raw cell values, as in the CSV) with the encoder's feature columns."""
        import pandas as pd

        if not isinstance(raw, pd.DataFrame):
            raise InputMismatch(f"table input must be a pandas DataFrame with columns {self.columns}, "
                                f"got {type(raw).__name__}")
        frame = raw.astype(object).where(raw.notna(), None).astype(str).where(raw.notna(), "")
        return self._table_items(frame, "table input")

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """CSV files (the reading options of the training table: separator, header, missing markers);
        rows ``file:row`` (0-based data rows)."""
        import pandas as pd

        from sslab.datasets.tables import _read_rows

        read = dict(self.spec.get("read", {}))
        for path in expand_paths(paths, (".csv", ".tsv", ".data", ".txt")):
            rows = _read_rows(path, read.get("separator", ","))
            header = read.get("header", True)
            names, body = ([c.strip() for c in rows[0]], rows[1:]) if header is True else (list(header), rows)
            if not body:
                raise ValueError(f"{path}: no data rows")
            frame = pd.DataFrame(body, columns=names, dtype=object)
            for i, item in enumerate(self._table_items(frame, str(path))):
                yield f"{path}:{i}", item

    def collate(self, items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        from sslab.datasets.tables_tokenize import TableCollator

        return TableCollator().pad(list(items))

    def describe(self) -> List[str]:
        s = self.spec
        cols = ", ".join(f"{c['name']} ({c['type']})" for c in s["schema"]["columns"])
        stats: Optional[Dict[str, Any]] = s.get("num_stats")
        return [f"- schema: {cols}; target `{s['schema'].get('target')}` ({s['schema'].get('task')}), optional in input",
                f"- tokenizer: `{s.get('tokenizer')}` in this folder (WordPiece shared by names and values; numbers "
                f"as {s.get('digits')}-significant-digit tokens)",
                f"- numeric columns standardised (clipped to +-5) with {s.get('num_stats_from')}: "
                f"{len(stats or {})} column(s)",
                f"- features: {s.get('pooling')}"]
