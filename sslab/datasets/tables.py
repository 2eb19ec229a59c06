"""CSV / DataFrame tables with a schema, for UniTabE-style pretraining (Yang et al., ICLR 2024).

A :class:`Table` is a pandas frame of *cleaned* cells plus a :class:`TableSchema`:
column names, a type per column (``numeric``, ``categorical``, ``boolean``, ``text``; inferred and
overridable) and an optional target column.  Missing-value markers (``?``, ``NA``, empty, ...) become
``None`` / ``NaN``.  Bad input raises :class:`TableError` naming the file and the problem: ragged rows,
duplicate or unknown column names, all-missing columns, a target with one class or missing labels.

Readers: :func:`read_csv_table` (any CSV; Adult's ``", "`` separator and header-less files included),
:func:`table_from_frame` (an in-memory DataFrame), :func:`load_shared_table` (the three tables under
``../shared/data/tables``, with their ``schema.json``) and :func:`load_sklearn_table` (scikit-learn's
bundled tables, no network).
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from sslab.core.registry import DATASETS

COLUMN_TYPES: Tuple[str, ...] = ("numeric", "categorical", "boolean", "text")
DEFAULT_MISSING: Tuple[str, ...] = ("?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "")
_BOOL_TRUE = {"true", "yes", "y", "t"}
_BOOL_FALSE = {"false", "no", "n", "f"}
PathLike = Union[str, Path]


class TableError(ValueError):
    """Bad table input; the message names the file (or table) and the problem."""


@dataclass
class ColumnSpec:
    name: str
    type: str

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise TableError(f"column {self.name!r}: unknown type {self.type!r}; choose from {COLUMN_TYPES}")


@dataclass
class TableSchema:
    """Feature columns (in file order), their types, and the target column (not in ``columns``)."""

    columns: List[ColumnSpec]
    target: Optional[str] = None
    task: Optional[str] = None  # "binary" | "multiclass" | "regression" | None (no target)

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.columns]

    def type_of(self, name: str) -> str:
        for c in self.columns:
            if c.name == name:
                return c.type
        raise KeyError(name)


@dataclass
class Table:
    """Cleaned cells (``frame``: feature columns only) + schema + target values (or ``None``)."""

    name: str
    frame: pd.DataFrame
    schema: TableSchema
    target: Optional[pd.Series] = None
    source: str = "<frame>"
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    def labels(self) -> Tuple[np.ndarray, List[str]]:
        """Target as class indices (classification; with class names) or floats (regression)."""
        if self.target is None:
            raise TableError(f"{self.source}: table {self.name!r} has no target column")
        if self.schema.task == "regression":
            return self.target.to_numpy(dtype=np.float64), []
        classes = sorted(self.target.astype(str).unique())
        index = {c: i for i, c in enumerate(classes)}
        return self.target.astype(str).map(index).to_numpy(dtype=np.int64), classes

    def subset(self, rows: Sequence[int] | np.ndarray, columns: Optional[Sequence[str]] = None) -> "Table":
        """Row (and optionally column) subset sharing this table's schema types."""
        rows = np.asarray(rows)
        cols = list(columns) if columns is not None else self.schema.names
        unknown = [c for c in cols if c not in self.schema.names]
        if unknown:
            raise TableError(f"{self.source}: unknown columns {unknown}; table has {self.schema.names}")
        schema = TableSchema([ColumnSpec(c, self.schema.type_of(c)) for c in cols], self.schema.target, self.schema.task)
        target = None if self.target is None else self.target.iloc[rows].reset_index(drop=True)
        return Table(self.name, self.frame.iloc[rows][cols].reset_index(drop=True), schema, target, self.source, dict(self.meta))


# --------------------------------------------------------------------------- raw reading


