"""Paired multi-seed comparison: pretrained vs the same encoder at random init vs the classical floor.

Each *cell* (seed, thread count) is one ``sslab pretrain EXPERIMENT ... --probe`` in a fresh process
(``OMP_NUM_THREADS`` and torch threads set, so float reduction order differs between thread counts exactly
as it does for users). The seed changes the initialisation, masks and batch order; the random-init encoder
of a cell is the pretraining run's own starting point, so pretrained - random init is a *paired*
difference. Per (threads, probe task, label fraction) the headline metric (:func:`sslab.eval.probe.headline`)
is summarised over seeds: mean +- std (sample std, ddof 1) of each encoder, the paired gain with a
two-sided 95% Student-t interval (``mean +- t_{0.975, n-1} * sd / sqrt(n)``), how many seeds have a
positive gain, and the mean of each classical floor (``floor:<name>`` rows).

A finished cell (``probe.json`` written, the same resolved config and thread count) is reused when the
comparison is rerun; an unfinished or changed one is run again from scratch.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sslab.core.io import atomic_write_text

CELL_FILE = "compare_cell.json"
_CODE = ("import sys, torch; n = int(sys.argv[1]); n > 0 and torch.set_num_threads(n); "
         "from sslab.cli import main; sys.exit(main(sys.argv[2:]))")


@dataclass
class Cell:
    seed: int
    threads: Optional[int]  # None: inherit the environment's thread settings

    @property
    def name(self) -> str:
        return f"seed{self.seed}" + ("" if self.threads is None else f"_t{self.threads}")


def paired_interval(gains: Sequence[float], level: float = 0.95) -> Tuple[float, float, float, float]:
    """``(mean, sd, lo, hi)`` of paired differences: sample sd (ddof 1) and the two-sided Student-t
    interval of the mean, ``mean +- t_{(1+level)/2, n-1} sd / sqrt(n)``; NaN bounds for n < 2."""
    from scipy import stats

    g = np.asarray([x for x in gains if np.isfinite(x)], dtype=float)
    n = len(g)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(g.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(g.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
    return mean, sd, mean - half, mean + half


def _cell_args(experiment: Path, overrides: Sequence[str], cell: Cell, runs: Path,
               fractions: Optional[Sequence[float]]) -> List[str]:
    args = [*overrides, f"seed={cell.seed}", f"output_dir={runs}", f"name={cell.name}", "train.progress=false"]
    if fractions is not None:
        args.append("probe.label_fractions=[" + ",".join(f"{float(f)!r}" for f in fractions) + "]")
    return args


def _resolved(config: Any) -> Dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(config), default=str))


def finished(run_dir: Path, want: Dict[str, Any], threads: Optional[int]) -> bool:
    """A cell is reused when its probe is written, its saved resolved config equals the one this
    comparison would run (however the experiment and overrides spell it) and the thread count matches."""
    from sslab.core.config import load_experiment

    done = run_dir / CELL_FILE
    if not ((run_dir / "probe.json").is_file() and done.is_file() and (run_dir / "config.yaml").is_file()):
        return False
    if json.loads(done.read_text()).get("threads") != threads:
        return False
    try:
        return _resolved(load_experiment(run_dir / "config.yaml")) == want
    except (ValueError, KeyError, TypeError):  # an old or foreign config: run the cell again
        return False


def run_cell(experiment: Path, overrides: Sequence[str], cell: Cell, runs: Path,
             fractions: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Pretrain + probe one cell (or reuse a finished one); returns ``{cell info, rows}``."""
    from sslab.core.config import load_experiment

    run_dir = runs / cell.name
    args = _cell_args(experiment, overrides, cell, runs, fractions)
    want = _resolved(load_experiment(experiment, args))  # also: a bad override fails here, before any training
    if finished(run_dir, want, cell.threads):
        rows = json.loads((run_dir / "probe.json").read_text())["rows"]
        return {"seed": cell.seed, "threads": cell.threads, "run_dir": str(run_dir), "reused": True, "rows": rows}
    if run_dir.exists():  # unfinished, or made with another config/thread count: start over
        shutil.rmtree(run_dir)
    runs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if cell.threads is not None:
        env.update(OMP_NUM_THREADS=str(cell.threads), MKL_NUM_THREADS=str(cell.threads))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CODE, str(cell.threads or 0), "pretrain", str(experiment), *args,
                           "--probe"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    atomic_write_text(runs / f"{cell.name}.log", proc.stdout + proc.stderr)
    if proc.returncode or not (run_dir / "probe.json").is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"compare cell {cell.name} failed (log: {runs / (cell.name + '.log')}):\n{tail}")
    atomic_write_text(run_dir / CELL_FILE, json.dumps({"experiment": str(experiment), "overrides": list(overrides),
                                                       "seed": cell.seed, "threads": cell.threads,
                                                       "seconds": round(seconds, 1)}, indent=2))
    rows = json.loads((run_dir / "probe.json").read_text())["rows"]
    return {"seed": cell.seed, "threads": cell.threads, "run_dir": str(run_dir), "reused": False,
            "seconds": round(seconds, 1), "rows": rows}


