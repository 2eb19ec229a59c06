"""Synthetic ECGs: ECGSYN agrees with neurokit2, labels match the signals, generation is cached."""
from __future__ import annotations

import time

import numpy as np
import neurokit2 as nk
import pytest

from sslab.datasets.ecg_synthetic import (_AI, _BI, _TI, MORPHOLOGIES, SyntheticECG, SyntheticECGConfig, ecgsyn,
                                          generate, simulate_record)


@pytest.mark.parametrize("hr", [60, 120])
def test_ecgsyn_matches_neurokit2(hr):
    """Same model, constant RR: our exact-filter integration vs neurokit's solve_ivp (min-max scaled)."""
    ref = nk.ecg_simulate(duration=6, sampling_rate=500, heart_rate=hr, heart_rate_std=0, noise=0,
                          method="ecgsyn", random_state=1)
    f = np.sqrt(hr / 60)
    z = ecgsyn(np.full(20, 60 / hr), 6, 500, _AI, _BI * f, _TI * np.array([np.sqrt(f), f, 1, f, np.sqrt(f)]),
               np.ones((1, 5)))[0]
    z = (z - z.min()) * 1.6 / np.ptp(z) - 0.4
    assert np.corrcoef(ref[500:], z[500:])[0, 1] > 0.99


def test_records_are_deterministic_and_labelled():
    cfg = SyntheticECGConfig(n_records=8, seed=3)
    x1, l1 = simulate_record(cfg, 5)
    x2, l2 = simulate_record(cfg, 5)
    np.testing.assert_array_equal(x1, x2)
    assert l1 == l2 and x1.shape == (12, 1000) and np.isfinite(x1).all()
    assert not np.array_equal(x1, simulate_record(cfg, 6)[0])
    assert l1["rhythm"] == (0 if l1["heart_rate"] < 60 else 1 if l1["heart_rate"] <= 100 else 2)


def test_heart_rate_label_matches_detected_rate():
    cfg = SyntheticECGConfig(n_records=40, noise_range=(0.0, 0.02), fs=250)
    errs = []
    for i in range(12):
        x, lab = simulate_record(cfg, i)
        if MORPHOLOGIES[lab["morphology"]] == "af_like":
            continue
        _, info = nk.ecg_peaks(x[7], sampling_rate=250)  # V2: tallest R in neurokit's gains
        rate = 60 / np.mean(np.diff(info["ECG_R_Peaks"]) / 250)
        errs.append(abs(rate - lab["heart_rate"]) / lab["heart_rate"])
    assert len(errs) >= 6 and np.median(errs) < 0.05


def test_morphologies_change_the_signal():
    cfg = SyntheticECGConfig(n_records=200, noise_range=(0.0, 0.0), wander_range=(0.0, 0.0), gain_jitter=0.0)
    amp = {m: [] for m in MORPHOLOGIES}
    for i in range(60):
        x, lab = simulate_record(cfg, i)
        amp[MORPHOLOGIES[lab["morphology"]]].append(np.ptp(x[7]))
    assert np.mean(amp["low_voltage"]) < 0.6 * np.mean(amp["normal"])


def test_generate_caches(tmp_path):
    cfg = SyntheticECGConfig(n_records=6, duration=5.0)
    sig, lab = generate(cfg, tmp_path, workers=2, progress=False)
    assert sig.shape == (6, 12, 500) and set(lab) == {"heart_rate", "hrv", "noise", "morphology", "rhythm"}
    t = time.perf_counter()
    sig2, lab2 = generate(cfg, tmp_path, workers=2, progress=False)
    assert time.perf_counter() - t < 0.5
    np.testing.assert_array_equal(np.asarray(sig2), sig)
    np.testing.assert_array_equal(sig[2], simulate_record(cfg, 2)[0])
    ds = SyntheticECG(sig2, lab2, [0, 1, 2], crop=250, label="morphology")
    x, y = ds[1]
    assert tuple(x.shape) == (12, 250) and y == lab["morphology"][1]
    with pytest.raises(KeyError, match="unknown synthetic label 'qt'"):
        SyntheticECG(sig2, lab2, [0], label="qt")
