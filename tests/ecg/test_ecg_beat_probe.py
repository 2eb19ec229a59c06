"""Beat-level AAMI probe: resampling, lead placement by name, time/record splits, one-split classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sslab.core.config import ConfigError, load_experiment
from sslab.datasets.ecg_beat_probe import BeatProbeConfig, fit_beat_norm, load_beat_probe
from sslab.datasets.ecg_wfdb import LEADS_12, ECGRecordError
from sslab.modalities.ecg import ECGModality

FS = 360


def _write_record(folder: Path, name: str, symbols: str, sig_name=("MLII", "V1"), rr: float = 0.8) -> np.ndarray:
    """A record with one beat every ``rr`` s (symbols in order; ``+`` is a rhythm annotation, not a beat).

    MLII: a narrow positive spike per beat, V1: a negative one, so lead placement is visible."""
    import wfdb

    n = len(symbols)
    T = int((n + 1) * rr * FS)
    t = np.arange(T)
    samples = np.array([int((i + 1) * rr * FS) for i in range(n)])
    sig = np.zeros((T, 2))
    for s, sym in zip(samples, symbols):
        width = 12.0 if sym == "V" else 4.0  # wide QRS for V beats
        sig[:, 0] += np.exp(-0.5 * ((t - s) / width) ** 2)
        sig[:, 1] -= 0.5 * np.exp(-0.5 * ((t - s) / width) ** 2)
    sig += 0.01 * np.random.default_rng(0).standard_normal(sig.shape)
    wfdb.wrsamp(name, fs=FS, units=["mV", "mV"], sig_name=list(sig_name), p_signal=sig, fmt=["16", "16"],
                write_dir=str(folder))
    wfdb.wrann(name, "atr", samples, np.array(list(symbols)), write_dir=str(folder))
    return samples


def test_tiny_record_time_split_and_lead_layout(tmp_path):
    # 20 beats: N except a V in each half and a rhythm '+' annotation (not a beat, counted)
    _write_record(tmp_path, "r1", "NNNVNNNNN+NNNNNNVNNNN")
    d = load_beat_probe(BeatProbeConfig(path=str(tmp_path), train_fraction=0.5), 100, LEADS_12)
    assert d.split == "time" and d.x.shape == (20, 12, 70)  # 0.25 + 0.45 s at 100 Hz
    # annotation k sits at k * 0.8 s of a 22 * 0.8 s record: the first 10 annotations (9 beats) lie before 50 %
    assert d.counts("train") == {"N": 8, "S": 0, "V": 1, "F": 0, "Q": 0}
    assert d.counts("test") == {"N": 10, "S": 0, "V": 1, "F": 0, "Q": 0}
    assert d.skipped == {"non-beat '+'": 1} and d.excluded == {}
    ii, v1 = LEADS_12.index("II"), LEADS_12.index("V1")
    assert d.lead_sources == {"II": "r1:MLII", "V1": "r1:V1"}
    # MLII -> II (positive R peak at 0.25 s = sample 25), V1 -> V1 (negative), the other 10 leads exactly zero
    assert np.all(np.argmax(d.x[:, ii], axis=1) == 25) and np.all(np.argmin(d.x[:, v1], axis=1) == 25)
    assert abs(d.x[:, ii].max() - 1.0) < 0.1
    others = [i for i in range(12) if i not in (ii, v1)]
    assert not d.x[:, others].any()
    # the train split holds the early beats only
    assert d.train[:9].all() and not d.train[9:].any()
    norm = fit_beat_norm(d, clip=5.0)
    assert norm.std[others].tolist() == [1.0] * 10 and not norm(d.x[0])[others].any()


def test_one_split_classes_error_or_counted_exclusion(tmp_path):
    _write_record(tmp_path, "r1", "NNNNNNNNNNNNNVNNNNNN")  # the only V is in the test half
    cfg = BeatProbeConfig(path=str(tmp_path), train_fraction=0.5)
    with pytest.raises(ValueError, match=r"AAMI class V has 0 train and 1 test beats \(time split of \['r1'\]\)"):
        load_beat_probe(cfg, 100, LEADS_12)
    cfg.one_split_classes = "exclude"
    with pytest.raises(ValueError, match="only one AAMI class in the train split"):
        load_beat_probe(cfg, 100, LEADS_12)  # N alone is no probe
    _write_record(tmp_path, "r1", "NNSNNNNNNNNNNVNNNSNN")
    d = load_beat_probe(cfg, 100, LEADS_12)
    assert d.excluded == {"V": 1} and len(d.y) == 19 and 2 not in d.y


def test_record_split_and_lead_errors(tmp_path):
    _write_record(tmp_path, "a", "NNVNNVNN")
    _write_record(tmp_path, "b", "NVNNNN", sig_name=("ii", "v5"))  # case-insensitive standard names
    d = load_beat_probe(BeatProbeConfig(path=str(tmp_path), test_records=["b"]), 100, LEADS_12)
    assert d.split == "record" and d.counts("train")["V"] == 2 and d.counts("test") == {
        "N": 5, "S": 0, "V": 1, "F": 0, "Q": 0}
    assert d.x[d.test][:, LEADS_12.index("V5")].min() < -0.3 and not d.x[d.test][:, LEADS_12.index("V1")].any()
    with pytest.raises(ECGRecordError, match="not among the records"):
        load_beat_probe(BeatProbeConfig(path=str(tmp_path), test_records=["zz"]), 100, LEADS_12)
    _write_record(tmp_path, "c", "NVNV", sig_name=("XA", "XB"))  # then both named ECG, as in SVDB 800
    hea = tmp_path / "c.hea"
    hea.write_text(hea.read_text().replace(" XA", " ECG").replace(" XB", " ECG"))
    with pytest.raises(ECGRecordError, match=r"c: lead 'ECG' maps to 'ECG', which is not in the encoder's"):
        load_beat_probe(BeatProbeConfig(path=str(tmp_path), records=["c"]), 100, LEADS_12)
    d = load_beat_probe(BeatProbeConfig(path=str(tmp_path), records=["c"], channel_leads=["II", None],
                                        train_fraction=0.5), 100, LEADS_12)
    assert d.lead_sources == {"II": "c:ECG"} and not d.x[:, LEADS_12.index("V1")].any()
    with pytest.raises(ECGRecordError, match="channel_leads lists 1 names, the record has 2 leads"):
        load_beat_probe(BeatProbeConfig(path=str(tmp_path), records=["c"], channel_leads=["II"]), 100, LEADS_12)


def test_modality_offers_beat_probe(tmp_path):
    torch.set_num_threads(1)
    _write_record(tmp_path, "r1", "NNNVNNNNNNNNNNVNNNNN")
    base = [f"output_dir={tmp_path}", "name=t", "modality=ecg", "objective={name: jepa}", "data.source=wfdb",
            f"data.path={tmp_path}", "encoder={name: vit1d, in_chans: 12, patch_size: 5, dim: 16, depth: 1, heads: 2}"]
    m = ECGModality(load_experiment(None, base + [f"data.beat_probe={{path: {tmp_path}, train_fraction: 0.5}}"]))
    (task,) = m.probe_tasks()
    assert task.name == "beats_aami_time_split" and task.task == "multiclass"
    assert task.class_names == ["N", "S", "V", "F", "Q"] and len(task.train) == 10 and len(task.test) == 10
    x, y = task.train[3]
    assert tuple(x.shape) == (12, 70) and int(y) == 2
    z = m.embed(m.build_encoder(), torch.stack([task.train[i][0] for i in range(4)]))
    assert z.shape == (4, 16) and torch.isfinite(z).all()
    with pytest.raises(ConfigError, match=r"before \+ after = 71 samples at 100.0 Hz is not a multiple"):
        ECGModality(load_experiment(None, base + [f"data.beat_probe={{path: {tmp_path}, after: 0.46}}"]))
    with pytest.raises(ConfigError, match="unknown config key 'data.beat_probe.window'"):
        ECGModality(load_experiment(None, base + [f"data.beat_probe={{path: {tmp_path}, window: 1}}"]))


def test_mitdb_100_beat_probe_counts(shared_data):
    cfg = BeatProbeConfig(path=str(shared_data / "ecg" / "mitdb"), records=["100"])
    # 2237 N + 33 S (A) + 1 V beats after 2 edge beats; the single V lies at 84 % of the record -> test only
    with pytest.raises(ValueError, match="AAMI class V has 0 train and 1 test beats"):
        load_beat_probe(cfg, 100, LEADS_12)
    cfg.one_split_classes = "exclude"
    d = load_beat_probe(cfg, 100, LEADS_12)
    assert d.counts("train") == {"N": 1569, "S": 23, "V": 0, "F": 0, "Q": 0}
    assert d.counts("test") == {"N": 668, "S": 10, "V": 0, "F": 0, "Q": 0}
    assert d.excluded == {"V": 1} and d.skipped == {"non-beat '+'": 1, "edge": 2}
    assert d.lead_sources == {"II": "100:MLII", "V5": "100:V5"} and d.x.shape == (2270, 12, 70)
