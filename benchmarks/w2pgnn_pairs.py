"""W2PGNN feasibility cost per (downstream, pretraining) pair: every ordered pair of TU sets, each
pretraining set alone (as ``rank_pretraining_sets`` and ``feasibility_vs_gain`` do), at one graphon
resolution. Runs against whatever ``sslab`` is importable, so the same script times old and new code::

    PYTHONPATH=. python benchmarks/w2pgnn_pairs.py --resolution 50
    PYTHONPATH=/path/to/old/checkout python benchmarks/w2pgnn_pairs.py --resolution 50

Prints the wall time per pair (graphon estimation, bases and the (lam, T) fit included) and every distance,
so the two runs can be compared number by number.
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--resolution", type=int, default=50)
    ap.add_argument("--sets", nargs="+", default=["MUTAG", "PROTEINS", "IMDB-BINARY"])
    ap.add_argument("--tu-root", default=None)
    args = ap.parse_args()

    from sslab.datasets.graphs_sources import load_graph_source
    from sslab.eval import feasibility as F

    sets = {n: load_graph_source(n, args.tu_root).graphs for n in args.sets}
    cfg = F.FeasibilityConfig(resolution=args.resolution)
    kw = {"cache": F.GraphonCache()} if hasattr(F, "GraphonCache") else {}  # new code: shared across pairs
    out = {}
    t0 = time.perf_counter()
    for d in sets:
        for p in sets:
            out[f"{p}->{d}"] = F.feasibility({p: sets[p]}, sets[d], cfg, **kw).distance
    total = time.perf_counter() - t0
    print(json.dumps({"resolution": args.resolution, "pairs": len(out), "cache": bool(kw),
                      "total_s": round(total, 2), "per_pair_s": round(total / len(out), 3),
                      "distances": {k: round(v, 8) for k, v in out.items()}}))


if __name__ == "__main__":
    main()
