"""Run metrics: ``metrics.jsonl`` (one JSON object per logged step), optional TensorBoard, loss PNG."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from sslab.core.io import atomic_write_text


class MetricsLogger:
    """Appends metrics to ``run_dir/metrics.jsonl``; disabled (no-op) on non-zero ranks."""

    def __init__(self, run_dir: Union[str, Path], enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> int:
        """Keep only lines with ``step <= step``: the steps the resumed state has seen; returns lines dropped.

        Called at every start: with the checkpoint's step on resume (later lines will be logged again),
        with 0 when there is no checkpoint (the file starts empty). A line cut short by a kill mid-append
        is dropped too. The rewrite is atomic, so a kill during it leaves the old file.
        """
        if not self.enabled or not self.path.exists():
            return 0
        text = self.path.read_text()
        lines = text.splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                kept.append(line)
        if len(kept) != len(lines) or (text and not text.endswith("\n")):
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return len(lines) - len(kept)

    def log(self, step: int, values: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: Union[str, Path]) -> List[Dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics_path: Union[str, Path], out_png: Union[str, Path],
                    keys: Optional[List[str]] = None) -> Path:
    """Plot ``loss`` (and other ``loss*`` keys) against step; returns the PNG path."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's (e.g. notebook) backend alone

    rows = read_metrics(metrics_path)
    if keys is None:
        keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts), label=key, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(out_png).parent.name)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    return out_png
