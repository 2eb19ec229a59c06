"""``ecg`` pipeline: WFDB record -> leads by name -> resample to ``fs`` -> storage dtype -> per-lead
``clip((x - mean) / std)`` -> ``crop_samples`` windows every ``eval_stride_samples`` -> the encoder's
mean-pooled tokens averaged over the record's crops (ECG-JEPA's evaluation, Weimann & Conrad 2024)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from sslab.core.pipeline import InputMismatch, InputPipeline, PathLike
from sslab.core.registry import PIPELINES


def ptbxl_records(root: Path, rate: int) -> List[Path]:
    """Every record of a PTB-XL folder (``ptbxl_database.csv`` order), at 100 Hz or 500 Hz."""
    import pandas as pd

    db = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    col = "filename_lr" if int(rate) == 100 else "filename_hr"
    return [root / str(f) for f in db[col]]


@PIPELINES.register("ecg")
class ECGPipeline(InputPipeline):
    """Spec keys: ``fs``, ``leads`` (in order), ``storage_dtype``, ``norm`` ({mean, std, clip} or null),
    ``crop_samples``, ``eval_stride_samples``, ``ptbxl_rate``. Any sampling rate is accepted (resampled to
    ``fs`` with ``scipy.signal.resample_poly``, as in training); a missing lead is an error."""

    usage = 'enc.embed_raw(signal, fs=500, leads=names)   # signal: [leads, samples]'

    def _norm(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(self.spec.get("storage_dtype", "float32")).astype(np.float32)  # what the cache stored
        norm = self.spec.get("norm")
        if norm:
            from sslab.datasets.ecg_wfdb import LeadNorm

            x = LeadNorm(np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32), norm.get("clip"))(x)
        return x

    def _crops(self, x: np.ndarray) -> torch.Tensor:
        from sslab.datasets.ecg_wfdb import strided_crops

        crops = strided_crops(self._norm(x), int(self.spec["crop_samples"]), int(self.spec["eval_stride_samples"]))
        return torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))

    def _leads_index(self, available: Sequence[str], where: str) -> List[int]:
        want = list(self.spec["leads"])
        lower = [a.lower() for a in available]
        missing = [lead for lead in want if lead.lower() not in lower]
        if missing:
            raise InputMismatch(f"{where}: the encoder expects leads {want} (in this order); missing "
                                f"{missing} (the input has {list(available)})")
        return [lower.index(lead.lower()) for lead in want]

    def preprocess(self, raw: Any, fs: Optional[float] = None, leads: Optional[Sequence[str]] = None,
                   **meta: Any) -> List[torch.Tensor]:
        """``raw``: a ``[leads, samples]`` array (give ``fs``; ``leads`` names its rows, default the
        encoder's order) or an :class:`~sslab.datasets.ecg_wfdb.ECGRecord`. Returns one crops item."""
        from sslab.datasets.ecg_wfdb import ECGRecord, resample

        if isinstance(raw, ECGRecord):
            x, fs, leads = raw.signal, raw.fs, raw.leads
        else:
            x = np.asarray(raw, dtype=np.float32)
        want = list(self.spec["leads"])
        if x.ndim != 2:
            raise InputMismatch(f"ECG input must be [leads, samples], got shape {x.shape}")
        if fs is None:
            raise InputMismatch(f"ECG input: pass fs= (its sampling rate; the encoder resamples to {self.spec['fs']} Hz)")
        if leads is None:
            if x.shape[0] != len(want):
                raise InputMismatch(f"ECG input has {x.shape[0]} leads; the encoder expects {len(want)}: {want} "
                                    "(pass leads= to select them by name)")
        else:
            if len(leads) != x.shape[0]:
                raise InputMismatch(f"ECG input: {len(leads)} lead names for {x.shape[0]} rows")
            x = x[self._leads_index(leads, "ECG input")]
        if not np.isfinite(x).all():
            raise InputMismatch("ECG input has NaN/inf samples")
        return [self._crops(resample(x, float(fs), float(self.spec["fs"])))]

    def _records(self, paths: Sequence[PathLike]) -> List[Path]:
        from sslab.datasets.ecg_wfdb import find_records, record_base

        out: List[Path] = []
        for p in map(Path, paths):
            if p.is_dir() and (p / "ptbxl_database.csv").is_file():
                out += ptbxl_records(p, int(self.spec.get("ptbxl_rate", 100)))
            elif p.is_dir():
                out += find_records(p)
            elif record_base(p).with_suffix(".hea").is_file():
                out.append(record_base(p))
            else:
                raise FileNotFoundError(f"{p}: not a WFDB record, a WFDB folder or a PTB-XL folder")
        return out

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """WFDB records (``.hea`` + signal), WFDB folders (recursive) or PTB-XL folders; row = record."""
        from sslab.datasets.ecg_wfdb import read_header, read_record

        for rec in self._records(paths):
            self._leads_index(read_header(rec).sig_name, str(rec))
            signal = read_record(rec, list(self.spec["leads"]), float(self.spec["fs"])).signal
            yield str(rec), self._crops(signal)

    def collate(self, items: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {"crops": torch.cat(list(items)), "counts": torch.tensor([len(c) for c in items])}

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        from sslab.modalities.ecg import crop_averaged_embedding

        return crop_averaged_embedding(encoder, inputs)

    def describe(self) -> List[str]:
        s = self.spec
        norm = s.get("norm")
        return [f"- sampling rate {s['fs']} Hz (other rates are resampled: scipy `resample_poly`)",
                f"- leads, in order: {', '.join(s['leads'])}",
                f"- samples stored as {s.get('storage_dtype')} (as in the training cache)",
                "- per-lead normalisation: " + (f"clip((x - mean) / std, +-{norm.get('clip')}) with the constants "
                                                f"of {norm.get('fitted_on', 'the training records')}"
                                                if norm else "none"),
                f"- crops of {s['crop_samples']} samples ({s.get('crop_seconds')} s) every "
                f"{s['eval_stride_samples']} samples ({s.get('eval_stride_seconds')} s); last crop end-aligned",
                f"- features: {s.get('pooling')}"]
