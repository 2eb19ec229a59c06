"""PhysioNet/CinC Challenge 2021 records: WFDB header + MAT-v4 signal, SNOMED-CT ``# Dx:`` labels.

Reyna et al. 2021, "Will Two Do? Varying Dimensions in Electrocardiography: the PhysioNet/Computing
in Cardiology Challenge 2021".  Codes are named through the challenge's ``dx_mapping_scored.csv``
and ``dx_mapping_unscored.csv`` (columns ``Dx, SNOMEDCTCode, Abbreviation``).  A code missing from
both maps is an error naming the record (or, with ``unknown_codes="keep"``, kept as ``SNOMED:<code>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from sslab.core.registry import DATASETS
from sslab.datasets.ecg_wfdb import ECGRecordError, PathLike, find_records, read_header


@dataclass(frozen=True)
class DxCode:
    code: str
    name: str
    abbreviation: str
    scored: bool


def load_dx_mapping(folder: PathLike) -> Dict[str, DxCode]:
    """SNOMED code -> :class:`DxCode` from the challenge's mapping CSVs in ``folder``."""
    out: Dict[str, DxCode] = {}
    found = False
    for fname, scored in (("dx_mapping_scored.csv", True), ("dx_mapping_unscored.csv", False)):
        path = Path(folder) / fname
        if not path.is_file():
            continue
        found = True
        df = pd.read_csv(path)
        missing = [c for c in ("Dx", "SNOMEDCTCode", "Abbreviation") if c not in df.columns]
        if missing:
            raise ECGRecordError(f"{path}: missing column(s) {missing}")
        for r in df.itertuples(index=False):
            code = str(r.SNOMEDCTCode).strip()
            out.setdefault(code, DxCode(code, str(r.Dx), str(r.Abbreviation), scored))
    if not found:
        raise ECGRecordError(f"{folder}: no dx_mapping_scored.csv / dx_mapping_unscored.csv")
    return out


def header_fields(comments: Sequence[str]) -> Dict[str, str]:
    """``["Age: 78", "Dx: 1,2"]`` -> ``{"Age": "78", "Dx": "1,2"}`` (CinC header comment convention)."""
    out = {}
    for c in comments:
        if ":" in c:
            k, v = c.split(":", 1)
            out[k.strip()] = v.strip()
    return out


@DATASETS.register("ecg_cinc2021")
class CinC2021:
    """A folder of CinC 2021 records with their Dx labels.

    Args:
        root: records folder (searched recursively for ``*.hea``).
        mapping_dir: folder with the ``dx_mapping_*.csv`` files (default: ``root``).
        unknown_codes: ``"error"`` or ``"keep"`` (as ``SNOMED:<code>``).
    """

    def __init__(self, root: PathLike, mapping_dir: Optional[PathLike] = None, unknown_codes: str = "error") -> None:
        if unknown_codes not in ("error", "keep"):
            raise ValueError(f"unknown_codes must be 'error' or 'keep', got {unknown_codes!r}")
        self.mapping = load_dx_mapping(mapping_dir or root)
        self.records: List[Path] = find_records(root)
        self.fields: List[Dict[str, str]] = []
        self.codes: List[List[str]] = []
        for rec in self.records:
            f = header_fields(read_header(rec).comments or [])
            if "Dx" not in f or not f["Dx"]:
                raise ECGRecordError(f"{rec}: header has no '# Dx:' line")
            codes = [c.strip() for c in f["Dx"].split(",") if c.strip()]
            for c in codes:
                if c not in self.mapping and unknown_codes == "error":
                    raise ECGRecordError(f"{rec}: Dx code {c} is not in the SNOMED mapping "
                                         "(set unknown_codes='keep' to keep it as SNOMED:<code>)")
            self.fields.append(f)
            self.codes.append(codes)

    def __len__(self) -> int:
        return len(self.records)

    def name(self, code: str, abbreviation: bool = True) -> str:
        d = self.mapping.get(code)
        if d is None:
            return f"SNOMED:{code}"
        return d.abbreviation if abbreviation else d.name

    def label_names(self, i: int, abbreviation: bool = True) -> List[str]:
        return [self.name(c, abbreviation) for c in self.codes[i]]

    def multi_hot(self, min_count: int = 1, scored_only: bool = False):
        """``(Y [n, k], class names)`` over codes with at least ``min_count`` records."""
        counts: Dict[str, int] = {}
        for cs in self.codes:
            for c in set(cs):
                if scored_only and not (c in self.mapping and self.mapping[c].scored):
                    continue
                counts[c] = counts.get(c, 0) + 1
        classes = sorted(c for c, n in counts.items() if n >= min_count)
        Y = np.zeros((len(self), len(classes)), np.float32)
        for i, cs in enumerate(self.codes):
            for c in cs:
                if c in classes:
                    Y[i, classes.index(c)] = 1.0
        return Y, [self.name(c) for c in classes]
