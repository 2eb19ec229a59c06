"""The MELP notebook executes top to bottom (nbclient, python3 kernel) on its tiny synthetic run."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_ecg_text_notebook_runs():
    path = ROOT / "experiments" / "notebooks" / "ecg_text_melp.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "zero-shot macro AUC" in text and "true report" in text and "generated" in text
