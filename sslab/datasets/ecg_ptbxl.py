"""PTB-XL metadata and label sets, following the PTB-XL benchmark convention.

Wagner et al. 2020 (PTB-XL, Sci. Data) and Strodthoff et al. 2021 (benchmark, IEEE JBHI):
``scp_codes`` is a dict {statement: likelihood}; label sets are built through ``scp_statements.csv``:

* ``all``            every statement
* ``diagnostic``     statements with ``diagnostic == 1`` (44)
* ``subdiagnostic``  their ``diagnostic_subclass`` (23)
* ``superdiagnostic`` their ``diagnostic_class`` (NORM, MI, STTC, CD, HYP)
* ``form`` / ``rhythm`` statements with ``form == 1`` / ``rhythm == 1``

The benchmark keeps statements of any likelihood (``min_likelihood=0``; likelihood 0 means "unknown"
for non-diagnostic statements) and removes records without any label of the chosen set -- here an
explicit policy whose count is reported.  Splits use ``strat_fold`` (1-8 train, 9 val, 10 test).
"""
from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from sslab.core.registry import DATASETS
from sslab.datasets.ecg_wfdb import ECGRecordError, PathLike

log = logging.getLogger(__name__)

LABEL_SETS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
DEFAULT_FOLDS: Dict[str, List[int]] = {"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": [9], "test": [10]}
_DB_COLUMNS = ("ecg_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
_SCP_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")


def _read_csv(path: Path, required: Sequence[str], **kw) -> pd.DataFrame:
    if not path.is_file():
        raise ECGRecordError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, **kw)
    except Exception as err:
        raise ECGRecordError(f"{path}: cannot read CSV: {err}") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ECGRecordError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    return df


def _parse_codes(text: str, row: int, path: Path) -> Dict[str, float]:
    try:
        d = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ECGRecordError(f"{path}: ecg_id {row}: bad scp_codes {text!r} ({err})") from None
    if not isinstance(d, dict):
        raise ECGRecordError(f"{path}: ecg_id {row}: scp_codes is not a dict: {text!r}")
    return {str(k): float(v) for k, v in d.items()}


def aggregate_labels(codes: Dict[str, float], scp: pd.DataFrame, label_set: str,
                     min_likelihood: float = 0.0) -> List[str]:
    """Labels of one record for ``label_set`` (benchmark aggregation through scp_statements)."""
    if label_set not in LABEL_SETS:
        raise ValueError(f"unknown PTB-XL label set {label_set!r}; choose from {LABEL_SETS}")
    keys = [k for k, v in codes.items() if v >= min_likelihood]
    out = set()
    for k in keys:
        if label_set == "all":
            out.add(k)
            continue
        if k not in scp.index:
            continue
        row = scp.loc[k]
        if label_set == "form" and row["form"] == 1.0:
            out.add(k)
        elif label_set == "rhythm" and row["rhythm"] == 1.0:
            out.add(k)
        elif row["diagnostic"] == 1.0:
            if label_set == "diagnostic":
                out.add(k)
            elif label_set == "subdiagnostic" and isinstance(row["diagnostic_subclass"], str):
                out.add(row["diagnostic_subclass"])
            elif label_set == "superdiagnostic" and isinstance(row["diagnostic_class"], str):
                out.add(row["diagnostic_class"])
    return sorted(out)


@dataclass
class PTBXLSplit:
    """Records and multi-hot labels of one split."""

    records: List[Path]
    labels: np.ndarray  # [n, n_classes] float32
    ecg_ids: List[int]


@DATASETS.register("ecg_ptbxl")
class PTBXL:
    """A PTB-XL folder (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/`` or ``records500/``).

    Args:
        root: PTB-XL folder.
        label_set: one of :data:`LABEL_SETS`.
        rate: 100 (``filename_lr``) or 500 (``filename_hr``).
        min_likelihood: keep statements with likelihood >= this (benchmark: 0).
        missing_records: ``"error"`` (a row whose record files are absent raises) or ``"skip"`` (counted).
    """

    def __init__(self, root: PathLike, label_set: str = "superdiagnostic", rate: int = 100,
                 min_likelihood: float = 0.0, missing_records: str = "error") -> None:
        if rate not in (100, 500):
            raise ValueError(f"PTB-XL rate must be 100 or 500, got {rate}")
        if label_set not in LABEL_SETS:
            raise ValueError(f"unknown PTB-XL label set {label_set!r}; choose from {LABEL_SETS}")
        if missing_records not in ("error", "skip"):
            raise ValueError(f"missing_records must be 'error' or 'skip', got {missing_records!r}")
        self.root = Path(root)
        self.label_set, self.rate = label_set, rate
        db_path, scp_path = self.root / "ptbxl_database.csv", self.root / "scp_statements.csv"
        db = _read_csv(db_path, _DB_COLUMNS)
        scp = _read_csv(scp_path, _SCP_COLUMNS, index_col=0)
        col = "filename_lr" if rate == 100 else "filename_hr"
        self.missing: List[str] = []
        self.unlabeled: List[int] = []
        rows = []
        for r in db.itertuples(index=False):
            ecg_id = int(r.ecg_id)
            codes = _parse_codes(r.scp_codes, ecg_id, db_path)
            rec = self.root / getattr(r, col)
            if not rec.with_suffix(".hea").is_file():
                if missing_records == "error":
                    raise ECGRecordError(f"{db_path}: ecg_id {ecg_id}: record {rec} not found "
                                         "(set missing_records: skip to drop and count such rows)")
                self.missing.append(str(rec))
                continue
            labels = aggregate_labels(codes, scp, label_set, min_likelihood)
            if not labels:
                self.unlabeled.append(ecg_id)
                continue
            rows.append((ecg_id, rec, int(r.strat_fold), labels, codes))
        if self.missing:
            log.warning("PTB-XL: %d row(s) without record files skipped (missing_records=skip)", len(self.missing))
        if self.unlabeled:
            log.info("PTB-XL: %d record(s) have no %s label and are excluded (benchmark convention)",
                     len(self.unlabeled), label_set)
        if not rows:
            raise ECGRecordError(f"{self.root}: no PTB-XL records with {label_set} labels")
        self.classes: List[str] = sorted({c for row in rows for c in row[3]})
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def folds(self) -> np.ndarray:
        return np.array([r[2] for r in self._rows])

    def split(self, folds: Sequence[int]) -> PTBXLSplit:
        """Records whose ``strat_fold`` is in ``folds``; error if none."""
        fs = set(int(f) for f in folds)
        sel = [r for r in self._rows if r[2] in fs]
        if not sel:
            raise ECGRecordError(f"{self.root}: no records in strat_fold {sorted(fs)} "
                                 f"(available folds: {sorted(set(self.folds.tolist()))})")
        Y = np.zeros((len(sel), len(self.classes)), np.float32)
        for i, r in enumerate(sel):
            for c in r[3]:
                Y[i, self.classes.index(c)] = 1.0
        return PTBXLSplit(records=[r[1] for r in sel], labels=Y, ecg_ids=[r[0] for r in sel])
