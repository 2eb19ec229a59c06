"""Fixed-length feature vectors: scikit-learn's bundled digits (no download) or a numeric CSV."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.core.registry import DATASETS


class VectorDataset(Dataset):
    """``X [N, D]`` float features with optional labels; items are vectors or ``(vector, label)``."""

    def __init__(self, X: np.ndarray, y: Optional[np.ndarray] = None, with_labels: bool = False,
                 source: str = "array") -> None:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"{source}: expected a non-empty [N, D] feature matrix, got shape {X.shape}")
        bad = ~np.isfinite(X)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))[:5].tolist()
            raise ValueError(f"{source}: {int(bad.sum())} NaN/inf values (first rows: {rows})")
        if with_labels and y is None:
            raise ValueError(f"{source}: labels requested but none given")
        self.X, self.y, self.with_labels = torch.from_numpy(X), y, with_labels

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        if self.with_labels:
            return self.X[i], torch.as_tensor(self.y[i])  # type: ignore[index]
        return self.X[i]


@DATASETS.register("digits")
def load_digits_arrays(scale: float = 16.0) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (bundled with the package) as ``[N, 64]`` in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32) / scale, d.target.astype(np.int64)


@DATASETS.register("csv_vectors")
def load_csv_vectors(path: str, label_column: Optional[str] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """All numeric columns of a CSV as features; ``label_column`` (optional) as labels."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CSV not found: {p}")
    df = pd.read_csv(p)
    y = None
    if label_column is not None:
        if label_column not in df.columns:
            raise ValueError(f"{p}: label column {label_column!r} not in columns {list(df.columns)}")
        y = df.pop(label_column).to_numpy()
    non_numeric = [c for c in df.columns if not np.issubdtype(df[c].dtype, np.number)]
    if non_numeric:
        raise ValueError(f"{p}: non-numeric columns {non_numeric}; use the table modality for mixed tables")
    return df.to_numpy(np.float32), y
