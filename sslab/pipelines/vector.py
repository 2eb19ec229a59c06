"""``vector`` pipeline: rows of ``n_features`` numbers, divided by ``scale`` (digits: raw 0..16 pixel counts)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from sslab.core.pipeline import InputMismatch, InputPipeline, PathLike, expand_paths
from sslab.core.registry import PIPELINES


@PIPELINES.register("vector")
class VectorPipeline(InputPipeline):
    """Spec: ``n_features``, ``scale`` (inputs are ``raw / scale``), ``columns`` (CSV feature names or null),
    ``label_column`` (dropped from CSV input when present)."""

    usage = 'enc.embed_raw(rows)   # [N, F] raw values'

    def _rows(self, X: np.ndarray, where: str) -> List[torch.Tensor]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None]
        n = int(self.spec["n_features"])
        if X.ndim != 2 or X.shape[1] != n:
            raise InputMismatch(f"{where}: expected rows of {n} features, got shape {X.shape}")
        bad = ~np.isfinite(X)
        if bad.any():
            raise InputMismatch(f"{where}: {int(bad.sum())} NaN/inf values (first row {int(np.argmax(bad.any(1)))})")
        X = (X.astype(np.float32) / np.float32(self.spec.get("scale", 1.0))).astype(np.float32)
        return list(torch.from_numpy(np.ascontiguousarray(X)))

    def preprocess(self, raw: Any, **meta: Any) -> List[torch.Tensor]:
        """``raw``: one vector ``[F]`` or rows ``[N, F]`` of raw values (before ``scale``)."""
        return self._rows(np.asarray(raw), "input")

    def _read_csv(self, path: Path) -> np.ndarray:
        import pandas as pd

        df = pd.read_csv(path)
        label = self.spec.get("label_column")
        if label and label in df.columns:
            df = df.drop(columns=[label])
        cols = self.spec.get("columns")
        if cols:
            missing = [c for c in cols if c not in df.columns]
            extra = [c for c in df.columns if c not in cols]
            if missing or extra:
                raise InputMismatch(f"{path}: columns differ from the encoder's: missing {missing}, unexpected "
                                    f"{extra}; expected {cols}")
            df = df[cols]
        non_numeric = [c for c in df.columns if not np.issubdtype(df[c].dtype, np.number)]
        if non_numeric:
            raise InputMismatch(f"{path}: non-numeric columns {non_numeric}")
        return df.to_numpy(np.float64)

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """``.npy`` ``[N, F]`` arrays or CSV files (one row per vector); row names ``file:row``."""
        for path in expand_paths(paths, (".npy", ".csv")):
            X = np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else self._read_csv(path)
            for i, row in enumerate(self._rows(X, str(path))):
                yield f"{path}:{i}", row

    def describe(self) -> List[str]:
        s = self.spec
        return [f"- input: rows of {s['n_features']} numbers (`.npy` [N, {s['n_features']}] or CSV), divided by "
                f"{s.get('scale', 1.0)} (source `{s.get('source')}`)",
                "- features: the MLP's single token (no pooling beyond it)"]
