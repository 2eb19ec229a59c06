"""The encoder artifact: ``encoder.safetensors`` + ``encoder.json`` + pipeline files + ``README.md``.

``encoder.json`` holds ``spec`` (registry name and kwargs), ``dim``, ``modality``, ``steps``, ``pipeline``
(the exact input preprocessing as data, see :mod:`sslab.core.pipeline`), ``provenance`` (sslab version,
git commit, resolved config, data source and record counts) and, once the run is probed, ``probe``
(the probe table rows). ``README.md`` is a model card generated from it.

``load_encoder(path)`` rebuilds the encoder from the registry and loads the weights strictly (missing or
unexpected keys are an error listing them), with no training code, no config and no network, and
attaches the preprocessing: ``encoder.pipeline`` (an :class:`~sslab.core.pipeline.InputPipeline` or
``None``), ``encoder.preprocess(raw, **meta)`` (raw sample(s) -> batch inputs) and
``encoder.embed_raw(raw, **meta)`` (raw sample(s) -> ``[B, D]`` features, the probe's pooling).
"""
from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from sslab.core.errors import UserError
from sslab.core.io import atomic_write, atomic_write_text
from sslab.core.registry import ENCODERS

WEIGHTS = "encoder.safetensors"
SPEC = "encoder.json"
CARD = "README.md"
FORMAT_VERSION = 2


class EncoderLoadError(UserError, RuntimeError):
    """An exported encoder folder whose weights do not match its spec (missing / unexpected keys)."""


