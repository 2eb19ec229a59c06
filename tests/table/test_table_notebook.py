"""The table notebook runs end to end (nbclient, kernel python3 of this venv)."""
from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[2] / "experiments" / "notebooks" / "table_unitabe.ipynb"


def test_table_notebook_executes() -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "breast_cancer   569 rows x 30 columns" in text
    assert "['1', '3', '.', '2']" in text and "pretraining loss" in text
    assert "random_init" in text and "pretrained" in text and "sklearn hgb" in text
    diff = float(text.split("after reversing the columns:")[1].split()[0])
    assert diff < 1e-4
