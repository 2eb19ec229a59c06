"""``sslab extract RUN --width W --depth D``: write one sub-network of an elastic ViT run (POA) as a
standalone timm checkpoint.

Output folder (default ``RUN/extracted/w{W}_d{D}``):

- ``model.safetensors`` + ``config.json``: a plain timm checkpoint, loadable with no sslab code::

      cfg = json.load(open("config.json"))
      model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
      model.load_state_dict(safetensors.torch.load_file("model.safetensors"))

- ``encoder.safetensors`` + ``encoder.json``: the same weights as an sslab ``vit_timm`` encoder, so
  ``sslab.load_encoder(folder)`` and ``sslab probe folder --experiment ...`` work on it.

Only sizes the run trained are offered: for a POA run, the grid of its ``objective.widths`` x
``objective.depths`` plus the full model (:func:`trained_sizes`); ``--all`` extracts exactly those
(``--widths``/``--depths`` pick a subset), and asking for an untrained size is an error naming the trained
ones. ``--probe`` then runs kNN + linear probes of every size beside the same size at random init and takes
the same ``key=value`` overrides as ``sslab probe`` (e.g. ``data.probe.path=breastmnist.npz``).
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

    from sslab.core.export import inherit_artifact, save_encoder
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
                 extra={"extracted_from": str(source), "width": width, "depth": depth, "num_params": n_params},
                 **(inherit_artifact(source, width=width, depth=depth) if source else {}))
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


def trained_sizes(run: Union[str, Path], encoder: Any) -> List[Tuple[int, int]]:
    """(width, depth) pairs the run trained: POA's grid of ``objective.widths`` x ``objective.depths`` and
    the full model; any other elastic objective trains the full model only. Needs the run's config.yaml."""
    from sslab.core.config import load_experiment

    cfg_file = Path(run) / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{run}: no config.yaml, so the trained sizes are unknown; extract from the run "
                                "directory")
    obj = load_experiment(cfg_file).objective
    full = (encoder.dim, encoder.depth)
    if obj.get("name") != "poa":
        return [full]
    grid = encoder.size_grid(obj.get("widths"), obj.get("depths"))
    return sorted(set(grid) | {full}, key=lambda s: encoder.relative_cost(*s))


def select_sizes(trained: List[Tuple[int, int]], widths: Optional[List[int]] = None,
                 depths: Optional[List[int]] = None) -> List[Tuple[int, int]]:
    """The trained sizes restricted to ``widths``/``depths``; a width or depth never trained is an error."""
    tw, td = sorted({w for w, _ in trained}), sorted({d for _, d in trained})
    for name, asked, have in (("widths", widths, tw), ("depths", depths, td)):
        bad = sorted(set(asked or []) - set(have))
        if bad:
            raise ValueError(f"--{name} {bad}: not trained by this run (trained {name}: {have})")
    return [(w, d) for w, d in trained if (widths is None or w in widths) and (depths is None or d in depths)]


def _ints(text: Optional[str]) -> Optional[List[int]]:
    return [int(x) for x in text.split(",")] if text else None


def _run(args: argparse.Namespace) -> int:
    encoder = load_elastic(args.run)
    run = Path(args.run)
    base = Path(args.out) if args.out else run / "extracted"
    trained = trained_sizes(run, encoder)
    if args.all:
        sizes: List[Tuple[int, int]] = select_sizes(trained, _ints(args.widths), _ints(args.depths))
    else:
        if args.width is None or args.depth is None:
            raise SystemExit("sslab extract: give --width and --depth, or --all")
        size = encoder.check_size(args.width, args.depth)
        if size not in trained:
            raise ValueError(f"width {size[0]} depth {size[1]} was not trained by {run} (trained sizes: "
                             f"{', '.join(f'w{w}_d{d}' for w, d in trained)})")
        sizes = [size]
    if args.overrides and not args.probe:
        raise ValueError(f"key=value overrides {args.overrides} only apply with --probe")
    for w, d in sizes:
        folder = base / f"w{w}_d{d}" if (args.all or not args.out) else base
        extract_size(encoder, w, d, folder, source=str(run))
        print(f"width {w:4d} depth {d:2d} -> {folder}")
    if args.probe:
        from sslab.modalities.vision import probe_sizes

        from sslab.core.config import load_experiment

        cfg = load_experiment(run / "config.yaml", args.overrides)  # the same overrides as `sslab probe`
        result = probe_sizes(run, sizes=sizes, cfg=cfg, progress=False if args.no_progress else None)
        print(result["table"])
        print(f"wrote {result['json']}, {result['png']}")
    return 0


@COMMANDS.register("extract")
def extract_command(parser: argparse.ArgumentParser) -> None:
    """Write sub-networks of an elastic ViT run (POA) as standalone timm checkpoints."""
    parser.add_argument("run", help="run directory of an elastic_vit encoder (its config.yaml names the trained sizes)")
    parser.add_argument("overrides", nargs="*", help="with --probe: overrides applied to the run's config, as for "
                                                      "`sslab probe` (e.g. data.probe.path=x.npz probe.C=0.1)")
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
