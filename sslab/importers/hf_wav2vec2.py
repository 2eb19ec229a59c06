"""``sslab import hf-wav2vec2 FOLDER --out DIR``: a local Hugging Face wav2vec 2.0 folder (``config.json`` +
``model.safetensors`` or ``pytorch_model.bin``; ``Wav2Vec2ForPreTraining``, ``Wav2Vec2ForCTC`` or a bare
``Wav2Vec2Model``) -> the sslab ``wav2vec2`` encoder. Old weight-norm names (``weight_g``/``weight_v``) map
to torch's parametrization names. The quantizer and projection heads (pretraining only) may be absent; they
are then initialised and listed in the provenance. A CTC head (``lm_head.*``) must be dropped explicitly
with ``--ignore lm_head.``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from sslab.core.registry import IMPORTERS
from sslab.importers.convert import CheckpointImportError, load_checked, map_keys, read_json, read_state_dict, write_import

BARE = ("feature_extractor.", "feature_projection.", "encoder.", "masked_spec_embed", "adapter.")
HEADS = ("quantizer.", "project_hid.", "project_q.")
WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


def hf_key(key: str, expected: Sequence[str]) -> Optional[str]:
    """HF checkpoint key -> key of the sslab encoder (``model.`` + Wav2Vec2ForPreTraining key), or None."""
    if key.startswith("wav2vec2.") or key.startswith(HEADS):
        new = "model." + key
    elif key.startswith(BARE):
        new = "model.wav2vec2." + key
    else:
        return None
    if new not in expected:
        for old, cur in WEIGHT_NORM.items():
            if new.endswith(old) and new[: -len(old)] + cur in expected:
                return new[: -len(old)] + cur
    return new


@IMPORTERS.register("hf-wav2vec2")
def import_hf_wav2vec2(checkpoint: str, out: str, ignore: Sequence[str] = (), layer: int = -1,
                       **options: Any) -> Path:
    """Convert a local HF wav2vec 2.0 folder; ``layer`` = the hidden layer the features come from."""
    if options:
        raise CheckpointImportError(f"hf-wav2vec2: unknown option(s) {sorted(options)}; known: ignore, layer")
    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")
    from transformers import Wav2Vec2Config

    from sslab.core.export import build_encoder

    config = Wav2Vec2Config(**read_json(folder / "config.json")).to_dict()
    encoder = build_encoder({"name": "wav2vec2", "config": config, "layer": int(layer)})
    expected = list(encoder.state_dict())
    state = map_keys(read_state_dict(weights), lambda k: hf_key(k, expected), ignore, str(weights))
    initialised = load_checked(encoder, state, str(weights), may_stay_initialised=tuple(
        "model." + h for h in HEADS) + ("model.wav2vec2.masked_spec_embed",))
    fe = read_json(folder / "preprocessor_config.json") if (folder / "preprocessor_config.json").is_file() else {}
    pipeline: Dict[str, Any] = {
        "kind": "speech", "sample_rate": int(fe.get("sampling_rate", 16000)), "mono": "mean of channels",
        "resample": "torchaudio.functional.resample",
        "normalize": "zero mean, unit variance per item" if fe.get("do_normalize", True) else False,
        "min_seconds": 0.0, "silence_threshold": 1e-4, "chunk_seconds": None, "layer": int(layer),
        "level": "utterance"}
    return write_import(encoder, out, "hf-wav2vec2", folder, pipeline, initialised,
                        architectures=read_json(folder / "config.json").get("architectures"))
