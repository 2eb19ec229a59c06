"""PTB-XL labels (benchmark aggregation), splits, metadata errors; memmap record cache."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import wfdb

from sslab.datasets.ecg_cache import CachedCrops, ECGRecordCache
from sslab.datasets.ecg_ptbxl import PTBXL, aggregate_labels
from sslab.datasets.ecg_wfdb import LEADS_12, ECGRecordError, read_record


def _scp() -> pd.DataFrame:
    return pd.DataFrame(
        {"diagnostic": [1.0, 1.0, np.nan, np.nan], "form": [np.nan, 1.0, 1.0, np.nan],
         "rhythm": [np.nan, np.nan, np.nan, 1.0], "diagnostic_class": ["NORM", "MI", None, None],
         "diagnostic_subclass": ["NORM", "IMI", None, None]},
        index=["NORM", "IMI", "LVOLT", "SR"])


def test_aggregate_labels_benchmark_convention():
    scp = _scp()
    codes = {"IMI": 15.0, "LVOLT": 0.0, "SR": 0.0, "XYZ": 100.0}
    assert aggregate_labels(codes, scp, "all") == ["IMI", "LVOLT", "SR", "XYZ"]
    assert aggregate_labels(codes, scp, "diagnostic") == ["IMI"]
    assert aggregate_labels(codes, scp, "subdiagnostic") == ["IMI"]
    assert aggregate_labels(codes, scp, "superdiagnostic") == ["MI"]
    assert aggregate_labels(codes, scp, "form") == ["IMI", "LVOLT"]
    assert aggregate_labels(codes, scp, "rhythm") == ["SR"]
    assert aggregate_labels(codes, scp, "superdiagnostic", min_likelihood=50) == []
    with pytest.raises(ValueError, match="unknown PTB-XL label set 'foo'"):
        aggregate_labels(codes, scp, "foo")


def test_shared_ptbxl_labels_and_folds(shared_data):
    px = PTBXL(shared_data / "ecg" / "ptbxl", "superdiagnostic")
    assert px.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert len(px) == 308 and len(px.unlabeled) == 1  # one record has no diagnostic statement
    tr, te = px.split([1, 2, 3, 4, 5]), px.split([6, 7])
    assert len(tr.records) == 231 and len(te.records) == 77
    i = tr.ecg_ids.index(1)  # ecg_id 1: {'NORM': 100, 'LVOLT': 0, 'SR': 0}
    assert tr.labels[i].tolist() == [0, 0, 0, 1, 0] and tr.records[i].name == "00001_lr"
    assert len(PTBXL(shared_data / "ecg" / "ptbxl", "all").classes) == 49
    with pytest.raises(ECGRecordError, match=r"no records in strat_fold \[10\]"):
        px.split([10])
    with pytest.raises(ECGRecordError, match=r"records500/00000/00031_hr not found"):
        PTBXL(shared_data / "ecg" / "ptbxl", rate=500)
    px500 = PTBXL(shared_data / "ecg" / "ptbxl", rate=500, missing_records="skip")
    assert len(px500) == 19 and len(px500.missing) == 290
    rec = read_record(px500.split([1, 2, 3, 4, 5, 6, 7]).records[0], LEADS_12)
    assert rec.fs == 500 and rec.signal.shape == (12, 5000)


def test_metadata_errors(tmp_path, shared_data):
    src = shared_data / "ecg" / "ptbxl"
    (tmp_path / "scp_statements.csv").write_text((src / "scp_statements.csv").read_text())
    db = pd.read_csv(src / "ptbxl_database.csv").head(3)
    db.drop(columns=["strat_fold"]).to_csv(tmp_path / "ptbxl_database.csv", index=False)
    with pytest.raises(ECGRecordError, match=r"ptbxl_database.csv: missing column\(s\) \['strat_fold'\]"):
        PTBXL(tmp_path)
    db.loc[1, "scp_codes"] = "{'NORM': 100.0"
    db.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    with pytest.raises(ECGRecordError, match=r"ecg_id 2: bad scp_codes"):
        PTBXL(tmp_path, missing_records="skip")


def _records(tmp_path, n=5):
    rng = np.random.default_rng(0)
    for i in range(n):
        sig = rng.standard_normal((500 + 100 * i, 12)).round(3)
        wfdb.wrsamp(f"r{i}", fs=500, units=["mV"] * 12, sig_name=list(LEADS_12), p_signal=sig, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    return [tmp_path / f"r{i}" for i in range(n)]


def test_cache_matches_reader_and_is_incremental(tmp_path):
    (tmp_path / "data").mkdir()
    recs = _records(tmp_path / "data")
    cache = ECGRecordCache(recs, tmp_path / "cache", LEADS_12, 250, dtype="float32", workers=2, progress=False)
    for i, r in enumerate(recs):
        np.testing.assert_allclose(cache.get(i), read_record(r, LEADS_12, 250).signal, atol=1e-6)
    done = np.load(cache.dir / "done.npy")
    assert done.tolist() == [1] * 5
    # a build interrupted after 3 records resumes with the other 2
    np.save(cache.dir / "done.npy", np.array([1, 1, 1, 0, 0], np.uint8))
    data = np.load(cache.dir / "data.npy", mmap_mode="r+")
    data[:, cache.index["offsets"][4]:] = 0
    data.flush()
    del data
    again = ECGRecordCache(recs, tmp_path / "cache", LEADS_12, 250, dtype="float32", workers=1, progress=False)
    np.testing.assert_allclose(again.get(4), read_record(recs[4], LEADS_12, 250).signal, atol=1e-6)
    norm = again.fit_norm(again.valid_indices)
    crops = CachedCrops(again, again.valid_indices, 100, norm)
    assert tuple(crops[0].shape) == (12, 100)


def test_cache_bad_record_error_and_skip(tmp_path):
    (tmp_path / "data").mkdir()
    recs = _records(tmp_path / "data")
    dat = tmp_path / "data" / "r2.dat"
    dat.write_bytes(dat.read_bytes()[:100])
    with pytest.raises(ECGRecordError, match=r"r2: signal file r2.dat is truncated.*\(1 bad record\(s\) in total\)"):
        ECGRecordCache(recs, tmp_path / "c1", LEADS_12, None, workers=1, progress=False)
    cache = ECGRecordCache(recs, tmp_path / "c2", LEADS_12, None, workers=1, on_bad_record="skip", progress=False)
    assert cache.valid_indices == [0, 1, 3, 4] and len(cache.skipped) == 1
    with pytest.raises(ECGRecordError, match="skipped while caching"):
        cache.get(2)