def _read_rows(path: Path, separator: str) -> List[List[str]]:
    """Parse ``path`` with Python ``csv``; ``", "`` (Adult) = comma + skip initial space.

    Fully blank lines (e.g. Adult's trailing empty line) are skipped; any other row whose width differs
    from the first row's is an error naming the line.
    """
    if not path.exists():
        raise TableError(f"{path}: file not found")
    if separator.strip() == "" or len(separator.strip()) != 1:
        raise TableError(f"{path}: separator {separator!r} must be one character, optionally followed by spaces")
    delim = separator.strip()
    skip_space = separator != delim
    rows: List[List[str]] = []
    width = None
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delim, skipinitialspace=skip_space)
        try:
            for row in reader:
                if not row or all(cell.strip() == "" for cell in row) and len(row) <= 1:
                    continue
                if width is None:
                    width = len(row)
                elif len(row) != width:
                    raise TableError(
                        f"{path}: ragged row at line {reader.line_num}: {len(row)} fields, expected {width} "
                        f"(as in the first row)"
                    )
                rows.append(row)
        except csv.Error as err:
            raise TableError(f"{path}: CSV parse error at line {reader.line_num}: {err}") from err
        except UnicodeDecodeError as err:
            raise TableError(f"{path}: not UTF-8 text ({err})") from err
    if not rows:
        raise TableError(f"{path}: no rows")
    return rows


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return False
    return math.isfinite(value)


def infer_type(values: pd.Series) -> str:
    """Infer a column type from its non-missing string cells.

    boolean: at most two distinct values, all from {true,false,yes,no,0,1,...};
    numeric: every cell parses as a finite float; text: mostly unique values longer than 20 characters on
    average; categorical otherwise.
    """
    vals = values.dropna().astype(str)
    uniq = set(vals.str.lower().unique())
    if uniq and uniq <= (_BOOL_TRUE | _BOOL_FALSE | {"0", "1", "0.0", "1.0"}) and len(uniq) <= 2:
        return "boolean"
    if len(vals) and all(_is_number(v) for v in vals.unique()):
        return "numeric"
    if len(vals) and vals.nunique() > 0.5 * len(vals) and vals.str.len().mean() > 20:
        return "text"
    return "categorical"


def _clean(frame: pd.DataFrame, missing: Iterable[str]) -> pd.DataFrame:
    """Strip cells and turn missing markers into ``None`` (object dtype throughout)."""
    markers = set(missing)
    out = {}
    for col in frame.columns:
        series = frame[col]
        cells = []
        for v in series.tolist():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append(None)
                continue
            s = str(v).strip()
            cells.append(None if s in markers else s)
        out[col] = pd.Series(cells, dtype=object, index=frame.index)
    return pd.DataFrame(out, index=frame.index)


def _coerce(series: pd.Series, ctype: str, where: str) -> pd.Series:
    """Convert cleaned string cells to the column type (numeric -> float, boolean -> 'true'/'false')."""
    if ctype == "numeric":
        bad = [v for v in series.dropna().unique() if not _is_number(v)]
        if bad:
            raise TableError(f"{where}: declared numeric but has non-numeric values {bad[:5]}")
        return pd.to_numeric(series, errors="raise").astype(np.float64)
    if ctype == "boolean":
        def to_bool(v: Any) -> Any:
            if v is None:
                return None
            s = str(v).lower()
            if s in _BOOL_TRUE or s in ("1", "1.0"):
                return "true"
            if s in _BOOL_FALSE or s in ("0", "0.0"):
                return "false"
            raise TableError(f"{where}: declared boolean but has value {v!r}")
        return pd.Series([to_bool(v) for v in series.tolist()], dtype=object, index=series.index)
    return series.astype(object)


def _infer_task(target: pd.Series, where: str) -> str:
    n_classes = target.nunique()
    if n_classes < 2:
        raise TableError(f"{where}: target has a single class {list(target.unique())!r}; need at least two")
    if all(_is_number(str(v)) for v in target.unique()) and n_classes > 20:
        return "regression"
    return "binary" if n_classes == 2 else "multiclass"


