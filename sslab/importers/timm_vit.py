"""``sslab import timm-vit CHECKPOINT --out DIR``: a timm VisionTransformer state dict (``.safetensors`` /
``.pth``; or a folder with timm's ``config.json`` + ``model.safetensors``, as written by ``sslab extract``
or the HF hub) -> the sslab ``vit_timm`` encoder.

Shapes give ``embed_dim``, ``in_chans``, ``patch_size``, ``depth``, the class token and ``img_size`` (from
the positional embedding); ``arch`` (default ``vit_tiny_patch16_224``) gives the rest (``num_heads``,
MLP ratio), overridable with ``--set num_heads=6``. Mean/std of the input pipeline come from ``--set
mean=... std=...``, else the config's ``pretrained_cfg``, else timm's pretrained config of ``arch``.
A classifier head (``head.*``) must be dropped explicitly with ``--ignore head.``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from sslab.core.registry import IMPORTERS
from sslab.importers.convert import (CheckpointImportError, load_checked, map_keys, read_json, read_state_dict,
                                     write_import)


def infer_args(state: Dict[str, Any], where: str) -> Dict[str, Any]:
    """ViT hyper-parameters readable from tensor shapes."""
    need = [k for k in ("patch_embed.proj.weight", "pos_embed") if k not in state]
    if need:
        raise CheckpointImportError(f"{where}: not a timm ViT state dict (no {', '.join(need)}); keys start with "
                                    f"{sorted({k.split('.')[0] for k in state})}")
    w = state["patch_embed.proj.weight"]
    dim, chans, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    prefix = int("cls_token" in state) + (int(state["reg_token"].shape[1]) if "reg_token" in state else 0)
    n = int(state["pos_embed"].shape[1]) - prefix
    side = int(round(math.sqrt(n)))
    if side * side != n:
        n += prefix  # no_embed_class models: pos_embed covers only patches
        side = int(round(math.sqrt(n - prefix)))
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    args: Dict[str, Any] = {"embed_dim": dim, "in_chans": chans, "patch_size": patch, "img_size": side * patch,
                            "depth": depth}
    if "cls_token" not in state:
        args["timm_kwargs"] = {"class_token": False}
        args["global_pool"] = "avg"
    if "fc_norm.weight" in state:
        args["global_pool"] = "avg"
    if "blocks.0.mlp.fc1.weight" in state:
        args["mlp_ratio"] = state["blocks.0.mlp.fc1.weight"].shape[0] / dim
    return args


def _floats(value: Any) -> Union[float, List[float]]:
    vals = [float(v) for v in (value if isinstance(value, (list, tuple)) else str(value).split(","))]
    return vals[0] if len(set(vals)) == 1 else vals


@IMPORTERS.register("timm-vit")
def import_timm_vit(checkpoint: str, out: str, ignore: Sequence[str] = (), arch: Optional[str] = None,
                    num_heads: Optional[int] = None, mean: Any = None, std: Any = None, **options: Any) -> Path:
    """Convert a timm ViT checkpoint (file or folder) into an sslab ``vit_timm`` encoder folder."""
    if options:
        raise CheckpointImportError(f"timm-vit: unknown option(s) {sorted(options)}; known: ignore, arch, num_heads, "
                                    "mean, std")
    import timm

    from sslab.core.export import build_encoder
    from sslab.encoders.vit_timm import DEFAULT_ARCH

    src = Path(checkpoint)
    cfg: Dict[str, Any] = {}
    if src.is_dir():
        if (src / "config.json").is_file():
            cfg = read_json(src / "config.json")
        weights = next((src / n for n in ("model.safetensors", "pytorch_model.bin") if (src / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{src}: no model.safetensors or pytorch_model.bin")
    else:
        weights = src
    raw = read_state_dict(weights)
    raw = {k[len("model."):] if k.startswith("model.") else k: v for k, v in raw.items()}  # sslab-style prefix
    kept = {k: v for k, v in raw.items() if not (ignore and k.startswith(tuple(ignore)))}
    arch = arch or cfg.get("architecture") or DEFAULT_ARCH
    args = infer_args(kept, str(weights))
    heads = num_heads or (cfg.get("model_args") or {}).get("num_heads")
    if heads is None:
        default = timm.create_model(arch, pretrained=False)
        heads = default.blocks[0].attn.num_heads if args["embed_dim"] == default.embed_dim else None
    if heads is None:
        raise CheckpointImportError(f"{weights}: embed_dim {args['embed_dim']} differs from {arch}'s; give the number of "
                                    "attention heads with --set num_heads=N")
    spec = {"name": "vit_timm", "arch": arch, "num_heads": int(heads), **args}
    encoder = build_encoder(spec)
    expected = set(encoder.state_dict())
    state = map_keys(kept, lambda k: "model." + k if "model." + k in expected else None, (), str(weights))
    initialised = load_checked(encoder, state, str(weights), may_stay_initialised=("mask_token",))
    pcfg = cfg.get("pretrained_cfg") or {}
    if mean is None or std is None:
        try:
            default_cfg = timm.get_pretrained_cfg(arch)
        except Exception:
            default_cfg = None
        mean = mean if mean is not None else pcfg.get("mean", getattr(default_cfg, "mean", (0.5,) * 3))
        std = std if std is not None else pcfg.get("std", getattr(default_cfg, "std", (0.5,) * 3))
    mean_v, std_v = _floats(mean), _floats(std)
    chans = args["in_chans"]
    if isinstance(mean_v, list):
        mean_v = mean_v[:chans]
    if isinstance(std_v, list):
        std_v = std_v[:chans]
    size = int(args["img_size"])
    pipeline = {"kind": "vision", "img_size": size, "channels": chans, "mean": mean_v, "std": std_v,
                "source": f"timm-vit import ({arch})", "source_size": [size, size], "file_resize": None,
                "eval_transforms": [f"images must be {size}x{size} (or --allow-resize: bilinear, antialias)",
                                    f"channels -> {chans}", f"(x - {mean_v}) / {std_v} per channel"],
                "pooling": f"timm pool ({spec.get('global_pool', 'token')}) + fc_norm"}
    return write_import(encoder, out, "timm-vit", src, pipeline, initialised, architecture=arch)
