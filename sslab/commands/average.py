"""``sslab average RUN_DIR``: weighted average of the last k checkpoints -> an exported encoder."""
from __future__ import annotations

import argparse

from sslab.core.registry import COMMANDS


def _run(args: argparse.Namespace) -> int:
    from sslab.eval.averaging import average_run

    weights = args.weights
    if weights and "," in weights:
        weights = [float(x) for x in weights.split(",")]
    out = average_run(args.run_dir, last=args.last, weights=weights, out_dir=args.out)
    print(f"averaged the last {args.last} checkpoints of {args.run_dir} -> {out}")
    return 0


@COMMANDS.register("average")
def average_command(parser: argparse.ArgumentParser) -> None:
    """Average the last k checkpoints of a run (uniform, linear, exp:<gamma> or explicit weights)."""
    parser.add_argument("run_dir", help="run directory with checkpoints/step_*.pt and encoder/")
    parser.add_argument("--last", type=int, default=3, help="number of newest checkpoints (default 3)")
    parser.add_argument("--weights", default="uniform",
                        help="uniform | linear | exp:<gamma> | comma-separated list, oldest first")
    parser.add_argument("--out", default=None, help="output folder (default <run>/encoder_avg)")
    parser.set_defaults(func=_run)
