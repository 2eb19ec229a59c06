"""`sslab compare` (paired multi-seed protocol), classical-floor rows, the probe's repeated-CV option and the
demo's compact table."""
import json
import math
import subprocess

import numpy as np
import pytest

from sslab.cli import main
from sslab.core.config import load_experiment
from sslab.core.modality import build_modality
from sslab.eval import compare as cmp
from sslab.eval.cv import check_cv, cv_splits
from sslab.eval.floors import Floor, model_scorer
from sslab.run import probe_encoders

TINY = ["modality=vector", "encoder.name=mlp", "encoder.in_dim=64", "encoder.dim=16",
        "objective.name=masked_feature", "objective.in_dim=64", "train.steps=5", "train.batch_size=64",
        "optim.warmup_steps=1"]


def test_paired_interval_known_case():
    # gains 1..5: mean 3, sd sqrt(2.5), t_{0.975,4} = 2.7764451 -> half-width 1.963243
    mean, sd, lo, hi = cmp.paired_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and sd == pytest.approx(math.sqrt(2.5))
    assert (lo, hi) == pytest.approx((3 - 1.963243, 3 + 1.963243), abs=1e-5)
    assert cmp.paired_interval([1.0, 3.0], level=0.9)[2:] == pytest.approx((2 - 6.313752, 2 + 6.313752), abs=1e-5)
    m1, sd1, lo1, hi1 = cmp.paired_interval([0.5])
    assert m1 == 0.5 and math.isnan(sd1) and math.isnan(lo1) and math.isnan(hi1)
    assert cmp.paired_interval([1.0, float("nan"), 3.0])[0] == 2.0  # degenerate seeds are left out


def _rows(pre, rnd, floor, frac=1.0, task="t"):
    return [{"task": task, "encoder": "pretrained", "label_fraction": frac, "accuracy": pre},
            {"task": task, "encoder": "random_init", "label_fraction": frac, "accuracy": rnd},
            {"task": task, "encoder": "floor:raw", "label_fraction": frac, "accuracy": floor}]


def test_summarize_per_fraction_with_floor_and_degenerate_seed():
    cells = [{"seed": s, "threads": 1, "rows": _rows(p, r, 0.5) + _rows(q, r, 0.4, frac=0.1)}
             for s, (p, q, r) in enumerate([(0.8, 0.7, 0.7), (0.9, 0.8, 0.7), (0.6, 0.5, 0.7)])]
    cells.append({"seed": 3, "threads": 1, "rows": [dict(r, degenerate="one predicted class") if r["encoder"] == "pretrained"
                                                    else r for r in _rows(0.1, 0.7, 0.5)] + _rows(0.7, 0.7, 0.4, 0.1)})
    summary = cmp.summarize(cells)
    assert [(e["task"], e["label_fraction"]) for e in summary] == [("t", 1.0), ("t", 0.1)]
    full, tenth = summary
    assert full["metric"] == "accuracy" and full["seeds"] == [0, 1, 2, 3]
    assert full["gain"][:3] == pytest.approx([0.1, 0.2, -0.1]) and math.isnan(full["gain"][3])
    assert full["positive"] == 2 and full["n"] == 3  # the degenerate seed counts neither way
    assert full["gain_mean"] == pytest.approx(0.2 / 3)
    assert full["floors"] == {"raw": [0.5] * 4}
    assert tenth["gain"] == pytest.approx([0.0, 0.1, -0.2, 0.0]) and tenth["positive"] == 1
    md = cmp.format_markdown(summary)
    assert "| 1 | t | 100% | accuracy |" in md and "raw 0.500 ± 0.000" in md and "| 2/3 |" in md


def _fake_pretrain(calls):
    """Stand-in for the cell's subprocess: writes the run's probe.json like `sslab pretrain --probe`."""
    def run(cmd, env=None, capture_output=True, text=True):
        args = cmd[4:]
        out = next(a.split("=", 1)[1] for a in args if a.startswith("output_dir="))
        name = next(a.split("=", 1)[1] for a in args if a.startswith("name="))
        seed = int(next(a.split("=", 1)[1] for a in args if a.startswith("seed=")))
        calls.append((name, env.get("OMP_NUM_THREADS"), [a for a in args if a.startswith("probe.")]))
        from pathlib import Path

        from sslab.core.config import save_experiment
        run_dir = Path(out) / name
        run_dir.mkdir(parents=True, exist_ok=True)
        save_experiment(load_experiment(cmd[5], cmd[6:-1]), run_dir / "config.yaml")
        (run_dir / "probe.json").write_text(json.dumps({"rows": _rows(0.5 + seed / 10, 0.5, 0.4)}))
        return subprocess.CompletedProcess(cmd, 0, "ok", "")
    return run


