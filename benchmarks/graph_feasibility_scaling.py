"""Feasibility cost vs number of graphs (100 -> 10k) and graphon resolution; prints a table.

    .venv/bin/python benchmarks/graph_feasibility_scaling.py [--sizes 100 1000 10000] [--resolutions 16 32 64]

Each row runs the full W2PGNN analysis: pretraining = two synthetic families (SBM + BA) of N/2 graphs each
(20-40 nodes), downstream = N/4 ER graphs, all three basis kinds (integrated, domain, 4 topological), plain
GW. Wall and CPU time are measured, peak memory with tracemalloc (numpy buffers included). The log-log
slope of CPU time vs N at each resolution is the scaling exponent (1.0 = linear). Per-graph work
(step function O(E K + n K), statistics O(E)) dominates at large N; the GW / simplex fit depends only on K
and the number of bases, so the cost is linear in N plus a constant.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from sslab.datasets.graphs_synthetic import generate_family
from sslab.eval.feasibility import FeasibilityConfig, feasibility


def main() -> None:
    ap = argparse.ArgumentParser(description="W2PGNN feasibility scaling benchmark")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64])
    args = ap.parse_args()
    nmax = max(args.sizes)
    t0 = time.perf_counter()
    pool = {"sbm": generate_family("sbm", nmax // 2, (20, 40), seed=1).graphs,
            "ba": generate_family("ba", nmax // 2, (20, 40), seed=2).graphs,
            "er": generate_family("er", max(nmax // 4, 1), (20, 40), seed=3, p=0.15).graphs}
    print(f"generated {nmax + nmax // 4} graphs in {time.perf_counter() - t0:.1f}s")
    feasibility({"a": pool["sbm"][:20]}, pool["er"][:10], FeasibilityConfig(resolution=8))  # warm-up: imports
    print(f"{'graphs':>8}{'K':>5}{'wall s':>9}{'cpu s':>9}{'cpu ms/graph':>14}{'peak MiB':>10}{'feasibility':>13}")
    cpu = {}
    for K in args.resolutions:
        for n in sorted(args.sizes):
            pre = {"sbm": pool["sbm"][: n // 2], "ba": pool["ba"][: n // 2]}
            down = pool["er"][: max(n // 4, 1)]
            cfg = FeasibilityConfig(resolution=K)
            tracemalloc.start()
            w0, c0 = time.perf_counter(), time.process_time()
            res = feasibility(pre, down, cfg)
            wall, c = time.perf_counter() - w0, time.process_time() - c0
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            total = n + len(down)
            cpu[(K, n)] = c
            print(f"{total:>8}{K:>5}{wall:>9.2f}{c:>9.2f}{1000 * c / total:>14.3f}{peak:>10.1f}"
                  f"{res.feasibility:>13.5f}", flush=True)
    print("\nscaling exponent d log(cpu) / d log(N) (1.0 = linear):")
    sizes = sorted(args.sizes)
    for K in args.resolutions:
        x = np.log(sizes)
        y = np.log([cpu[(K, n)] for n in sizes])
        slope = np.polyfit(x, y, 1)[0]
        tail = np.polyfit(x[-3:], y[-3:], 1)[0] if len(sizes) >= 3 else slope
        print(f"  K={K:<4} all sizes {slope:.2f}   largest three sizes {tail:.2f}")


if __name__ == "__main__":
    main()
