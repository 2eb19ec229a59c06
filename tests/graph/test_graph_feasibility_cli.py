"""`sslab feasibility` end to end on synthetic families: table, JSON and heatmap."""
from __future__ import annotations

import json

from sslab.cli import main


def test_feasibility_cli(tmp_path, capsys):
    out = tmp_path / "feas"
    rc = main(["feasibility", "--pretrain", "synthetic:er:num_graphs=30,seed=1", "synthetic:ba:num_graphs=30,seed=2",
               "--downstream", "synthetic:ba:num_graphs=20,seed=9", "--resolution", "12",
               "--bases", "integrated,domain", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "rank" in text and "best weights" in text
    report = json.loads((out / "feasibility.json").read_text())
    entry = next(iter(report["downstream"].values()))
    assert [r["pretrain"] for r in entry["ranking"]][0].startswith("synthetic:ba")
    assert entry["ranking"][0]["feasibility"] >= entry["ranking"][1]["feasibility"]
    assert abs(sum(entry["weights"].values()) - 1) < 1e-6
    png = entry["heatmap"]
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_feasibility_cli_bad_input(tmp_path, capsys):
    rc = main(["feasibility", "--pretrain", "synthetic:er:num_graphs=5", "--downstream", "NOPE",
               "--tu-root", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet", "--no-plot"])
    assert rc == 2 and "not a TU folder" in capsys.readouterr().err
    rc = main(["feasibility", "--pretrain", "synthetic:er:num_graphs=5", "--downstream", "synthetic:ba",
               "--bases", "global", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "unknown basis kind" in capsys.readouterr().err
