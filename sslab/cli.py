"""Command line: ``sslab pretrain|probe|list|demo`` plus commands registered by plugins
(``feasibility``, ``extract``, ``average``, ...)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional

from sslab.core import distributed as dist_utils
from sslab.core.errors import UserError, is_disk_full
from sslab.core.registry import ALL_REGISTRIES, COMMANDS


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from sslab.core.config import load_experiment
    from sslab.run import pretrain, probe

    cfg = load_experiment(args.experiment, args.overrides)
    run_dir = pretrain(cfg)
    print(f"run directory: {run_dir}")
    if args.probe:
        result = probe(run_dir, cfg=cfg)  # bars only on a terminal or with train.progress=true
        from sslab.eval.probe import format_table

        print(format_table(result["rows"]))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from sslab.core.config import load_experiment
    from sslab.eval.probe import format_table
    from sslab.run import probe

    cfg = load_experiment(args.experiment, args.overrides) if args.experiment else None
    if cfg is None and args.overrides:
        from sslab.core.config import load_experiment as _load

        cfg = _load(Path(args.target) / "config.yaml", args.overrides)
    result = probe(args.target, cfg=cfg, out_dir=args.out)
    print(format_table(result["rows"]))
    out = Path(args.out) if args.out else (Path(args.target) if Path(args.target).is_dir() else Path(args.target).parent)
    print(f"\nwrote {out / 'probe.json'}, {out / 'probe.md'}, {out / 'probe.png'}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for kind, reg in ALL_REGISTRIES.items():
        print(f"{kind}:")
        for name in reg.names():
            print(f"  {name}")
    return 0


def demo_experiment_path() -> Path:
    return Path(str(resources.files("sslab.configs") / "demo.yaml"))


#: what the 5-seed `sslab compare` measurement of this demo found (docs/ecg.md, "Synthetic demo"), printed beside
#: each task so a single run's table is read against the spread over seeds; a task that stops winning must say so here
DEMO_NOTES: Dict[str, str] = {
    "synthetic_morphology": "5/5 seeds gain at 1 and 2 threads, 10% and 100% labels",
    "synthetic_rhythm": "5/5 seeds gain at 1 and 2 threads, 10% and 100% labels",
    "synthetic_heart_rate": "5/5 seeds gain at 1 and 2 threads; R2 with 10% labels is poor for every encoder",
}


def _start_floor_warmup(path: Path, overrides: List[str]) -> "subprocess.Popen[bytes]":
    """A second process computing the classical floors (neurokit2 features) while the first pretrains."""
    code = "import sys; from sslab.eval.floors import warm_floor_cache; warm_floor_cache(sys.argv[1], sys.argv[2:])"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, str(path), *overrides], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _cmd_demo(args: argparse.Namespace) -> int:
    from sslab.core.config import load_experiment
    from sslab.core.modality import build_modality
    from sslab.eval.compare import compact_table
    from sslab.run import pretrain, probe

    path = demo_experiment_path()
    tty = sys.stderr.isatty()
    overrides = [f"output_dir={args.output_dir}", f"train.progress={str(tty).lower()}", *args.overrides]
    cfg = load_experiment(path, overrides)
    if args.fresh and cfg.run_dir.exists():
        shutil.rmtree(cfg.run_dir)
    print(f"sslab demo: {cfg.modality} / {cfg.objective.get('name')} on {cfg.encoder.get('name')} "
          f"({cfg.train.steps} steps) from {path}", flush=True)
    build_modality(cfg).probe_tasks()  # generate (or load) the synthetic records once, before two processes read them
    warmup = _start_floor_warmup(path, overrides) if cfg.probe.floors else None
    run_dir = pretrain(cfg)
    if warmup is not None:
        _, err = warmup.communicate()
        if warmup.returncode:  # the probe computes the floors itself then; say why the warm-up failed
            print(f"(classical-floor warm-up failed: {err.decode(errors='replace').strip().splitlines()[-1:]})")
    result = probe(run_dir, cfg=cfg, progress=cfg.train.progress)
    print("\nlinear probe of the frozen encoder vs the same encoder at random init vs a classical floor "
          "(no pretraining); gain = pretrained - random init:\n")
    print(compact_table(result["rows"], DEMO_NOTES))
    print("\none seed; over 5 seeds x 1 and 2 threads: `sslab compare` table in docs/ecg.md (synthetic demo)")
    print(f"artifacts in {run_dir}/: config.yaml, metrics.jsonl, loss.png, checkpoints/, encoder/, "
          "probe.json (all metrics), probe.md, probe.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sslab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain from an experiment YAML (key.sub=value overrides)")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*", help="e.g. train.steps=100 optim.lr=3e-4")
    p.add_argument("--probe", action="store_true", help="run the probe after pretraining")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("probe", help="linear probe / kNN of a run dir or exported encoder vs random init")
    p.add_argument("target", help="run directory, or an exported encoder folder/file with --experiment")
    p.add_argument("overrides", nargs="*", help="overrides applied to the run's config (e.g. probe.C=0.1)")
    p.add_argument("--experiment", help="experiment YAML giving modality/data for probing a bare encoder")
    p.add_argument("--out", help="where to write probe.json/.md/.png (default: the run dir)")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("list", help="list everything registered (encoders, objectives, datasets, ...)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("demo", help="pretrain the embedded default on CPU, then probe it vs random init and a "
                                    "classical floor")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo run first")
    p.set_defaults(func=_cmd_demo)

    for name in COMMANDS.names():
        setup = COMMANDS.get(name)
        p = sub.add_parser(name, help=(setup.__doc__ or "").strip().splitlines()[0] if setup.__doc__ else None)
        setup(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    # argparse stops filling ``overrides`` at the first flag, so ``pretrain exp.yaml --probe a=b`` would leave
    # ``a=b`` unrecognised; key=value words after a flag are overrides too
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = int(args.func(args) or 0)
        dist_utils.cleanup()  # under torchrun: tear the group down before exit (only on success, as a
        return code           # destroy while a failed peer is mid-collective would hang)
    except KeyboardInterrupt:
        print(f"sslab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- one line per error; SSLAB_DEBUG=1 shows the traceback
        if os.environ.get("SSLAB_DEBUG", "") not in ("", "0"):
            raise
        code = exit_code(err)
        message = " ".join(str(err).split()) or type(err).__name__
        if code == 1:
            message = f"unexpected {type(err).__name__}: {message} (rerun with SSLAB_DEBUG=1 for the traceback)"
        print(f"sslab {args.command}: error: {message}", file=sys.stderr)
        return code


# bad input by convention even when raised outside sslab's own error classes (a missing file, a bad value)
USER_ERROR_TYPES = (UserError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def exit_code(err: BaseException) -> int:
    """2 for an error the user can fix (:class:`~sslab.core.errors.UserError`, bad values, missing files,
    a full disk), 1 for an unexpected failure."""
    if isinstance(err, USER_ERROR_TYPES) or is_disk_full(err):
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
