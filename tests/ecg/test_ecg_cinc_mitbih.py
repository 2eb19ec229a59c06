"""CinC 2021 SNOMED Dx mapping and MIT-BIH beat windows with AAMI classes (shared records + errors)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from sslab.datasets.ecg_cinc import CinC2021, header_fields
from sslab.datasets.ecg_mitbih import AAMI_MAP, BeatDataset, beat_windows
from sslab.datasets.ecg_wfdb import ECGRecordError


def test_cinc_dx_names(shared_data):
    c = CinC2021(shared_data / "ecg" / "cinc2021")
    assert len(c) == 32
    i = [r.name for r in c.records].index("E07500")
    assert c.codes[i] == ["67741000119109", "426177001"]
    assert c.label_names(i) == ["LAE", "SB"]
    assert c.label_names(i, abbreviation=False) == ["left atrial enlargement", "sinus bradycardia"]
    assert c.fields[i]["Age"] == "78" and c.fields[i]["Sex"] == "Male"
    Y, names = c.multi_hot(min_count=3)
    assert Y.shape == (32, len(names)) and "NSR" in names and (Y.sum(0) >= 3).all()


def test_cinc_unknown_code(tmp_path, shared_data):
    src = shared_data / "ecg" / "cinc2021"
    for f in ("E07500.hea", "E07500.mat", "dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        shutil.copy(src / f, tmp_path / f)
    hea = tmp_path / "E07500.hea"
    hea.write_text(hea.read_text().replace("# Dx: 67741000119109,426177001", "# Dx: 999999,426177001"))
    with pytest.raises(ECGRecordError, match=r"E07500: Dx code 999999 is not in the SNOMED mapping"):
        CinC2021(tmp_path)
    c = CinC2021(tmp_path, unknown_codes="keep")
    assert c.label_names(0) == ["SNOMED:999999", "SB"]
    assert header_fields(["Age: 5", "no colon"]) == {"Age": "5"}


def test_mitbih_beats_aami(shared_data):
    b = beat_windows(shared_data / "ecg" / "mitdb" / "100", before=0.25, after=0.45)
    # 2274 annotations: 2239 N, 33 A, 1 V, 1 '+' (rhythm); 2 N beats too close to the record edges
    assert b.skipped == {"non-beat '+'": 1, "edge": 2}
    assert np.bincount(b.y, minlength=5).tolist() == [2237, 33, 1, 0, 0]
    assert b.x.shape == (2271, 2, 252) and b.leads == ["MLII", "V5"]
    # windows are centred on R peaks: the MLII maximum sits near sample 0.25 s * 360 Hz = 90
    peak = np.argmax(b.x[:200, 0], axis=1)
    assert np.median(np.abs(peak - 90)) <= 5
    ds = BeatDataset(b, [0, 5])
    x, y = ds[1]
    assert tuple(x.shape) == (2, 252) and y == 0


def test_mitbih_resampled_svdb(shared_data):
    b = beat_windows(shared_data / "ecg" / "svdb" / "800", fs=360)
    assert b.fs == 360 and b.x.shape[2] == 252
    assert b.skipped["non-beat '~'"] == 28 and sum(np.bincount(b.y)) + sum(b.skipped.values()) == 1921


def test_aami_map_and_missing_annotations(tmp_path):
    assert {AAMI_MAP[s] for s in "NLRej"} == {"N"} and AAMI_MAP["E"] == "V" and AAMI_MAP["/"] == "Q"
    with pytest.raises(ECGRecordError, match=r"annotation file x.atr not found"):
        beat_windows(tmp_path / "x")
