"""wav2vec 2.0 (Baevski et al. 2020) encoder wrapping ``transformers.Wav2Vec2ForPreTraining``.

The whole pretraining model (conv feature encoder, transformer, Gumbel quantizer, projection heads)
lives in ``self.model`` so that continued pretraining starts from *all* weights of a checkpoint
(XLS-R, wav2vec2-base, ...) and saves back in the same HF format:
``save_pretrained(out_dir)`` writes ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``,
which ``Wav2Vec2ForCTC.from_pretrained(out_dir)`` loads for CTC fine-tuning (the quantizer and
projection heads are ignored there, the CTC head is new). The sslab export (``save_encoder``) is
self-contained: the spec stored in ``encoder.json`` holds the full HF config instead of a path.

Encoder contract: ``forward(batch) -> tokens [B, N, D]`` from layer ``layer`` (0 = input of the first
transformer block, ``k`` = output of block ``k``, ``-1`` = final output), ``pool(tokens, frame_mask)``
= mean over real (unpadded) frames, ``dim`` = hidden size.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from sslab.core.registry import ENCODERS

log = logging.getLogger(__name__)


def _load_pretraining_model(pretrained: Optional[str], config: Optional[Mapping[str, Any]],
                            overrides: Mapping[str, Any]) -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    if (pretrained is None) == (config is None):
        raise ValueError("wav2vec2 encoder: give exactly one of 'pretrained' (a local HF folder) or 'config' (a dict)")
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"wav2vec2 encoder: {path} is not a local HF model folder (no config.json); "
                                    "sslab never downloads weights")
        import transformers

        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model, info = Wav2Vec2ForPreTraining.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True, **{dtype_kw: torch.float32},
            **dict(overrides))
        missing = [k for k in info.get("missing_keys", []) if k]
        if any(k.startswith(("quantizer.", "project_q", "project_hid")) for k in missing):
            warnings.warn(f"{path}: checkpoint has no quantizer/projection heads (fine-tuned or bare "
                          f"Wav2Vec2Model?); they start from random init: {sorted(missing)[:6]}", stacklevel=3)
        return model
    cfg = Wav2Vec2Config(**{**dict(config), **dict(overrides)})  # type: ignore[arg-type]
    return Wav2Vec2ForPreTraining(cfg)


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(nn.Module):
    """wav2vec 2.0 backbone + quantizer from a local HF folder (``pretrained``) or a config dict."""

    def __init__(self, pretrained: Optional[str] = None, config: Optional[Dict[str, Any]] = None,
                 config_overrides: Optional[Dict[str, Any]] = None, layer: int = -1) -> None:
        super().__init__()
        self.model = _load_pretraining_model(pretrained, config, config_overrides or {})
        cfg = self.model.config
        if layer < -1 or layer > cfg.num_hidden_layers:
            raise ValueError(f"wav2vec2 encoder: layer must be in [-1, {cfg.num_hidden_layers}], got {layer}")
        self.layer = layer
        self.dim = int(cfg.hidden_size)
        if getattr(self.model.wav2vec2, "masked_spec_embed", None) is None:
            # checkpoints saved with mask_time_prob = mask_feature_prob = 0 lack the mask embedding
            self.model.wav2vec2.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
            log.warning("wav2vec2: checkpoint has no masked_spec_embed; created a fresh one for pretraining")
        self._spec: Optional[Dict[str, Any]] = None

    # -- export: keep the spec self-contained (the HF config inline, no path needed to reload)
    @property
    def sslab_spec(self) -> Optional[Dict[str, Any]]:
        return self._spec

    @sslab_spec.setter
    def sslab_spec(self, spec: Mapping[str, Any]) -> None:
        spec = {k: v for k, v in dict(spec).items() if k not in ("pretrained", "config", "config_overrides")}
        spec["config"] = self.model.config.to_dict()
        spec["layer"] = self.layer
        self._spec = spec

    @property
    def config(self) -> Any:
        return self.model.config

    # -- lengths and masks
    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Number of conv-encoder frames for each waveform length (in samples)."""
        return self.model._get_feat_extract_output_lengths(sample_lengths).long()

    def frame_mask(self, attention_mask: Optional[torch.Tensor], num_frames: int, batch: int,
                   device: torch.device) -> torch.Tensor:
        """Bool ``[B, N]``: True on frames computed from real samples only."""
        if attention_mask is None:
            return torch.ones(batch, num_frames, dtype=torch.bool, device=device)
        lengths = self.frame_lengths(attention_mask.long().sum(-1)).clamp(max=num_frames)
        return torch.arange(num_frames, device=device)[None, :] < lengths[:, None]

    # -- forward passes
    def _hidden_layers(self, hidden: torch.Tensor, frame_mask: torch.Tensor, want: Optional[int]) -> Dict[str, Any]:
        """Run the transformer on projected features; capture block ``want`` with hooks."""
        enc = self.model.wav2vec2.encoder
        captured: List[torch.Tensor] = []
        handles = []
        if want is not None and want >= 0:
            if want == 0:
                handles.append(enc.layers[0].register_forward_pre_hook(
                    lambda m, args, kwargs: captured.append(args[0] if args else kwargs["hidden_states"]),
                    with_kwargs=True))
            else:
                handles.append(enc.layers[want - 1].register_forward_hook(
                    lambda m, args, out: captured.append(out[0] if isinstance(out, tuple) else out)))
        try:
            out = enc(hidden, attention_mask=frame_mask)
        finally:
            for h in handles:
                h.remove()
        last = out.last_hidden_state
        if self.model.wav2vec2.adapter is not None:
            last = self.model.wav2vec2.adapter(last)
        if want is not None and want >= 0 and not captured:
            raise RuntimeError(f"wav2vec2: layer {want} was skipped (LayerDrop in train mode?)")
        return {"last_hidden_state": last, "layer_state": captured[0] if captured else last}

    def features(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 mask_time_indices: Optional[torch.Tensor] = None, feature_grad_mult: float = 1.0) -> Dict[str, Any]:
        """Step-by-step wav2vec 2.0 forward used for pretraining.

        Returns ``conv_features`` (conv encoder output before layer norm, for the feature penalty),
        ``extract_features`` (layer-normed, the quantizer input), ``last_hidden_state`` (context
        vectors c_t with masked frames replaced by the learned mask embedding), ``frame_mask``.
        """
        if input_values.dim() != 2:
            raise ValueError(f"wav2vec2: input_values must be [B, T] waveforms, got shape {tuple(input_values.shape)}")
        w2v = self.model.wav2vec2
        conv = w2v.feature_extractor(input_values).transpose(1, 2)  # [B, N, C]
        if feature_grad_mult != 1.0 and conv.requires_grad:
            conv = conv * feature_grad_mult + conv.detach() * (1.0 - feature_grad_mult)  # fairseq GradMultiply
        B, N, _ = conv.shape
        frame_mask = self.frame_mask(attention_mask, N, B, conv.device)
        hidden, extract = w2v.feature_projection(conv)
        if mask_time_indices is not None:
            if mask_time_indices.shape != (B, N):
                raise ValueError(f"wav2vec2: mask_time_indices has shape {tuple(mask_time_indices.shape)}, "
                                 f"expected {(B, N)} frames for this batch")
            m = mask_time_indices.bool().unsqueeze(-1)
            hidden = torch.where(m, w2v.masked_spec_embed.to(hidden.dtype), hidden)
        out = self._hidden_layers(hidden, frame_mask, None)
        return {"conv_features": conv, "extract_features": extract, "frame_mask": frame_mask,
                "last_hidden_state": out["last_hidden_state"]}

    @staticmethod
    def _unpack(inputs: Union[torch.Tensor, Mapping[str, Any]]) -> tuple:
        if isinstance(inputs, Mapping):
            if "input_values" not in inputs:
                raise KeyError(f"wav2vec2: batch has no 'input_values' (keys: {sorted(inputs)})")
            return inputs["input_values"], inputs.get("attention_mask")
        return inputs, None

    def front(self, inputs: Union[torch.Tensor, Mapping[str, Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The conv feature encoder: ``(conv [B, N, C], frame_mask [B, N] bool)``. This is the part that
        stays frozen in wav2vec 2.0 CTC fine-tuning (Baevski et al. 2020, sec. 4.3), so its output can be
        computed once and cached (:mod:`sslab.eval.ctc`)."""
        x, attention_mask = self._unpack(inputs)
        if x.dim() != 2:
            raise ValueError(f"wav2vec2: expected waveforms [B, T], got shape {tuple(x.shape)}")
        conv = self.model.wav2vec2.feature_extractor(x).transpose(1, 2)
        B, N, _ = conv.shape
        return conv, self.frame_mask(attention_mask, N, B, conv.device)

    def front_parameters(self) -> List[nn.Parameter]:
        """Parameters of :meth:`front` (frozen during CTC fine-tuning)."""
        return list(self.model.wav2vec2.feature_extractor.parameters())

    def back(self, conv: torch.Tensor, frame_mask: torch.Tensor, layer: Optional[int] = None,
             mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Feature projection + transformer on :meth:`front`'s output: tokens ``[B, N, D]`` of ``layer``
        (default ``self.layer``); ``mask`` (``[B, N]`` bool) replaces frames by the mask embedding."""
        layer = self.layer if layer is None else layer
        if layer < -1 or layer > self.model.config.num_hidden_layers:
            raise ValueError(f"wav2vec2: layer must be in [-1, {self.model.config.num_hidden_layers}], got {layer}")
        w2v = self.model.wav2vec2
        hidden, _ = w2v.feature_projection(conv)
        if mask is not None:
            hidden = torch.where(mask.bool().unsqueeze(-1), w2v.masked_spec_embed.to(hidden.dtype), hidden)
        return self._hidden_layers(hidden, frame_mask, None if layer == -1 else layer)["layer_state"]

    def tokens(self, inputs: Union[torch.Tensor, Mapping[str, Any]], layer: Optional[int] = None,
               mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens ``[B, N, D]`` of ``layer`` (default ``self.layer``); see :meth:`forward`."""
        conv, frame_mask = self.front(inputs)
        return self.back(conv, frame_mask, layer, mask)

    def forward(self, inputs: Union[torch.Tensor, Mapping[str, Any]], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens ``[B, N, D]`` of layer ``self.layer``. ``inputs``: waveforms ``[B, T]`` or a batch
        dict with ``input_values`` and optional ``attention_mask``; ``mask`` (optional, ``[B, N]``
        bool) replaces frames by the mask embedding."""
        return self.tokens(inputs, None, mask)

    def pool(self, tokens: torch.Tensor, frame_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Utterance embedding: mean of ``tokens`` over real frames (all frames when no mask)."""
        if frame_mask is None:
            return tokens.mean(dim=1)
        w = frame_mask.to(tokens.dtype).unsqueeze(-1)
        return (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)

    def embed(self, inputs: Union[torch.Tensor, Mapping[str, Any]], layer: Optional[int] = None,
              level: str = "utterance") -> torch.Tensor:
        """``[B, D]`` features of ``layer``: ``level="utterance"`` = mean over real frames;
        ``level="frame"`` = the centre real frame of each utterance (no pooling)."""
        x, attention_mask = self._unpack(inputs)
        tokens = self.tokens(inputs, layer)
        fm = self.frame_mask(attention_mask, tokens.shape[1], tokens.shape[0], tokens.device)
        if level == "utterance":
            return self.pool(tokens, fm)
        if level == "frame":
            centre = (fm.sum(-1) - 1).clamp(min=0) // 2
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), centre]
        raise ValueError(f"embedding level must be 'utterance' or 'frame', got {level!r}")

    # -- HF export
    def save_pretrained(self, out_dir: Union[str, Path]) -> Path:
        """Write the full ``Wav2Vec2ForPreTraining`` in HF format + a matching feature-extractor config.

        ``Wav2Vec2ForCTC.from_pretrained(out_dir)`` then loads the backbone for CTC fine-tuning."""
        from transformers import Wav2Vec2FeatureExtractor

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out_dir))
        Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
            return_attention_mask=self.model.config.feat_extract_norm == "layer",
        ).save_pretrained(str(out_dir))
        return out_dir


def tiny_config(**overrides: Any) -> Dict[str, Any]:
    """A few-hundred-k-parameter wav2vec 2.0 config for tests, demos and CPU runs.

    Conv stack (kernel, stride) = (10,5),(3,2)x4,(2,2)x2 with 32 channels: the real model's 320x
    down-sampling (20 ms frames at 16 kHz), 2 transformer layers of width 64, 2 x 32 codewords.
    """
    cfg: Dict[str, Any] = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        conv_dim=[32] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        feat_extract_norm="layer", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        num_codevector_groups=2, num_codevectors_per_group=32, codevector_dim=64, proj_codevector_dim=32,
        do_stable_layer_norm=True, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, feat_quantizer_dropout=0.0, layerdrop=0.0, vocab_size=32,
    )
    cfg.update(overrides)
    return cfg
