"""The ECG linear-probe notebook executes top to bottom on a tiny synthetic run (nbclient, python3 kernel)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_ecg_linear_probe_notebook_runs(monkeypatch, tmp_path):
    monkeypatch.delenv("SSLAB_ECG_RUN", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SSLAB_NB_OUT", str(tmp_path))
    path = ROOT / "experiments" / "notebooks" / "ecg_linear_probe.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "encoder: {'name': 'vit1d'" in outputs
    for png in ("roc.png", "masks.png"):  # per-class ROC curves, example ECGs with JEPA masks
        assert (tmp_path / png).stat().st_size > 10_000
