"""The ``vector`` modality: fixed-length feature vectors (digits by default), the core's reference plugin.

``data:`` section::

    source: digits          # a DATASETS entry returning (X, y): digits | csv_vectors
    path: null              # csv_vectors file
    label_column: null
    mask_ratio: 0.5
    test_fraction: 0.3      # probe: fixed stratified split
    probe: {source: csv_vectors, path: other.csv, label_column: y}   # probe on other vectors (optional)

Transfer: ``data.probe`` names the probe vectors; they must have as many features as the pretraining
vectors (the encoder's ``in_dim``), else :meth:`VectorModality.check_probe_compatible` refuses before
pretraining.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset

from sslab.core.config import ConfigError, from_dict
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import DATASETS, MODALITIES
from sslab.datasets.vectors import VectorDataset
from sslab.objectives.masked_feature import MaskedFeatureCollate


@dataclass
class VectorDataConfig:
    source: str = "digits"  # a DATASETS entry returning (X, y): digits | csv_vectors
    path: Optional[str] = None
    label_column: Optional[str] = None
    mask_ratio: float = 0.5
    test_fraction: float = 0.3
    split_seed: int = 0
    probe: Dict[str, Any] = field(default_factory=dict)  # probe data: source, path, label_column, ...


@MODALITIES.register("vector")
class VectorModality(Modality):
    """Pretrain on all vectors (labels unused); probe on a fixed stratified train/test split."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.data_cfg = from_dict(VectorDataConfig, cfg.data, path="data")
        kwargs = {}
        if self.data_cfg.path is not None:
            kwargs["path"] = self.data_cfg.path
        if self.data_cfg.label_column is not None:
            kwargs["label_column"] = self.data_cfg.label_column
        self.X, self.y = DATASETS.build(self.data_cfg.source, **kwargs)

    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable[[Sequence[Any]], Any]]]:
        return VectorDataset(self.X, source=self.data_cfg.source), MaskedFeatureCollate(self.data_cfg.mask_ratio)

    def check_probe_compatible(self) -> None:
        twin = self.probe_twin()
        if twin is None:
            return
        d, t = self.data_cfg, twin.data_cfg  # type: ignore[attr-defined]
        here = f"{d.source}{' ' + d.path if d.path else ''}"
        there = f"{t.source}{' ' + t.path if t.path else ''}"
        if twin.X.shape[1] != self.X.shape[1]:  # type: ignore[attr-defined]
            raise ConfigError(f"data.probe: the probe vectors ({there}) have {twin.X.shape[1]} features, the "  # type: ignore[attr-defined]
                              f"pretraining vectors ({here}) {self.X.shape[1]}; the encoder takes "
                              f"{self.X.shape[1]}-d inputs")
        if twin.y is None:  # type: ignore[attr-defined]
            raise ConfigError(f"data.probe: the probe vectors ({there}) have no labels (set data.probe.label_column)")

    def probe_tasks(self) -> List[ProbeTask]:
        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        if self.y is None:
            return []
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(self.X))
        tr, te = train_test_split(idx, test_size=self.data_cfg.test_fraction,
                                  random_state=self.data_cfg.split_seed, stratify=self.y)
        mk = lambda ii: VectorDataset(self.X[ii], self.y[ii], with_labels=True, source=self.data_cfg.source)  # noqa: E731
        return [ProbeTask(self.data_cfg.source, "multiclass", mk(tr), mk(te))]

    def input_pipeline(self) -> Dict[str, Any]:
        """Rows of ``n_features`` raw values divided by ``scale`` (digits: the 0..16 pixel counts / 16)."""
        d = self.data_cfg
        columns = None
        if d.source == "csv_vectors" and d.path:
            import pandas as pd

            columns = [c for c in pd.read_csv(d.path, nrows=1).columns if c != d.label_column]
        return {"kind": "vector", "source": d.source, "n_features": int(self.X.shape[1]),
                "scale": 16.0 if d.source == "digits" else 1.0, "columns": columns, "label_column": d.label_column}