def _value(row: Optional[Dict[str, Any]]) -> Tuple[Optional[str], float]:
    """Headline (metric, value) of a row; NaN for a missing or degenerate row."""
    from sslab.eval.probe import headline

    if row is None or row.get("degenerate"):
        return None, math.nan
    try:
        metric, value = headline(row)
    except (KeyError, TypeError, ValueError):
        return None, math.nan
    return metric, (math.nan if value is None else float(value))


def summarize(cells: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per (threads, task, label fraction) over the cells' seeds (see the module docstring)."""
    out: List[Dict[str, Any]] = []
    for threads in dict.fromkeys(c["threads"] for c in cells):
        group = sorted((c for c in cells if c["threads"] == threads), key=lambda c: c["seed"])
        keys = list(dict.fromkeys((r["task"], float(r.get("label_fraction", 1.0))) for c in group for r in c["rows"]))
        for task, frac in keys:
            def pick(c: Dict[str, Any], enc: str) -> Optional[Dict[str, Any]]:
                return next((r for r in c["rows"] if r["task"] == task and r["encoder"] == enc
                             and float(r.get("label_fraction", 1.0)) == frac), None)

            metric = None
            vals: Dict[str, List[float]] = {}
            encoders = list(dict.fromkeys(r["encoder"] for c in group for r in c["rows"] if r["task"] == task))
            for enc in encoders:
                vals[enc] = []
                for c in group:
                    m, v = _value(pick(c, enc))
                    metric = metric or (m if enc == "pretrained" else None)
                    vals[enc].append(v)
            pre = np.array(vals.get("pretrained", [math.nan] * len(group)))
            rnd = np.array(vals.get("random_init", [math.nan] * len(group)))
            gain = pre - rnd
            mean, sd, lo, hi = paired_interval(gain)
            entry: Dict[str, Any] = {
                "threads": threads, "task": task, "label_fraction": frac, "metric": metric,
                "seeds": [c["seed"] for c in group], "pretrained": pre.tolist(), "random_init": rnd.tolist(),
                "gain": gain.tolist(), "gain_mean": mean, "gain_sd": sd, "gain_ci95": [lo, hi],
                "positive": int(np.sum(gain > 0)), "n": int(np.sum(np.isfinite(gain))),
                "floors": {e[len("floor:"):]: vals[e] for e in encoders if e.startswith("floor:")},
            }
            out.append(entry)
    return out


def _ms(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "degenerate"
    return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")


def format_markdown(summary: Sequence[Dict[str, Any]]) -> str:
    """The comparison table: one row per (threads, task, label fraction)."""
    lines = ["| threads | task | labels | metric | pretrained | random init | gain (95% CI) | seeds gain > 0 | "
             "classical floor |", "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        lo, hi = e["gain_ci95"]
        ci = f"{e['gain_mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else f"{e['gain_mean']:+.3f}"
        floors = "; ".join(f"{k} {_ms(v)}" for k, v in e["floors"].items()) or "-"
        lines.append(f"| {e['threads'] if e['threads'] is not None else '-'} | {e['task']} | "
                     f"{100 * e['label_fraction']:g}% | {e['metric']} | {_ms(e['pretrained'])} | "
                     f"{_ms(e['random_init'])} | {ci} | {e['positive']}/{e['n']} | {floors} |")
    return "\n".join(lines)


def plot_gains(summary: Sequence[Dict[str, Any]], out_png: Path) -> Path:
    """Paired gain per seed (dots) with the mean and its 95% t-interval (bar): one panel per probe task, with
    its own y scale (an AUC gain of 0.02 and an R2 gain of 1.1 do not share an axis), one column per
    (label fraction, threads)."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(e["task"] for e in summary))
    per_task = [[e for e in summary if e["task"] == t] for t in tasks]
    widest = max(len(group) for group in per_task)
    fig = Figure(figsize=(max(3.2, 0.75 * widest + 1.6) * len(tasks), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(tasks)))
    for ax, task, group in zip(axes, tasks, per_task):
        for i, e in enumerate(group):
            g = np.asarray(e["gain"], dtype=float)
            ax.scatter(np.full(len(g), i) + np.linspace(-0.12, 0.12, len(g)), g, s=14, color="tab:blue", zorder=3)
            lo, hi = e["gain_ci95"]
            if np.isfinite(lo):
                ax.errorbar([i + 0.25], [e["gain_mean"]], yerr=[[e["gain_mean"] - lo], [hi - e["gain_mean"]]],
                            fmt="s", color="black", capsize=4, ms=4, zorder=4)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels([f"{100 * e['label_fraction']:g}%" + (f"\n{e['threads']} thr" if e["threads"] else "")
                            for e in group], fontsize=8)
        ax.set_xlim(-0.5, len(group) - 0.3)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(f"gain in {group[0]['metric'] or 'metric'} (pretrained - random init)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("paired gain per seed (dots), mean and 95% t-interval (squares)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png


def compare(experiment: os.PathLike, overrides: Sequence[str], seeds: Sequence[int],
            threads: Optional[Sequence[int]] = None, fractions: Optional[Sequence[float]] = None,
            jobs: int = 1, out: os.PathLike = "runs/compare", log: Any = print) -> Dict[str, Any]:
    """Run (or reuse) every cell, summarise, write ``compare.json``/``.md``/``.png`` into ``out``."""
    experiment, out = Path(experiment).resolve(), Path(out)
    if not experiment.is_file():
        raise FileNotFoundError(f"{experiment}: experiment YAML not found")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeat: {list(seeds)}")
    cells = [Cell(s, t) for t in (threads or [None]) for s in seeds]
    runs = out / "runs"
    results: List[Dict[str, Any]] = []

    def one(cell: Cell) -> Dict[str, Any]:
        res = run_cell(experiment, overrides, cell, runs, fractions)
        log(f"{cell.name}: " + ("reused" if res["reused"] else f"done in {res['seconds']:.0f} s"))
        return res

    if jobs <= 1:
        results = [one(c) for c in cells]
    else:  # the first cell alone: it builds the shared caches (synthetic data, floor features)
        results = [one(cells[0])]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results += list(pool.map(one, cells[1:]))
    summary = summarize(results)
    report = {"experiment": str(experiment), "overrides": list(overrides), "seeds": list(seeds),
              "threads": list(threads) if threads else None, "label_fractions": fractions,
              "cells": [{k: v for k, v in r.items() if k != "rows"} for r in results], "summary": summary}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.json", json.dumps(report, indent=2))
    atomic_write_text(out / "compare.md", format_markdown(summary) + "\n")
    plot_gains(summary, out / "compare.png")
    return report


def compact_table(rows: Sequence[Dict[str, Any]], notes: Optional[Dict[str, str]] = None) -> str:
    """One run's probe rows as ``task | metric | pretrained | random init | classical floor | gain``
    (all label fractions; the floor column lists every ``floor:<name>``)."""
    lines = ["| task | metric | pretrained | random init | classical floor | gain |", "|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["task"], float(r.get("label_fraction", 1.0))) for r in rows))
    for task, frac in keys:
        sel = {r["encoder"]: r for r in rows if r["task"] == task and float(r.get("label_fraction", 1.0)) == frac}
        metric, pre = _value(sel.get("pretrained"))
        _, rnd = _value(sel.get("random_init"))
        floors = ", ".join(f"{e[len('floor:'):]} {_value(r)[1]:.3f}" for e, r in sel.items() if e.startswith("floor:"))
        name = task if frac == 1.0 else f"{task} ({100 * frac:g}% labels)"
        fmt = lambda v: "degenerate" if not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
        gain = f"{pre - rnd:+.3f}" if np.isfinite(pre) and np.isfinite(rnd) else "-"
        note = (notes or {}).get(task)
        lines.append(f"| {name} | {metric or '-'} | {fmt(pre)} | {fmt(rnd)} | {floors or '-'} | {gain}"
                     + (f" ({note})" if note else "") + " |")
    return "\n".join(lines)
