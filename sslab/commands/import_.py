"""``sslab import FORMAT CHECKPOINT --out DIR``: published checkpoints -> sslab encoder folders.

Dispatches to ``sslab.core.registry.IMPORTERS`` (modules in ``sslab/importers/``): each importer is called
as ``importer(checkpoint, out_dir, **options)`` with ``ignore=[prefixes]`` when ``--ignore`` is given and
``--set key=value`` options (YAML values). The result loads with ``sslab.load_encoder``, embeds with
``sslab embed``, probes with ``sslab probe DIR --experiment X`` and starts pretraining through the
experiment key ``encoder.init_from: DIR``.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from sslab.core.registry import COMMANDS, IMPORTERS


def parse_options(pairs: Any) -> Dict[str, Any]:
    """``["num_heads=6", "mean=[0.5,0.5,0.5]"]`` -> dict (values parsed as YAML)."""
    import yaml

    out: Dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _run(args: argparse.Namespace) -> int:
    importer = IMPORTERS.get(args.format)
    options = parse_options(args.set)
    if args.ignore:
        options["ignore"] = list(args.ignore)
    out = importer(args.checkpoint, args.out, **options)
    print(f"imported {args.format} checkpoint {args.checkpoint} -> {out} (sslab.load_encoder / sslab embed ready)")
    return 0


@COMMANDS.register("import")
def import_command(parser: argparse.ArgumentParser) -> None:
    """Convert a published checkpoint (hf-wav2vec2, timm-vit, ecg-jepa, ...) into an sslab encoder folder."""
    parser.add_argument("format", help=f"checkpoint format: {', '.join(IMPORTERS.names())}")
    parser.add_argument("checkpoint", help="checkpoint file or folder (local; nothing is downloaded)")
    parser.add_argument("--out", required=True, help="encoder folder to write")
    parser.add_argument("--ignore", action="append", metavar="PREFIX",
                        help="drop checkpoint keys with this prefix deliberately (e.g. a classifier head); repeatable")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="importer option; repeatable")
    parser.set_defaults(func=_run)
