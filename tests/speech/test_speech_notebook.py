"""The speech notebook runs end to end (nbclient, kernel python3 of this venv)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "experiments" / "notebooks" / "speech_wav2vec2.ipynb"


def test_speech_notebook_executes(shared_data):
    from nbclient import NotebookClient

    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "data source: shared" in text
    assert "Wav2Vec2ForCTC" in text and "speaker_id pretrained acc" in text
