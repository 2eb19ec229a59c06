"""Records shorter than the crop (error by default, counted pad/skip) and a record cache keyed on the files'
identity and the bad-record policy, which never turns `on_bad_record: error` into a skip (issue 17)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from sslab.datasets.ecg_cache import CachedCrops, ECGRecordCache
from sslab.datasets.ecg_wfdb import LEADS_12, ECGRecordError, WFDBFolder


def _write(folder: Path, name: str, n: int, seed: int = 0, flat_lead: bool = False) -> Path:
    sig = np.random.default_rng(seed).standard_normal((n, 12)).round(3)
    if flat_lead:
        sig[:, 4] = 0.25
    wfdb.wrsamp(name, fs=100, units=["mV"] * 12, sig_name=list(LEADS_12), p_signal=sig, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return folder / name


def test_records_shorter_than_the_crop(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    recs = [_write(data, "a_short", 200), _write(data, "b", 500, 1), _write(data, "c", 400, 2)]  # 2 s vs 2.5 s crop
    cache = ECGRecordCache(recs, tmp_path / "cache", LEADS_12, 100, workers=1, progress=False)
    with pytest.raises(ECGRecordError, match=r"a_short: 200 samples \(2\.00 s at 100 Hz\) is shorter than the crop of "
                                             r"250 samples \(2\.50 s\); 1 of 3 record\(s\).*data\.short_records: pad"):
        CachedCrops(cache, cache.valid_indices, 250, None)
    padded = CachedCrops(cache, cache.valid_indices, 250, None, short_records="pad")
    assert len(padded) == 3 and padded.short == [str(recs[0])]
    x = padded[0]
    assert tuple(x.shape) == (12, 250) and float(x[:, 200:].abs().sum()) == 0.0
    skipped = CachedCrops(cache, cache.valid_indices, 250, None, short_records="skip")
    assert len(skipped) == 2 and skipped.short == [str(recs[0])] and skipped.indices == [1, 2]
    # the lazy folder reader applies the same policy (lengths after resampling to 50 Hz: 100, 250, 200)
    with pytest.raises(ECGRecordError, match=r"a_short: 100 samples .* shorter than the crop of 120"):
        WFDBFolder(data, fs=50, crop=120)
    assert len(WFDBFolder(data, fs=50, crop=120, short_records="skip")) == 2
    ds = WFDBFolder(data, fs=50, crop=120, short_records="pad")
    assert len(ds) == 3 and ds.short == [str(recs[0])] and tuple(ds[0].shape) == (12, 120)


def test_cache_keeps_the_error_policy_and_follows_replaced_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    recs = [_write(data, f"r{i}", 300, i, flat_lead=(i == 2)) for i in range(4)]  # r2 passes the header scan
    for _ in range(2):  # the second run must fail again, not train on the 3 others
        with pytest.raises(ECGRecordError, match=r"r2: lead aVL is flat"):
            ECGRecordCache(recs, tmp_path / "cache", LEADS_12, None, workers=1, progress=False)
    skip = ECGRecordCache(recs, tmp_path / "cache", LEADS_12, None, workers=1, on_bad_record="skip", progress=False)
    assert skip.valid_indices == [0, 1, 3] and list(skip.skipped) == [str(recs[2])]
    _write(data, "r2", 320, 2)  # the bad file replaced by a good one
    for policy in ("error", "skip"):
        cache = ECGRecordCache(recs, tmp_path / "cache", LEADS_12, None, workers=1, on_bad_record=policy,
                               progress=False)
        assert cache.valid_indices == [0, 1, 2, 3] and not cache.skipped and cache.dir != skip.dir
        assert cache.get(2).shape == (12, 320)