def table_from_frame(
    frame: pd.DataFrame,
    name: str = "table",
    target: Optional[str] = None,
    types: Optional[Mapping[str, str]] = None,
    missing: Iterable[str] = DEFAULT_MISSING,
    drop: Sequence[str] = (),
    task: Optional[str] = None,
    value_maps: Optional[Mapping[str, Mapping[str, str]]] = None,
    source: str = "<frame>",
) -> Table:
    """Build a :class:`Table` from a DataFrame: clean, type (infer + ``types`` overrides), validate.

    ``drop`` removes columns (e.g. a leak such as Titanic's ``alive``); ``value_maps`` rewrites codes
    (e.g. German credit's ``A11`` -> ``... < 0 DM``) so values carry words a shared tokenizer can use.
    """
    where_t = f"{source} (table {name!r})"
    if frame.shape[0] == 0:
        raise TableError(f"{where_t}: no rows")
    cols = [str(c) for c in frame.columns]
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        raise TableError(f"{where_t}: duplicate column names {dupes}")
    frame = frame.copy()
    frame.columns = cols
    for col in list(drop) + list((types or {}).keys()) + ([target] if target else []) + list((value_maps or {}).keys()):
        if col not in cols:
            raise TableError(f"{where_t}: unknown column {col!r}; columns are {cols}")
    frame = frame.drop(columns=list(drop))
    frame = _clean(frame, missing)
    for col, mapping in (value_maps or {}).items():
        frame[col] = pd.Series([None if v is None else mapping.get(v, v) for v in frame[col].tolist()],
                               dtype=object, index=frame.index)

    target_series = None
    if target is not None:
        target_series = frame.pop(target)
        n_missing = int(target_series.isna().sum())
        if n_missing:
            raise TableError(f"{where_t}: target {target!r} has {n_missing} missing labels; drop those rows first")
        task = task or _infer_task(target_series, f"{where_t}")
        if task != "regression" and target_series.nunique() < 2:
            raise TableError(f"{where_t}: target has a single class {list(target_series.unique())!r}; need at least two")
        if task == "regression":
            target_series = _coerce(target_series, "numeric", f"{where_t}: target {target!r}")
        target_series = target_series.reset_index(drop=True)

    if frame.shape[1] == 0:
        raise TableError(f"{where_t}: no feature columns")
    specs = []
    for col in frame.columns:
        if frame[col].isna().all():
            raise TableError(f"{where_t}: column {col!r} is missing in all {len(frame)} rows")
        ctype = (types or {}).get(col) or infer_type(frame[col])
        if ctype not in COLUMN_TYPES:
            raise TableError(f"{where_t}: column {col!r}: unknown type {ctype!r}; choose from {COLUMN_TYPES}")
        frame[col] = _coerce(frame[col], ctype, f"{where_t}: column {col!r}")
        specs.append(ColumnSpec(col, ctype))
    schema = TableSchema(specs, target, task if target else None)
    return Table(name, frame.reset_index(drop=True), schema, target_series, source)


def read_csv_table(
    path: PathLike,
    name: Optional[str] = None,
    target: Optional[str] = None,
    types: Optional[Mapping[str, str]] = None,
    missing: Iterable[str] = DEFAULT_MISSING,
    separator: str = ",",
    header: Union[bool, Sequence[str]] = True,
    drop: Sequence[str] = (),
    value_maps: Optional[Mapping[str, Mapping[str, str]]] = None,
) -> Table:
    """Read a CSV into a :class:`Table`. ``header``: True (first row), or the column names (no header row)."""
    path = Path(path)
    rows = _read_rows(path, separator)
    if header is True:
        names, body = [c.strip() for c in rows[0]], rows[1:]
    else:
        names, body = list(header), rows
        if len(names) != len(rows[0]):
            raise TableError(f"{path}: {len(names)} column names given but rows have {len(rows[0])} fields")
    if not body:
        raise TableError(f"{path}: header but no data rows")
    frame = pd.DataFrame(body, columns=names, dtype=object)
    return table_from_frame(frame, name or path.stem, target, types, missing, drop, None, value_maps, str(path))


# --------------------------------------------------------------------------- shared + bundled tables