def resolve_init_from(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """``{init_from: DIR, **overrides}`` -> DIR's encoder spec updated with ``overrides`` (``init_from`` kept),
    so modalities see the full architecture; other specs are returned unchanged."""
    spec = dict(spec)
    if "init_from" not in spec:
        return spec
    base = dict(read_meta(spec["init_from"])["spec"])
    if "name" in spec and spec["name"] != base.get("name"):
        raise ValueError(f"encoder.name={spec['name']!r} but encoder.init_from={spec['init_from']} holds a "
                         f"{base.get('name')!r} encoder")
    return {**base, **spec}


def build_encoder(spec: Mapping[str, Any]) -> nn.Module:
    """Build ``ENCODERS[spec['name']](**rest)`` and remember ``spec`` for export.

    ``spec["init_from"]`` (an exported or imported encoder folder) starts from that folder's architecture
    and weights, loaded strictly; the remembered spec leaves it out (the export stands alone)."""
    spec = resolve_init_from(spec)
    init_from = spec.pop("init_from", None)
    if "name" not in spec:
        raise ValueError(f"encoder spec needs a 'name' (one of: {', '.join(ENCODERS.names())}); got {dict(spec)}")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    encoder = ENCODERS.build(spec["name"], **kwargs)
    encoder.sslab_spec = spec  # type: ignore[assignment]
    if init_from is not None:
        from safetensors.torch import load_file

        folder = _resolve(init_from)
        state = load_file(str(folder / WEIGHTS))
        check_state_keys(list(encoder.state_dict()), list(state), folder / WEIGHTS)
        encoder.load_state_dict(state, strict=True)
        encoder.sslab_init_from = str(folder)  # type: ignore[assignment]
    return encoder


def git_commit(start: Optional[Path] = None) -> Optional[str]:
    """``git rev-parse HEAD`` of the sslab checkout (``+dirty`` when it has changes); ``None`` outside git."""
    where = start or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(config: Optional[Mapping[str, Any]] = None, data: Optional[Mapping[str, Any]] = None,
               **extra: Any) -> Dict[str, Any]:
    """Where an encoder comes from: sslab version, git commit, versions, the resolved config, the data."""
    import platform

    import sslab

    return {"sslab_version": sslab.__version__, "git_commit": git_commit(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
            "python": platform.python_version(), "torch": torch.__version__,
            "config": dict(config) if config is not None else None, "data": dict(data or {}), **extra}


def save_encoder(encoder: nn.Module, out_dir: Union[str, Path],
                 state_dict: Optional[Dict[str, torch.Tensor]] = None,
                 extra: Optional[Dict[str, Any]] = None,
                 pipeline: Optional[Mapping[str, Any]] = None,
                 files: Optional[Mapping[str, Union[str, Path]]] = None,
                 provenance: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``out_dir/encoder.safetensors``, ``encoder.json`` and ``README.md`` atomically.

    ``pipeline``: the modality's ``input_pipeline()`` dict; ``files``: name -> source path of files the
    pipeline needs (copied into ``out_dir``, e.g. ``tokenizer.json``); ``provenance``: see :func:`provenance`.
    """
    from safetensors.torch import save_file

    from sslab.core.pipeline import jsonable

    spec = getattr(encoder, "sslab_spec", None)
    if spec is None:
        raise ValueError("encoder was not built with sslab.core.export.build_encoder; its spec is unknown")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else encoder.state_dict()
    # safetensors refuses shared storage; clone so tied weights are stored (and reloaded) separately
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    atomic_write(out_dir / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    for name, src in (files or {}).items():
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: pipeline file {name} not found")
        if src.resolve() != (out_dir / name).resolve():
            atomic_write(out_dir / name, lambda tmp, _s=src: shutil.copyfile(_s, tmp))
    meta: Dict[str, Any] = {"format": FORMAT_VERSION, "spec": spec, "dim": getattr(encoder, "dim", None),
                            **(extra or {})}
    if pipeline:
        meta["pipeline"] = jsonable(dict(pipeline))
    if provenance is not None:
        meta["provenance"] = jsonable(dict(provenance))
    atomic_write_text(out_dir / SPEC, json.dumps(meta, indent=2))
    write_model_card(out_dir)
    return out_dir


def _resolve(path: Union[str, Path]) -> Path:
    path = Path(path)
    candidates = [path, path / "encoder"] if path.is_dir() else [path.parent]
    for c in candidates:
        if (c / WEIGHTS).is_file() and (c / SPEC).is_file():
            return c
    raise FileNotFoundError(
        f"no exported encoder at {path}: expected {WEIGHTS} and {SPEC} in it or in its encoder/ folder"
    )


def encoder_folder(path: Union[str, Path]) -> Path:
    """The exported encoder folder of a run dir, an encoder folder or its ``.safetensors`` file."""
    return _resolve(path)


def read_meta(path: Union[str, Path]) -> Dict[str, Any]:
    """``encoder.json`` of a run dir / encoder folder."""
    return json.loads((_resolve(path) / SPEC).read_text())


def check_state_keys(expected: Sequence[str], found: Sequence[str], where: Union[str, Path]) -> None:
    """Raise :class:`EncoderLoadError` listing every missing and unexpected weight key."""
    exp, got = set(expected), set(found)
    missing, unexpected = sorted(exp - got), sorted(got - exp)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected)}")
        raise EncoderLoadError(f"{where}: weights do not match the encoder spec; " + "; ".join(parts))


def inherit_artifact(path: Union[str, Path], **derived: Any) -> Dict[str, Any]:
    """``save_encoder`` keyword arguments carrying an existing encoder folder's pipeline, pipeline files and
    provenance over to a derived export (checkpoint average, extracted sub-network); ``derived`` is
    recorded under ``provenance["derived"]``."""
    try:
        folder = _resolve(path)
    except FileNotFoundError:
        return {}
    meta = json.loads((folder / SPEC).read_text())
    pipe = meta.get("pipeline") or {}
    from sslab.core.pipeline import build_pipeline

    names = getattr(build_pipeline(pipe, folder), "files", ()) if pipe else ()
    prov = dict(meta.get("provenance") or {})
    if derived:
        prov["derived"] = {"from": str(folder), **derived}
    return {"pipeline": pipe or None, "files": {n: folder / n for n in names if (folder / n).is_file()},
            "provenance": prov or None}


def load_encoder(path: Union[str, Path], map_location: str = "cpu") -> nn.Module:
    """Load an exported encoder (run dir, its ``encoder/`` folder, or the .safetensors file), strictly.

    Returns the encoder in eval mode with ``pipeline``, ``preprocess`` and ``embed_raw`` attached (see the
    module docstring); ``sslab_meta`` holds ``encoder.json``.
    """
    from safetensors.torch import load_file

    from sslab.core.pipeline import build_pipeline

    folder = _resolve(path)
    meta = json.loads((folder / SPEC).read_text())
    if "spec" not in meta:
        raise ValueError(f"{folder / SPEC}: no 'spec' (not an sslab encoder.json)")
    encoder = build_encoder(meta["spec"])
    state = load_file(str(folder / WEIGHTS), device=map_location)
    expected = list(encoder.state_dict().keys())
    check_state_keys(expected, list(state.keys()), folder / WEIGHTS)
    encoder.load_state_dict(state, strict=True)
    pipeline = build_pipeline(meta.get("pipeline"), folder)
    attach_pipeline(encoder, pipeline)
    encoder.sslab_meta = meta  # type: ignore[assignment]
    encoder.sslab_folder = folder  # type: ignore[assignment]
    return encoder.eval()


def attach_pipeline(encoder: nn.Module, pipeline: Any) -> nn.Module:
    """Set ``encoder.pipeline``, ``encoder.preprocess(raw, **meta)`` and ``encoder.embed_raw(raw, **meta)``."""

    def _need() -> Any:
        if pipeline is None:
            raise ValueError("this encoder export records no input pipeline (exported before pipelines existed, "
                             "or by a modality without one); preprocess the inputs yourself")
        return pipeline

    def preprocess(raw: Any, **meta: Any) -> Any:
        """Raw sample(s) -> the batch inputs the probe feeds the encoder (validated against the pipeline)."""
        p = _need()
        return p.collate(p.preprocess(raw, **meta))

    def embed_raw(raw: Any, **meta: Any) -> torch.Tensor:
        """Raw sample(s) -> ``[B, D]`` features with the run's preprocessing and pooling (no grad)."""
        from sslab.core.trainer import move_to_device

        p = _need()
        device = next(iter(encoder.parameters())).device
        with torch.no_grad():
            return p.embed(encoder, move_to_device(preprocess(raw, **meta), device))

    encoder.pipeline = pipeline  # type: ignore[assignment]
    encoder.preprocess = preprocess  # type: ignore[assignment]
    encoder.embed_raw = embed_raw  # type: ignore[assignment]
    return encoder


# ----------------------------------------------------------------------------------------------- model card


def record_probe(path: Union[str, Path], rows: List[Dict[str, Any]], table: Optional[str] = None) -> Path:
    """Store a probe table (``probe.json`` rows) in ``encoder.json`` and rewrite the model card."""
    from sslab.core.pipeline import jsonable

    folder = _resolve(path)
    meta = json.loads((folder / SPEC).read_text())
    meta["probe"] = {"rows": jsonable(rows)}
    if table is not None:
        meta["probe"]["table"] = table
    atomic_write_text(folder / SPEC, json.dumps(meta, indent=2))
    write_model_card(folder)
    return folder


def write_model_card(folder: Union[str, Path]) -> Path:
    """``README.md`` of an encoder folder: what it is, what it was trained on, how to use it, probe numbers."""
    folder = Path(folder)
    meta = json.loads((folder / SPEC).read_text())
    atomic_write_text(folder / CARD, model_card(meta, folder))
    return folder / CARD


def _params(folder: Path) -> Optional[int]:
    try:
        from safetensors import safe_open

        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            return sum(int(torch.Size(f.get_slice(k).get_shape()).numel()) for k in f.keys())
    except Exception:  # card generation never fails an export
        return None


def model_card(meta: Mapping[str, Any], folder: Path) -> str:
    """The model card text (markdown) of an ``encoder.json``."""
    spec = meta.get("spec", {})
    modality = meta.get("modality") or (meta.get("pipeline") or {}).get("kind") or "?"
    prov = meta.get("provenance") or {}
    cfg = prov.get("config") or {}
    lines = [f"# sslab encoder: {spec.get('name')} ({modality})", ""]
    n = _params(folder)
    what = f"A `{spec.get('name')}` encoder with output width {meta.get('dim')}"
    what += f" ({n:,} parameters)" if n else ""
    if cfg.get("objective"):
        steps = meta.get("steps")
        what += f", pretrained with `{cfg['objective'].get('name')}` for {steps} step{'' if steps == 1 else 's'}"
    elif prov.get("imported_from"):
        what += f", imported from {prov['imported_from'].get('format')} checkpoint `{prov['imported_from'].get('path')}`"
    lines += [what + ".", ""]
    lines += ["## Trained on", ""]
    data = prov.get("data") or {}
    if data:
        lines += [f"- {k}: {v}" for k, v in data.items()]
    else:
        lines += ["- (not recorded)"]
    if prov.get("initialised_not_imported"):
        lines += [f"- not in the imported checkpoint, left at initial values: "
                  f"{', '.join(prov['initialised_not_imported'])}"]
    lines += [f"- sslab {prov.get('sslab_version', '?')}, git commit `{prov.get('git_commit')}`, "
              f"created {prov.get('created_utc', '?')}", ""]
    lines += ["## Input pipeline", ""]
    pipe = meta.get("pipeline")
    usage = "enc.embed_raw(raw)"
    if pipe:
        try:
            from sslab.core.pipeline import build_pipeline

            built = build_pipeline(pipe, folder)
            usage = built.usage  # type: ignore[union-attr]
            lines += built.describe()  # type: ignore[union-attr]
        except Exception:
            lines += [f"- `{k}`: {v!r}"[:120] for k, v in pipe.items()]
    else:
        why = prov.get("pipeline_error")
        lines += ["- not recorded: preprocess inputs yourself" + (f" (export-time error: {why})" if why else "")]
    lines += ["", "## How to use it", "", "```bash",
              f"sslab embed path/to/{folder.name} INPUTS... --out features.npy   # + features.index.csv",
              "```", "", "```python", "import sslab", "",
              f"enc = sslab.load_encoder('path/to/{folder.name}')   # strict: refuses missing/unexpected weights",
              f"z = {usage}",
              "# -> [B, D] features with the run's preprocessing and the probe's pooling;",
              "# enc.preprocess(...) gives only the preprocessed batch the encoder takes",
              "```", "", "See docs/using_encoders.md in the sslab repository.", ""]
    probe = meta.get("probe")
    lines += ["## Probe", ""]
    if probe and probe.get("rows"):
        if probe.get("table"):
            lines += [probe["table"], ""]
        else:
            from sslab.eval.probe import format_table

            lines += [format_table(probe["rows"]), ""]
    else:
        lines += ["Not probed yet (`sslab probe RUN` adds the table here).", ""]
    return "\n".join(lines)
