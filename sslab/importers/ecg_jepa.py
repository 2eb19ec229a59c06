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
``which="target_encoder"`` is the default.  The folder's input pipeline (``encoder.json["pipeline"]``, read by
``sslab embed``/``sslab probe``) is the original's: ``config.sampling_frequency`` and ``config.channels`` (the
12 standard leads in sslab's order), crops of ``config.channel_size`` samples, and per-lead standardisation with
the PTB-XL constants the original's ``pretrain.py`` hard-codes (mean/std of folds 1-8, clip 5) -- for other data
the original used other constants (``--set norm=none`` leaves normalisation off).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from sslab.core.registry import IMPORTERS

PREFIXES = ("encoder", "target_encoder")
# per-lead mean / std (mV) of PTB-XL folds 1-8 used by the original pretrain.py (I, II, III, aVR, aVL, aVF, V1-V6)
PTBXL_MEAN = [-0.002, -0.002, 0.000, 0.002, -0.001, -0.001, 0.000, -0.001, -0.002, -0.001, -0.001, -0.001]
PTBXL_STD = [0.191, 0.166, 0.173, 0.142, 0.149, 0.147, 0.235, 0.338, 0.335, 0.299, 0.294, 0.242]


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

    Options (``sslab import ecg-jepa CKPT --out DIR --set which=encoder --set config=cfg.json``):
        which: ``target_encoder`` (default; the EMA encoder the original evaluates) or ``encoder``.
        config: path of a JSON file with the original configuration (needed for ``.safetensors``
            checkpoints without a ``<stem>.json`` beside them; overrides a ``.pt`` checkpoint's own).
        ignore: key prefixes (after selecting ``which``) to drop deliberately (``--ignore``).
        norm: ``ptbxl`` (default, the original's PTB-XL constants) or ``none`` for the pipeline.

    Writes the encoder folder through :func:`sslab.importers.convert.write_import` (weights, spec, pipeline,
    provenance); the weights are loaded strictly (a missing, unexpected or mis-shaped tensor is an error naming it).
    """
    from sslab.core.export import build_encoder
    from sslab.importers.convert import load_checked, map_keys, write_import

    unknown = set(options) - {"which", "config", "ignore", "norm"}
    if unknown:
        raise ValueError(f"ecg-jepa importer: unknown options {sorted(unknown)}; known: which, config, ignore, norm")
    norm = str(options.get("norm", "ptbxl"))
    if norm not in ("ptbxl", "none"):
        raise ValueError(f"ecg-jepa importer: norm must be 'ptbxl' or 'none', got {norm!r}")
    which = str(options.get("which", "target_encoder"))
    if which not in PREFIXES:
        raise ValueError(f"ecg-jepa importer: which must be one of {PREFIXES}, got {which!r}")
    config_path = Path(options["config"]) if options.get("config") else None
    checkpoint_path = Path(checkpoint_path)
    state, cfg = _load(checkpoint_path, config_path)
    selected = _strip_prefix(state, which)
    if not selected:
        prefixes = sorted({k.split(".")[0] for k in state})
        raise ValueError(f"{checkpoint_path}: no '{which}.*' tensors (top-level prefixes: {prefixes})")
    weights = map_keys(selected, reference_key_to_sslab, options.get("ignore") or (), where=str(checkpoint_path))
    spec = encoder_spec(cfg)
    encoder = build_encoder(spec)
    load_checked(encoder, weights, f"{checkpoint_path} ({which})")
    return write_import(encoder, out_dir, "ecg-jepa", checkpoint_path, pipeline(cfg, norm), which=which,
                        original_config={k: cfg[k] for k in ("sampling_frequency", "channels", "channel_size",
                                                             "patch_size") if k in cfg})


def pipeline(cfg: Mapping[str, Any], norm: str = "ptbxl") -> Dict[str, Any]:
    """The original's input pipeline in sslab's ``encoder.json["pipeline"]`` form (see ECGModality.input_pipeline)."""
    from sslab.datasets.ecg_wfdb import LEADS_12

    fs = float(cfg.get("sampling_frequency", 500))
    channels = [c.upper() for c in cfg.get("channels", LEADS_12)]
    if channels != [c.upper() for c in LEADS_12]:
        raise ValueError(f"ECG-JEPA config channels {cfg.get('channels')}: the importer knows the 12 standard leads "
                         f"in the order {list(LEADS_12)}")
    crop = int(cfg.get("channel_size", 5000))
    return {"kind": "ecg", "fs": fs, "leads": list(LEADS_12), "storage_dtype": "float32",
            "norm": None if norm == "none" else {"mean": PTBXL_MEAN, "std": PTBXL_STD, "clip": 5.0,
                                                 "fitted_on": "PTB-XL folds 1-8 (constants of the original pretrain.py)"},
            "crop_samples": crop, "crop_seconds": crop / fs, "eval_stride_samples": int(round(1.25 * fs)),
            "eval_stride_seconds": 1.25, "patch_size": int(cfg["patch_size"]), "ptbxl_rate": int(fs),
            "pooling": "mean of the encoder's tokens per crop, then mean over the record's crops"}