def parse_names_codes(path: PathLike) -> Dict[str, str]:
    """Code -> description from a UCI ``.names`` file (``A11 :  ... <  0 DM``, continuation lines joined)."""
    codes: Dict[str, str] = {}
    current = None
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        m = re.match(r"^\s*(A\d+)\s*:\s*(.*)$", line)
        if m:
            current = m.group(1)
            codes[current] = m.group(2).strip()
        elif current and line.strip() and line.startswith(("\t\t", "    ")) and not re.match(r"^\s*(Att|\d)", line):
            codes[current] += " " + line.strip()
        else:
            current = None
    return {k: re.sub(r"\s+", " ", v).strip(" /") for k, v in codes.items()}


SHARED_TABLES: Dict[str, Dict[str, Any]] = {
    "adult": {"file": "adult/adult-train.csv", "schema": "adult/schema.json"},
    "german_credit": {"file": "german_credit/german.csv", "schema": "german_credit/schema.json",
                      "names_codes": "german_credit/german.names"},
    # seaborn's Titanic: `alive` is the target spelled yes/no -> dropped as a leak.
    "titanic": {"file": "titanic/titanic.csv", "target": "survived", "drop": ["alive"],
                "types": {"pclass": "categorical"}},
}


def load_schema_json(path: PathLike) -> Dict[str, Any]:
    """Read the shared ``schema.json`` format into read_csv_table keyword arguments."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TableError(f"{path}: cannot read schema ({err})") from err
    cols = raw.get("columns")
    if not isinstance(cols, list) or not cols:
        raise TableError(f"{path}: schema needs a non-empty 'columns' list")
    names = [c["name"] for c in cols]
    types = {c["name"]: c["type"] for c in cols if c["type"] != "target"}
    kwargs: Dict[str, Any] = {"types": types, "target": raw.get("target"), "separator": raw.get("separator", ",")}
    kwargs["header"] = True if raw.get("header_in_file", True) else names
    if "missing" in raw:
        kwargs["missing"] = tuple(DEFAULT_MISSING) + (raw["missing"],)
    return kwargs


@DATASETS.register("shared_table")
def load_shared_table(name: str, root: PathLike, **overrides: Any) -> Table:
    """One of the tables in ``<shared data>/tables`` (adult, german_credit, titanic) with its schema."""
    if name not in SHARED_TABLES:
        raise TableError(f"unknown shared table {name!r}; choose from {sorted(SHARED_TABLES)}")
    info = SHARED_TABLES[name]
    base = Path(root) / "tables" if (Path(root) / "tables").is_dir() else Path(root)
    kwargs: Dict[str, Any] = {}
    if "schema" in info:
        kwargs.update(load_schema_json(base / info["schema"]))
    for key in ("target", "drop", "types"):
        if key in info:
            kwargs[key] = info[key]
    if "names_codes" in info:
        codes = parse_names_codes(base / info["names_codes"])
        kwargs["value_maps"] = {c: codes for c, t in kwargs["types"].items() if t == "categorical"}
    kwargs.update(overrides)
    return read_csv_table(base / info["file"], name=name, **kwargs)


SKLEARN_TABLES = ("breast_cancer", "diabetes", "wine", "iris")


@DATASETS.register("sklearn_table")
def load_sklearn_table(name: str) -> Table:
    """scikit-learn's bundled tables (shipped with the package; no download) as :class:`Table`."""
    from sklearn import datasets as skd

    if name not in SKLEARN_TABLES:
        raise TableError(f"unknown scikit-learn table {name!r}; choose from {SKLEARN_TABLES}")
    bunch = getattr(skd, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    task = "regression" if name == "diabetes" else None
    if task is None:  # class names instead of 0/1/2 codes
        frame["target"] = [str(bunch.target_names[int(i)]) for i in frame["target"]]
    return table_from_frame(frame, name=name, target="target", task=task, source=f"sklearn.datasets.load_{name}")


@DATASETS.register("csv_table")
def csv_table(path: str, **kwargs: Any) -> Table:
    """Registry entry for :func:`read_csv_table`."""
    return read_csv_table(path, **kwargs)
