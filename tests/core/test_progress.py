"""Issue 19: progress bars only on a terminal, or when train.progress=true is explicit (one helper decides)."""
import io
import sys

import pytest

from sslab.cli import main
from sslab.core.progress import progress_bar, show_progress

TINY = ["modality=vector", "encoder.name=mlp", "encoder.in_dim=64", "encoder.dim=8", "objective.name=masked_feature",
        "objective.in_dim=64", "train.steps=5", "train.batch_size=64", "optim.warmup_steps=1", "name=p"]


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_show_progress_follows_the_terminal_unless_explicit(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert show_progress(None) is False and show_progress(True) is True
    monkeypatch.setattr(sys, "stderr", _TTY())
    assert show_progress(None) is True and show_progress(False) is False
    out = _TTY()
    bar = progress_bar(range(3), None, file=out)
    list(bar)
    assert "3/3" in out.getvalue()


@pytest.mark.parametrize("explicit, bars", [([], False), (["train.progress=true"], True)])
def test_redirected_runs_write_no_bars_unless_asked(tmp_path, capsys, explicit, bars):
    exp = tmp_path / "exp.yaml"
    exp.write_text("data: {source: digits}\n")
    assert main(["pretrain", str(exp), *TINY, *explicit, "--probe", f"output_dir={tmp_path}"]) == 0
    err = capsys.readouterr().err  # pytest's capture is not a terminal, like `> run.log`
    assert ("it/s" in err or "step/s" in err or "s/step" in err) == bars, err[-500:]
