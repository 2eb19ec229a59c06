"""``sslab feasibility --pretrain A B C --downstream D``: W2PGNN "when to pretrain" analysis.

For each downstream set it prints (1) the feasibility of the whole generator space spanned by the
pretraining sets with the best simplex weights (which bases/datasets matter), and (2) a ranking of the
candidate pretraining sets taken one at a time; it writes ``feasibility.json`` and one graphon heatmap
PNG per downstream set (pretraining graphons, downstream graphon, best generator).
Sources are strings as in :mod:`sslab.datasets.graphs_sources` (``MUTAG``, ``synthetic:sbm``, ``nci``, ...).
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sslab.core.registry import COMMANDS


def _subsample(graphs: Sequence[Any], max_graphs: Optional[int], seed: int) -> List[Any]:
    if not max_graphs or len(graphs) <= max_graphs:
        return list(graphs)
    import numpy as np

    idx = np.sort(np.random.default_rng(seed).choice(len(graphs), max_graphs, replace=False))
    return [graphs[i] for i in idx]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "downstream"


def analyse(pretrain: Sequence[str], downstream: Sequence[str], cfg: Any, out_dir: Path,
            tu_root: Optional[str] = None, max_graphs: Optional[int] = None, plot: bool = True) -> Dict[str, Any]:
    """Run the analysis; returns the JSON-able report (also written to ``out_dir/feasibility.json``)."""
    from sslab.datasets.graphs_sources import load_graph_source
    from sslab.eval.feasibility import GraphonCache, feasibility, rank_pretraining_sets
    from sslab.eval.graphon import estimate_graphon, plot_graphons

    if not pretrain or not downstream:
        raise ValueError("give at least one --pretrain and one --downstream graph source")
    sets = {}
    for spec in pretrain:
        gs = load_graph_source(spec, tu_root)
        sets[gs.name if gs.name not in sets else spec] = _subsample(gs.graphs, max_graphs, cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = GraphonCache()  # per-dataset statistics / bases / graphons, shared by every pair
    report: Dict[str, Any] = {"pretrain": {k: len(v) for k, v in sets.items()}, "config": None, "downstream": {}}
    for spec in downstream:
        t0 = time.perf_counter()
        ds = load_graph_source(spec, tu_root)
        down = _subsample(ds.graphs, max_graphs, cfg.seed)
        res, bases, target, best = feasibility(sets, down, cfg, return_graphons=True, cache=cache)
        ranking = rank_pretraining_sets(sets, down, cfg, cache) if len(sets) > 1 else [(next(iter(sets)), res)]
        entry: Dict[str, Any] = {
            "num_graphs": len(down),
            "feasibility": res.feasibility, "distance": res.distance, "weights": res.weights,
            "ranking": [{"pretrain": n, "feasibility": r.feasibility, "distance": r.distance} for n, r in ranking],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if plot:
            domain = [estimate_graphon(g, cfg.resolution, cfg.estimator, cfg.smoothing, name=n)
                      for n, g in sets.items()]
            png = out_dir / f"graphons_{_slug(ds.name)}.png"
            plot_graphons(domain + [target, best], str(png),
                          [f"pretrain: {g.name}" for g in domain] + [f"downstream: {ds.name}", "best generator"])
            entry["heatmap"] = str(png)
        report["downstream"][ds.name] = entry
        report["config"] = res.config
    (out_dir / "feasibility.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: Dict[str, Any]) -> str:
    lines: List[str] = []
    for name, e in report["downstream"].items():
        lines.append(f"downstream {name} ({e['num_graphs']} graphs): feasibility of the generator space "
                     f"{e['feasibility']:.4g} (GW {e['distance']:.4g})")
        lines.append(f"  {'rank':<5}{'pretraining set':<34}{'feasibility':>12}{'GW distance':>13}")
        for i, r in enumerate(e["ranking"], 1):
            lines.append(f"  {i:<5}{r['pretrain'][:33]:<34}{r['feasibility']:>12.4g}{r['distance']:>13.4g}")
        top = sorted(e["weights"].items(), key=lambda kv: -kv[1])
        lines.append("  best weights: " + ", ".join(f"{k} {v:.3f}" for k, v in top if v >= 0.005))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from sslab.eval.feasibility import BASIS_KINDS, FeasibilityConfig

    bases = tuple(b.strip() for b in args.bases.split(",") if b.strip())
    bad = [b for b in bases if b not in BASIS_KINDS]
    if bad:
        raise ValueError(f"--bases: unknown basis kind(s) {bad}; choose from {list(BASIS_KINDS)}")
    cfg = FeasibilityConfig(resolution=args.resolution, estimator=args.estimator, smoothing=args.smoothing,
                            bases=bases, num_topological=args.num_topological, alpha=args.alpha, seed=args.seed,
                            progress=False if args.quiet else None)
    out = Path(args.out)
    report = analyse(args.pretrain, args.downstream, cfg, out, args.tu_root, args.max_graphs, plot=not args.no_plot)
    print(format_report(report))
    written = [str(out / "feasibility.json")] + [e["heatmap"] for e in report["downstream"].values() if "heatmap" in e]
    print("\nwrote " + ", ".join(written))
    return 0


@COMMANDS.register("feasibility")
def feasibility_command(parser: argparse.ArgumentParser) -> None:
    """W2PGNN graphon feasibility: will pretraining on these graphs help the downstream graphs?"""
    parser.add_argument("--pretrain", nargs="+", required=True,
                        help="pretraining graph sources: TU names under --tu-root, synthetic:<er|sbm|ba|ws>[:k=v], "
                             "nci[:limit=N], pyg:<folder>, or a folder")
    parser.add_argument("--downstream", nargs="+", required=True, help="downstream graph source(s)")
    parser.add_argument("--tu-root", default=None, help="folder holding TU dataset folders "
                                                        "(default $SSLAB_GRAPH_ROOT or ../shared/data/graphs)")
    parser.add_argument("--resolution", type=int, default=32, help="graphon grid size K (default 32)")
    parser.add_argument("--estimator", default="sas", choices=["sas", "usvt", "largest_gap"])
    parser.add_argument("--smoothing", type=float, default=None, help="TV smoothing weight (default: per estimator)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="fused GW structure weight in [0, 1] (degree features); default plain GW")
    parser.add_argument("--bases", default="integrated,domain,topological",
                        help="comma-separated basis kinds (integrated, domain, topological)")
    parser.add_argument("--num-topological", type=int, default=4, help="k-means clusters for topological bases")
    parser.add_argument("--max-graphs", type=int, default=None,
                        help="random subsample of at most N graphs per set (seeded; reported in the JSON)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/feasibility", help="output folder for JSON and PNGs")
    parser.add_argument("--no-plot", action="store_true", help="skip the heatmap PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (default: bars only on a terminal)")
    parser.set_defaults(func=_run)
