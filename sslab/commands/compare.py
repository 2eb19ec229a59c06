"""``sslab compare EXPERIMENT [overrides] --seeds 0 1 2 3 4``: pretrained vs random init vs classical floor
over seeds, with paired gains and 95% t-intervals (:mod:`sslab.eval.compare`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from sslab.core.registry import COMMANDS


def _run(args: argparse.Namespace) -> int:
    from sslab.eval.compare import compare, format_markdown

    out = Path(args.out) if args.out else Path("runs") / "compare" / Path(args.experiment).stem
    report = compare(args.experiment, args.overrides, args.seeds, threads=args.threads,
                     fractions=args.label_fractions, jobs=args.jobs, out=out)
    print(format_markdown(report["summary"]))
    print(f"\nwrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'} (runs in {out / 'runs'})")
    return 0


@COMMANDS.register("compare")
def compare_command(parser: argparse.ArgumentParser) -> None:
    """Pretrain + probe over seeds: pretrained vs random init vs classical floor, paired gain with 95% CI."""
    parser.add_argument("experiment", help="experiment YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every seed (give them before the flags)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--label-fractions", type=float, nargs="+", default=None,
                        help="probe label fractions (default: the experiment's probe.label_fractions)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch/OMP thread counts; each is a separate set of cells (default: inherit)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel (each its own process)")
    parser.add_argument("--out", default=None, help="output folder (default runs/compare/<experiment name>)")
    parser.set_defaults(func=_run)