def test_run_cell_reuses_a_finished_seed_and_reruns_a_changed_one(tmp_path, monkeypatch):
    exp = tmp_path / "exp.yaml"
    exp.write_text("modality: vector\n")
    calls = []
    monkeypatch.setattr(cmp.subprocess, "run", _fake_pretrain(calls))
    runs = tmp_path / "runs"
    first = cmp.run_cell(exp, ["train.steps=5"], cmp.Cell(0, 2), runs, fractions=[0.1, 1.0])
    assert not first["reused"] and calls == [("seed0_t2", "2", ["probe.label_fractions=[0.1,1.0]"])]
    again = cmp.run_cell(exp, ["train.steps=5"], cmp.Cell(0, 2), runs, fractions=[0.1, 1.0])
    assert again["reused"] and again["rows"] == first["rows"] and len(calls) == 1
    (runs / "seed0_t2" / "stale.txt").write_text("from the old settings")
    changed = cmp.run_cell(exp, ["train.steps=6"], cmp.Cell(0, 2), runs, fractions=[0.1, 1.0])
    assert not changed["reused"] and len(calls) == 2 and not (runs / "seed0_t2" / "stale.txt").exists()
    exp.write_text("modality: vector\nseed: 5\n")  # a key the cell overrides anyway: the same resolved config
    assert cmp.run_cell(exp, ["train.steps=6"], cmp.Cell(0, 2), runs, fractions=[0.1, 1.0])["reused"]
    exp.write_text("modality: vector\noptim: {lr: 0.01}\n")  # the experiment changed: not the same cell any more
    assert not cmp.run_cell(exp, ["train.steps=6"], cmp.Cell(0, 2), runs, fractions=[0.1, 1.0])["reused"]
    assert not cmp.run_cell(exp, ["train.steps=6"], cmp.Cell(0, 1), runs, fractions=[0.1, 1.0])["reused"]  # threads
    (runs / "seed1_t2").mkdir(parents=True)  # an interrupted cell (no probe.json) is run again
    assert not cmp.run_cell(exp, [], cmp.Cell(1, 2), runs)["reused"] and len(calls) == 5
    with pytest.raises(ValueError, match="train.stesp"):  # a bad override fails before anything runs
        cmp.run_cell(exp, ["train.stesp=3"], cmp.Cell(2, 2), runs)
    assert len(calls) == 5


