"""``sslab extract RUN --width W --depth D``: write one sub-network of an elastic ViT run (POA) as a
standalone timm checkpoint.

Output folder (default ``RUN/extracted/w{W}_d{D}``):

- ``model.safetensors`` + ``config.json``: a plain timm checkpoint, loadable with no sslab code::

      cfg = json.load(open("config.json"))
      model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
      model.load_state_dict(safetensors.torch.load_file("model.safetensors"))

- ``encoder.safetensors`` + ``encoder.json``: the same weights as an sslab ``vit_timm`` encoder, so
  ``sslab.load_encoder(folder)`` and ``sslab probe folder --experiment ...`` work on it.

``--all`` extracts every size of the grid (``--widths``/``--depths``, default 1/4..1 of the full
model); ``--probe`` then runs kNN + linear probes of every size beside the same size at random init.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from sslab.core.registry import COMMANDS

TIMM_WEIGHTS = "model.safetensors"
TIMM_CONFIG = "config.json"


def load_elastic(run: Union[str, Path]):
    """The exported encoder of ``run``; must be an elastic ViT."""
    from sslab.core.export import load_encoder

    encoder = load_encoder(run)
    if not hasattr(encoder, "extract_encoder"):
        raise ValueError(f"{run}: encoder is a {type(encoder).__name__}, not an elastic_vit; nothing to extract")
    return encoder


def extract_size(encoder: Any, width: int, depth: int, out_dir: Union[str, Path],
                 source: str = "") -> Path:
    """Write the (width, depth) sub-network of ``encoder`` to ``out_dir`` (timm + sslab formats)."""
    from safetensors.torch import save_file

    from sslab.core.export import save_encoder
    from sslab.core.io import atomic_write, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = encoder.sub_timm_config(width, depth)
    state = encoder.sub_state_dict(width, depth)
    atomic_write(out / TIMM_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    n_params = sum(v.numel() for v in state.values())
    meta = {**cfg, "width": width, "depth": depth, "blocks_of_source": encoder.block_indices(depth),
            "num_params": n_params, "source_run": str(source),
            "load": "timm.create_model(architecture, pretrained=False, **model_args).load_state_dict("
                    "safetensors.torch.load_file('model.safetensors'))"}
    atomic_write_text(out / TIMM_CONFIG, json.dumps(meta, indent=2))
    save_encoder(encoder.extract_encoder(width, depth), out,
                 extra={"extracted_from": str(source), "width": width, "depth": depth, "num_params": n_params})
    return out


def load_timm_checkpoint(folder: Union[str, Path]):
    """Rebuild the plain timm model written by :func:`extract_size`."""
    import timm
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = json.loads((folder / TIMM_CONFIG).read_text())
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
    model.load_state_dict(load_file(str(folder / TIMM_WEIGHTS)), strict=True)
    return model.eval()


def _ints(text: Optional[str]) -> Optional[List[int]]:
    return [int(x) for x in text.split(",")] if text else None


def _run(args: argparse.Namespace) -> int:
    encoder = load_elastic(args.run)
    run = Path(args.run)
    base = Path(args.out) if args.out else run / "extracted"
    if args.all:
        sizes: List[Tuple[int, int]] = encoder.size_grid(_ints(args.widths), _ints(args.depths))
    else:
        if args.width is None or args.depth is None:
            raise SystemExit("sslab extract: give --width and --depth, or --all")
        sizes = [encoder.check_size(args.width, args.depth)]
    for w, d in sizes:
        folder = base / f"w{w}_d{d}" if (args.all or not args.out) else base
        extract_size(encoder, w, d, folder, source=str(run))
        print(f"width {w:4d} depth {d:2d} -> {folder}")
    if args.probe:
        from sslab.modalities.vision import probe_sizes

        result = probe_sizes(run, sizes=sizes, progress=False if args.no_progress else None)
        print(result["table"])
        print(f"wrote {result['json']}, {result['png']}")
    return 0


@COMMANDS.register("extract")
def extract_command(parser: argparse.ArgumentParser) -> None:
    """Write sub-networks of an elastic ViT run (POA) as standalone timm checkpoints."""
    parser.add_argument("run", help="run directory (or exported encoder folder) of an elastic_vit encoder")
    parser.add_argument("--width", type=int, default=None, help="embedding width (multiple of the head dim)")
    parser.add_argument("--depth", type=int, default=None, help="number of blocks (evenly spaced)")
    parser.add_argument("--all", action="store_true", help="extract every size of the width/depth grid")
    parser.add_argument("--widths", default=None, help="comma-separated widths for --all")
    parser.add_argument("--depths", default=None, help="comma-separated depths for --all")
    parser.add_argument("--out", default=None, help="output folder (default RUN/extracted/w{W}_d{D})")
    parser.add_argument("--probe", action="store_true",
                        help="probe every extracted size beside the same size at random init (one table)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)
