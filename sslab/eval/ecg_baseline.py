"""Hand-crafted ECG features (neurokit2 intervals + HRV + per-lead wave amplitudes) for a baseline probe.

Makowski et al. 2021 (NeuroKit2).  Per record: R peaks on a reference lead (``nk.ecg_peaks``), wave
peaks (``nk.ecg_delineate``, method ``peak``), then

* rhythm: mean / std heart rate, SDNN, RMSSD (ms)
* intervals (medians, ms): P->R, Q->S (QRS proxy), R->T, Q->T (QT proxy)
* per lead: median amplitude at the P, Q, R, S, T peaks of the reference lead, and the lead's std

Records where neurokit finds fewer than 3 R peaks or no waves get NaN features; they are imputed with
the training medians and *counted* (``n_failed``), never dropped.
"""
from __future__ import annotations

import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

WAVES = ("P", "Q", "R", "S", "T")


def feature_names(leads: Sequence[str]) -> List[str]:
    names = ["hr_mean", "hr_std", "sdnn_ms", "rmssd_ms", "pr_ms", "qrs_ms", "rt_ms", "qt_ms"]
    for lead in leads:
        names += [f"{lead}_{w}_amp" for w in WAVES] + [f"{lead}_std"]
    return names


def record_features(signal: np.ndarray, fs: float, ref_lead: int = 1) -> np.ndarray:
    """``[leads, T]`` mV -> feature vector (NaN where neurokit could not measure)."""
    import neurokit2 as nk

    n_leads = signal.shape[0]
    out = np.full(8 + 6 * n_leads, np.nan)
    out[8 + 5::6] = signal.std(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clean = nk.ecg_clean(signal[ref_lead], sampling_rate=int(fs))
            _, info = nk.ecg_peaks(clean, sampling_rate=int(fs))
            r = np.asarray(info["ECG_R_Peaks"], dtype=int)
        except Exception:  # neurokit raises on degenerate signals
            return out
        if len(r) < 3:
            return out
        rr = np.diff(r) / fs
        hr = 60.0 / rr
        out[0:4] = [hr.mean(), hr.std(), rr.std() * 1000, np.sqrt(np.mean(np.diff(rr) ** 2)) * 1000]
        waves: Dict[str, np.ndarray] = {"R": r.astype(float)}
        try:
            _, d = nk.ecg_delineate(clean, r, sampling_rate=int(fs), method="peak")
            for w in ("P", "Q", "S", "T"):
                waves[w] = np.asarray(d.get(f"ECG_{w}_Peaks", []), dtype=float)
        except Exception:
            pass

    def interval(a: str, b: str) -> float:
        if a not in waves or b not in waves or len(waves[a]) != len(waves[b]):
            return np.nan
        diff = (waves[b] - waves[a]) / fs * 1000
        diff = diff[np.isfinite(diff) & (diff > 0)]
        return float(np.median(diff)) if len(diff) else np.nan

    out[4:8] = [interval("P", "R"), interval("Q", "S"), interval("R", "T"), interval("Q", "T")]
    for j, w in enumerate(WAVES):
        idx = waves.get(w)
        if idx is None:
            continue
        idx = idx[np.isfinite(idx)].astype(int)
        idx = idx[(idx >= 0) & (idx < signal.shape[1])]
        if len(idx):
            out[8 + j::6] = np.median(signal[:, idx], axis=1)
    return out


def extract(signals: Iterable[np.ndarray], fs: float, ref_lead: int = 1, progress: Optional[bool] = None) -> np.ndarray:
    """Feature matrix ``[n, F]`` (NaN where unmeasurable) for an iterable of ``[leads, T]`` records."""
    from tqdm.auto import tqdm

    from sslab.core.progress import show_progress

    return np.stack([record_features(s, fs, ref_lead) for s in tqdm(signals, desc="neurokit2 features",
                                                                      disable=not show_progress(progress))])


def impute(X_train: np.ndarray, X_test: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """Replace NaNs with training medians (0 for all-NaN columns); report what was imputed."""
    med = np.nanmedian(np.where(np.isfinite(X_train), X_train, np.nan), axis=0) if len(X_train) else None
    med = np.where(np.isfinite(med), med, 0.0)
    stats = {"train_records_with_nan": int(np.isnan(X_train).any(1).sum()),
             "test_records_with_nan": int(np.isnan(X_test).any(1).sum()),
             "train_records_failed": int(np.isnan(X_train[:, 0]).sum()),
             "test_records_failed": int(np.isnan(X_test[:, 0]).sum())}
    fill = lambda X: np.where(np.isnan(X), med[None, :], X)  # noqa: E731
    return fill(X_train), fill(X_test), stats


def baseline_probe(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
                   task: str, C: float = 1.0) -> Dict[str, float]:
    """Logistic/ridge regression on imputed, standardised hand-crafted features (core linear probe)."""
    from sslab.eval.probe import linear_probe

    Xtr, Xte, stats = impute(X_train, X_test)
    res = linear_probe(Xtr, y_train, Xte, y_test, task, C=C)
    res.update(stats)
    return res
