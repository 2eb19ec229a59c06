"""Import an original ECG-JEPA checkpoint (kweimann/ECG-JEPA; Weimann & Conrad 2024) as an sslab ``vit1d`` encoder.

The original code's model is sslab's ``vit1d`` with ``bias=False, norm_eps=1e-6`` and its ``num_registers``
(``tests/ecg/test_ecg_jepa_parity.py`` reproduces its losses, gradients and weights); its parameter names equal
sslab's except the patch embedding (``patch_embed.proj.weight`` there, ``patch_embed.weight`` here), and its
sin-cos position table is a non-persistent buffer that sslab computes instead.

Accepted checkpoints:

* ``.pt`` / ``.pth`` written by the original ``pretrain.py`` (``{"model": state_dict, "config": {...}, ...}``) or
  by its ``scripts/minify_pretrained_checkpoint.py`` (``{"model": target_encoder.* only, "config": ...}``);
* ``.safetensors`` with the state dict (keys optionally under one prefix such as ``init.``), with the
  configuration from a JSON file next to it (``<stem>.json``, or the ``config=`` option), e.g. the parity
  fixture in ``../shared/data/reference/ecg_jepa/``.

The original code evaluates the EMA target encoder (its minify script keeps only ``target_encoder.*``), so
``which="target_encoder"`` is the default.  Note: the original trains on 12 leads at 500 Hz in its own lead
order (``config.channels``: I, II, III, aVR, aVL, aVF, V1-V6) and normalises with its own per-dataset constants;
``encoder.json`` records these under ``"ecg_jepa"`` so that the input pipeline can be matched.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from sslab.core.registry import IMPORTERS

PREFIXES = ("encoder", "target_encoder")


def reference_key_to_sslab(key: str) -> str:
    """Parameter name in the original ECG-JEPA model -> sslab (``JEPA`` objective) name.

    ``encoder.X`` stays, ``target_encoder.X`` -> ``target.module.X``, ``predictor.X`` stays, and the patch
    embedding ``patch_embed.proj.weight`` -> ``patch_embed.weight``.
    """
    key = key.replace("patch_embed.proj.", "patch_embed.")
    if key.startswith("target_encoder."):
        key = "target.module." + key[len("target_encoder."):]
    return key


def sslab_key_to_reference(key: str) -> str:
    """Inverse of :func:`reference_key_to_sslab`."""
    if key.startswith("target.module."):
        key = "target_encoder." + key[len("target.module."):]
    return key.replace("patch_embed.", "patch_embed.proj.")


def encoder_spec(config: Mapping[str, Any]) -> Dict[str, Any]:
    """sslab ``vit1d`` spec of the original configuration (``configs/pretrain/*.yaml`` fields)."""
    missing = [k for k in ("dim", "depth", "num_heads", "patch_size") if k not in config]
    if missing:
        raise ValueError(f"ECG-JEPA config lacks {missing}; needs dim, depth, num_heads, patch_size (and channels)")
    if float(config.get("layer_scale_eps", 0.0) or 0.0):
        raise ValueError("ECG-JEPA config uses LayerScale (layer_scale_eps > 0), which vit1d does not implement")
    channels = config.get("channels")
    in_chans = len(channels) if channels else int(config.get("num_channels", 12))
    return {"name": "vit1d", "in_chans": in_chans, "patch_size": int(config["patch_size"]),
            "dim": int(config["dim"]), "depth": int(config["depth"]), "heads": int(config["num_heads"]),
            "mlp_ratio": float(config.get("mlp_ratio", 4.0)), "num_registers": int(config.get("num_registers", 0)),
            "bias": bool(config.get("bias", True)), "qkv_bias": bool(config.get("qkv_bias", False)),
            "norm_eps": float(config.get("norm_eps", 1e-6))}


def _load(path: Path, config_path: Optional[Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ECG-JEPA checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
        cfg_file = config_path or path.with_suffix(".json")
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path}: safetensors checkpoints need the configuration as JSON "
                                    f"({cfg_file} not found; pass config=PATH)")
        cfg = json.loads(cfg_file.read_text())
        return state, cfg.get("config", cfg)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unpickling failure is a bad checkpoint
        raise ValueError(f"{path}: not a readable torch checkpoint ({err})") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: expected the original pretrain.py format {{'model': ..., 'config': ...}}")
    cfg = ckpt.get("config")
    if config_path is not None:
        cfg = json.loads(Path(config_path).read_text())
        cfg = cfg.get("config", cfg)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: checkpoint has no 'config' dict; pass config=PATH to a JSON configuration")
    return dict(ckpt["model"]), cfg


def _strip_prefix(state: Dict[str, torch.Tensor], which: str) -> Dict[str, torch.Tensor]:
    """Keys ``[<any single prefix>.]<which>.X`` -> ``X`` (e.g. ``init.target_encoder.blocks.0...``)."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        for start in (0, 1):
            if parts[start:start + 1] == [which]:
                out[".".join(parts[start + 1:])] = value
                break
    return out


@IMPORTERS.register("ecg-jepa")
def import_ecg_jepa(checkpoint_path: Path, out_dir: Path, **options: Any) -> Path:
    """Convert an original ECG-JEPA checkpoint into an sslab encoder folder; returns ``out_dir``.

    Signature (the ``IMPORTERS`` contract): ``(checkpoint_path: Path, out_dir: Path, **options) -> Path``.

    Options:
        which: ``target_encoder`` (default; the EMA encoder the original evaluates) or ``encoder``.
        config: path of a JSON file with the original configuration (needed for ``.safetensors``
            checkpoints without a ``<stem>.json`` beside them; overrides a ``.pt`` checkpoint's own).

    Writes ``out_dir/encoder.safetensors`` + ``encoder.json`` via :func:`sslab.core.export.save_encoder`; the
    weights are loaded strictly (a missing or unexpected tensor is an error naming it).
    """
    from sslab.core.export import build_encoder, save_encoder

    unknown = set(options) - {"which", "config"}
    if unknown:
        raise ValueError(f"ecg-jepa importer: unknown options {sorted(unknown)}; known: which, config")
    which = str(options.get("which", "target_encoder"))
    if which not in PREFIXES:
        raise ValueError(f"ecg-jepa importer: which must be one of {PREFIXES}, got {which!r}")
    config_path = Path(options["config"]) if options.get("config") else None
    checkpoint_path = Path(checkpoint_path)
    state, cfg = _load(checkpoint_path, config_path)
    weights = {reference_key_to_sslab(k): v for k, v in _strip_prefix(state, which).items()}
    if not weights:
        prefixes = sorted({k.split(".")[0] for k in state})
        raise ValueError(f"{checkpoint_path}: no '{which}.*' tensors (top-level prefixes: {prefixes})")
    spec = encoder_spec(cfg)
    encoder = build_encoder(spec)
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint_path}: '{which}' weights do not fit vit1d {spec} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    extra = {"imported_from": {"format": "ecg-jepa", "checkpoint": str(checkpoint_path), "which": which},
             "ecg_jepa": {k: cfg[k] for k in ("sampling_frequency", "channels", "channel_size", "patch_size")
                          if k in cfg}}
    return save_encoder(encoder, out_dir, extra=extra)
