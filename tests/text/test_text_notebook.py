"""The text notebook runs end to end (nbclient, kernel python3 of this venv)."""
from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[2] / "experiments" / "notebooks" / "text_methods.ipynb"


def test_text_notebook_executes(shared_data: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "308 reports" in text and "UL2  [R]" in text and "MeCo [CLS]" in text and "[META] sinusrhythmus" in text
    assert "random_init" in text and "pretrained" in text and "MLM loss" in text
