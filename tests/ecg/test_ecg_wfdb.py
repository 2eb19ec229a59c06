"""WFDB reader: wrsamp round trips, lead selection, resampling, bad-input errors, shared records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from sslab.datasets.ecg_wfdb import (LEADS_12, ECGRecordError, LeadNorm, WFDBFolder, read_record, random_crop,
                                     strided_crops)


def _write(tmp: Path, name: str = "rec", fs: int = 500, n: int = 2000, fmt: str = "16", seed: int = 0,
           leads=LEADS_12, comments=("Dx: 426783006",)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    sig = np.stack([np.sin(2 * np.pi * (1 + i) * t) * (0.5 + 0.1 * i) for i in range(len(leads))], 1)
    sig = np.round((sig + 0.01 * rng.standard_normal(sig.shape)) * 1000) / 1000
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig,
                fmt=[fmt] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
                comments=list(comments), write_dir=str(tmp))
    return sig.T.astype(np.float32)


def test_roundtrip_format16_and_comments(tmp_path):
    sig = _write(tmp_path)
    rec = read_record(tmp_path / "rec.hea")
    assert rec.leads == list(LEADS_12) and rec.fs == 500
    np.testing.assert_allclose(rec.signal, sig, atol=1e-6)
    assert rec.comments == ["Dx: 426783006"]


def test_roundtrip_format212(tmp_path):
    sig = _write(tmp_path, fmt="212", leads=("MLII", "V5"))
    rec = read_record(tmp_path / "rec")
    np.testing.assert_allclose(rec.signal, sig, atol=1e-6)


def test_lead_selection_case_insensitive_and_missing(tmp_path):
    sig = _write(tmp_path)
    rec = read_record(tmp_path / "rec", leads=["v1", "AVR", "ii"])
    assert rec.leads == ["V1", "aVR", "II"]
    np.testing.assert_allclose(rec.signal, sig[[6, 3, 1]], atol=1e-6)
    with pytest.raises(ECGRecordError, match=r"rec: lead 'V7' not in record; available leads: I, II"):
        read_record(tmp_path / "rec", leads=["I", "V7"])


def test_resample_preserves_a_sine(tmp_path):
    _write(tmp_path, fs=500, n=5000)
    rec = read_record(tmp_path / "rec", leads=["I"], fs=100)
    assert rec.fs == 100 and rec.signal.shape == (1, 1000)
    t = np.arange(1000) / 100
    ref = 0.5 * np.sin(2 * np.pi * t)
    assert np.abs(rec.signal[0, 20:-20] - ref[20:-20]).max() < 0.05


def test_truncated_dat(tmp_path):
    _write(tmp_path)
    dat = tmp_path / "rec.dat"
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(ECGRecordError, match=r"rec\.dat is truncated: header implies 48000 bytes"):
        read_record(tmp_path / "rec")


def test_header_data_size_mismatch(tmp_path):
    _write(tmp_path)
    dat = tmp_path / "rec.dat"
    dat.write_bytes(dat.read_bytes() + b"\0" * 480)
    with pytest.raises(ECGRecordError, match="header/data size mismatch"):
        read_record(tmp_path / "rec")


def test_unknown_format(tmp_path):
    _write(tmp_path)
    hea = tmp_path / "rec.hea"
    hea.write_text(hea.read_text().replace("rec.dat 16 ", "rec.dat 99 "))
    with pytest.raises(ECGRecordError, match="rec"):
        read_record(tmp_path / "rec")


def test_nan_and_flat_leads(tmp_path):
    sig = _write(tmp_path, leads=("I", "II"))
    d = np.round(sig.T * 1000).astype(np.int16)
    d[10:20, 1] = -32768  # WFDB's invalid-sample value -> NaN
    wfdb.wrsamp("nan", fs=500, units=["mV"] * 2, sig_name=["I", "II"], d_signal=d, fmt=["16"] * 2,
                adc_gain=[1000.0] * 2, baseline=[0] * 2, write_dir=str(tmp_path))
    with pytest.raises(ECGRecordError, match=r"nan: lead II has 10 NaN/inf samples"):
        read_record(tmp_path / "nan")
    d = np.round(sig.T * 1000).astype(np.int16)
    d[:, 0] = 7
    wfdb.wrsamp("flat", fs=500, units=["mV"] * 2, sig_name=["I", "II"], d_signal=d, fmt=["16"] * 2,
                adc_gain=[1000.0] * 2, baseline=[0] * 2, write_dir=str(tmp_path))
    with pytest.raises(ECGRecordError, match=r"flat: lead I is flat"):
        read_record(tmp_path / "flat")
    assert read_record(tmp_path / "flat", allow_flat=True).signal.shape == (2, 2000)


def test_unexpected_rate_and_missing_header(tmp_path):
    _write(tmp_path, fs=250)
    with pytest.raises(ECGRecordError, match=r"recorded at 250 Hz, expected 500 Hz"):
        read_record(tmp_path / "rec", expected_fs=500)
    with pytest.raises(ECGRecordError, match=r"nope\.hea not found"):
        read_record(tmp_path / "nope")


def test_folder_error_and_counted_skip(tmp_path):
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    (tmp_path / "b.dat").write_bytes((tmp_path / "b.dat").read_bytes()[:50])
    with pytest.raises(ECGRecordError, match="b.dat is truncated"):
        WFDBFolder(tmp_path)
    ds = WFDBFolder(tmp_path, on_bad_record="skip", crop=500)
    assert len(ds) == 1 and len(ds.skipped) == 1 and "truncated" in ds.skipped[0][1]
    assert tuple(ds[0].shape) == (12, 500)


def test_norm_and_crops():
    rng = np.random.default_rng(0)
    xs = [rng.normal(3.0, 2.0, (2, 1000)).astype(np.float32) for _ in range(4)]
    norm = LeadNorm.fit(xs, clip=3.0)
    np.testing.assert_allclose(norm.mean, [3.0, 3.0], atol=0.1)
    np.testing.assert_allclose(norm.std, [2.0, 2.0], atol=0.1)
    y = norm(xs[0])
    assert abs(y.std() - 1) < 0.1 and y.max() <= 3.0
    x = np.arange(1000, dtype=np.float32)[None]
    c = strided_crops(x, 250, 125)
    assert c.shape == (7, 1, 250) and c[-1, 0, -1] == 999 and c[1, 0, 0] == 125
    np.random.seed(0)
    r = random_crop(x, 250)
    assert r.shape == (1, 250) and r[0, 1] - r[0, 0] == 1


def test_shared_records(shared_data):
    ecg = shared_data / "ecg"
    mit = read_record(ecg / "mitdb" / "100.hea")  # leading comment + blank line in the header
    assert mit.leads == ["MLII", "V5"] and mit.fs == 360 and mit.signal.shape == (2, 650000)
    assert "69 M 1085 1629 x1" in mit.comments
    cinc = read_record(ecg / "cinc2021" / "E07500", leads=["ii", "v1"], fs=100)
    assert cinc.signal.shape == (2, 1000) and "Dx: 67741000119109,426177001" in cinc.comments
    ptb = read_record(ecg / "ptbdb" / "s0010_re", leads=LEADS_12)  # lower-case lead names in this header
    assert ptb.leads[0] == "i" and ptb.signal.shape == (12, 38400)
    lr = read_record(ecg / "ptbxl" / "records100" / "00000" / "00001_lr", leads=LEADS_12)
    hr = read_record(ecg / "ptbxl" / "records500" / "00000" / "00001_hr", leads=LEADS_12, fs=100)
    assert lr.signal.shape == hr.signal.shape == (12, 1000)
    # the 100 Hz file is PhysioNet's own downsampling of the 500 Hz one: same waveform
    assert np.corrcoef(lr.signal[1], hr.signal[1])[0, 1] > 0.95