def test_compare_command_end_to_end_and_resume(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("data: {source: digits}\n")
    out = tmp_path / "cmp"
    argv = ["compare", str(exp), *TINY, "--seeds", "0", "--label-fractions", "0.2", "1.0", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    assert (out / "compare.md").is_file() and (out / "compare.png").is_file()
    assert [(e["task"], e["label_fraction"]) for e in report["summary"]] == [("digits", 0.2), ("digits", 1.0)]
    assert all(set(e["floors"]) == {"raw_features"} and e["metric"] in ("auc", "balanced_accuracy", "accuracy") for e in report["summary"])
    assert report["cells"][0]["reused"] is False
    probe = json.loads((out / "runs" / "seed0" / "probe.json").read_text())
    assert {r["encoder"] for r in probe["rows"]} == {"pretrained", "random_init", "floor:raw_features"}
    assert "| digits | 20% |" in capsys.readouterr().out
    assert main(argv) == 0  # rerun: the finished seed is reused, nothing is trained again
    assert json.loads((out / "compare.json").read_text())["cells"][0]["reused"] is True


def test_cv_splits_are_stratified_grouped_and_validated():
    y = np.array([0] * 6 + [1] * 6)
    splits = cv_splits(y, "multiclass", folds=3, repeats=2, seed=0)
    assert len(splits) == 6 and [r for r, _, _ in splits] == [0, 0, 0, 1, 1, 1]
    for _, tr, te in splits:
        assert sorted(np.concatenate([tr, te]).tolist()) == list(range(12))
        assert np.bincount(y[te]).tolist() == [2, 2]
    assert cv_splits(y, "multiclass", 3, 2, seed=0)[0][2].tolist() == splits[0][2].tolist()  # fixed by cv.seed
    groups = np.repeat(np.arange(6), 2)
    for _, tr, te in cv_splits(y, "multiclass", 3, 1, seed=1, groups=groups):
        assert not set(groups[tr]) & set(groups[te])
    with pytest.raises(ValueError, match="probe.cv: unknown key"):
        check_cv({"folds": 3, "repeat": 2})
    with pytest.raises(ValueError, match="fewer than folds"):
        cv_splits(np.array([0, 0, 0, 1]), "multiclass", 3, 1)


def test_probe_floor_rows_scorer_and_cv(tmp_path, monkeypatch):
    from sslab.modalities.vector import VectorModality

    cfg = load_experiment(None, [*TINY, "data.source=digits", "probe.label_fractions=[0.25,1.0]",
                                 "probe.cv={folds: 3, repeats: 2}"])
    modality = build_modality(cfg)
    task = modality.probe_tasks()[0]
    n = len(task.train) + len(task.test)
    seen = []

    def knn(kind, seed):
        from sklearn.neighbors import KNeighborsClassifier
        seen.append(kind)
        return KNeighborsClassifier(3)

    monkeypatch.setattr(VectorModality, "floor_features", lambda self, t: {
        "raw_features": (t.train.X.numpy(), t.test.X.numpy()),
        "knn": Floor(t.train.X.numpy(), t.test.X.numpy(), model_scorer(knn))})
    enc = modality.build_encoder()
    fold_rows = []
    rows = probe_encoders(modality, {"pretrained": enc}, cfg, progress=False, fold_rows=fold_rows)
    assert [(r["encoder"], r["label_fraction"]) for r in rows] == [
        ("pretrained", 0.25), ("floor:raw_features", 0.25), ("floor:knn", 0.25),
        ("pretrained", 1.0), ("floor:raw_features", 1.0), ("floor:knn", 1.0)]
    assert all(r["cv"] == "2x3-fold" and r["cv_splits"] == 6 and "accuracy_std" in r for r in rows)
    assert len(fold_rows) == 3 * 2 * 6 and seen == ["multiclass"] * 12
    # every encoder / floor is scored on the same splits and the same label subsample
    by_enc = {}
    for r in fold_rows:
        by_enc.setdefault((r["encoder"], r["label_fraction"]), []).append((r["fold"], r["n_train"], r["n_test"]))
    assert len({tuple(v) for v in by_enc.values()}) == 2  # one per label fraction
    assert sum(r["n_test"] for r in fold_rows[:3]) == n  # folds of one repeat cover every item once
    assert rows[2]["accuracy"] > 0.8 and rows[1]["accuracy"] > 0.8  # raw digits pixels are a strong floor


def test_probe_without_cv_adds_floor_rows_without_knn(tmp_path):
    cfg = load_experiment(None, [*TINY, "data.source=digits", "probe.label_fractions=[0.1]"])
    modality = build_modality(cfg)
    rows = probe_encoders(modality, {"pretrained": modality.build_encoder()}, cfg, progress=False)
    floor = next(r for r in rows if r["encoder"] == "floor:raw_features")
    assert floor["label_fraction"] == 0.1 and floor["kind"] == "multiclass" and "knn_accuracy" not in floor
    assert floor["n_train"] == next(r for r in rows if r["encoder"] == "pretrained")["n_train"]
    cfg_off = load_experiment(None, [*TINY, "data.source=digits", "probe.floors=false"])
    assert all(not r["encoder"].startswith("floor:")
               for r in probe_encoders(modality, {"pretrained": modality.build_encoder()}, cfg_off, progress=False))


def test_compact_table_and_demo_output_without_a_terminal(tmp_path, monkeypatch, capsys):
    rows = _rows(0.9, 0.8, 0.7) + [{"task": "hr", "encoder": "pretrained", "r2": 0.2},
                                   {"task": "hr", "encoder": "random_init", "r2": 0.3}]
    table = cmp.compact_table(rows, {"hr": "loses over 5 seeds"})
    assert table.splitlines()[0] == "| task | metric | pretrained | random init | classical floor | gain |"
    assert "| t | accuracy | 0.900 | 0.800 | raw 0.700 | +0.100 |" in table
    assert "| hr | r2 | 0.200 | 0.300 | - | -0.100 (loses over 5 seeds) |" in table

    import sslab.run
    seen = {}

    def fake_pretrain(cfg):
        seen["progress"] = cfg.train.progress
        return tmp_path / "demo"

    monkeypatch.setattr(sslab.run, "pretrain", fake_pretrain)
    monkeypatch.setattr(sslab.run, "probe", lambda run, cfg, progress: {"rows": rows})
    monkeypatch.setattr("sslab.core.modality.build_modality", lambda cfg: type("M", (), {"probe_tasks": lambda s: []})())
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert main(["demo", "--output-dir", str(tmp_path), "probe.floors=false"]) == 0
    out = capsys.readouterr().out
    assert seen["progress"] is False  # no progress bars in a log
    assert "| task | metric | pretrained | random init | classical floor | gain |" in out
    assert f"artifacts in {tmp_path / 'demo'}/" in out


def test_demo_notes_name_exactly_the_demo_probe_tasks():
    """The measured-over-seeds note printed beside each demo task must follow the demo's task list: a task added
    to the demo without a 5-seed measurement, or a note left for a dropped task, fails here."""
    from sslab.cli import DEMO_NOTES, demo_experiment_path
    from sslab.core.config import load_experiment

    cfg = load_experiment(demo_experiment_path())
    assert sorted(DEMO_NOTES) == sorted(f"synthetic_{label}" for label in cfg.data["probe_labels"])
