"""wav2vec 2.0 pretraining objective (Baevski et al. 2020, sec. 3.2-3.3), our own loss.

Per batch (masks and distractors are drawn in the collator, on CPU workers, under the trainer's
seeded RNG; the objective draws them itself when a batch lacks them):

* **Time masking** — span starts are sampled with probability ``mask_prob`` = 0.65 and each masks
  ``mask_length`` = 10 frames (paper sec. 4.2; HF's default 0.05 is the *fine-tuning* SpecAugment
  value). Spans overlap, so ~49% of frames end up masked. Implemented with
  ``transformers...modeling_wav2vec2._compute_mask_indices`` (numpy RNG; only real frames of a
  padded utterance can be masked).
* **Distractors** — ``num_negatives`` = 100 per masked frame, drawn uniformly (with replacement)
  from the *other* masked frames of the same utterance: the positive index is never drawn
  (:func:`sample_negatives`, torch RNG). As in fairseq/HF, a distractor whose quantized vector equals
  the positive's (possible with a collapsed codebook) gets logit -inf.
* **Contrastive loss** (eq. 3) — logits = cos(c_t, q) / kappa with kappa = 0.1 over
  [q_t, q~_1..K]; cross-entropy with target 0, mean over masked frames.
* **Diversity loss** (eq. 4) — (G*V - perplexity) / (G*V) of the batch-averaged soft code
  distribution over masked frames, weight 0.1.
* **Feature penalty** (optional, fairseq ``features_pen``) — mean squared conv-encoder output.
* **Gumbel temperature** — annealed 2.0 -> 0.5 in :meth:`Wav2Vec2Objective.on_step_end`; kept as a
  buffer so resume is exact. Schedules: ``geometric`` (start*(end/start)^(step/total), default),
  ``linear``, ``cosine``, ``fairseq`` (max(start*decay^step, end), decay 0.999995).

Logged: contrastive/diversity loss, soft ``prob_perplexity``, hard ``code_perplexity`` (codebook
usage of argmax codes), accuracy of the positive, masked fraction; a warning fires when code
perplexity falls below ``collapse_fraction`` of the codebook (G*V).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES

# --------------------------------------------------------------------------- masking and negatives


def conv_output_lengths(lengths: torch.Tensor, conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> torch.Tensor:
    """Frames produced by the conv feature encoder for waveforms of ``lengths`` samples."""
    out = lengths.long()
    for k, s in zip(conv_kernel, conv_stride):
        out = torch.div(out - k, s, rounding_mode="floor") + 1
    return out.clamp(min=0)


def compute_span_mask(frame_lengths: Sequence[int], num_frames: int, mask_prob: float = 0.65,
                      mask_length: int = 10, min_masks: int = 2) -> torch.Tensor:
    """Bool ``[B, num_frames]`` span mask over the first ``frame_lengths[b]`` frames of each row.

    Thin wrapper of HF ``_compute_mask_indices`` (uses ``numpy.random``)."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    lengths = [int(n) for n in frame_lengths]
    short = [(b, n) for b, n in enumerate(lengths) if n < mask_length + 1]
    if short:
        b, n = short[0]
        raise ValueError(f"utterance {b} of the batch has {n} frames, too short for a mask span of "
                         f"{mask_length} frames; raise data.min_seconds or lower mask_length")
    attn = torch.arange(num_frames)[None, :] < torch.tensor(lengths)[:, None]
    mask = _compute_mask_indices((len(lengths), num_frames), mask_prob, mask_length,
                                 attention_mask=attn.long(), min_masks=min_masks)
    return torch.from_numpy(mask) & attn


def sample_negatives(mask: torch.Tensor, num_negatives: int) -> torch.Tensor:
    """Distractor frame indices ``[B, N, K]`` (-1 on unmasked frames).

    For masked frame t of utterance b, K indices are drawn uniformly with replacement from the
    other masked frames of b (fairseq ``sample_negatives`` with ``cross_sample_negatives=0``):
    draw r in [0, M-2] and shift r >= own rank by one, so the positive is never drawn and the
    others stay uniform."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, N], got shape {tuple(mask.shape)}")
    B, N = mask.shape
    out = torch.full((B, N, num_negatives), -1, dtype=torch.long)
    for b in range(B):
        idx = mask[b].nonzero().squeeze(-1).cpu()
        M = idx.numel()
        if M == 0:
            continue
        if M < 2:
            raise ValueError(f"utterance {b} has {M} masked frame; need >= 2 to draw distractors")
        r = torch.randint(0, M - 1, (M, num_negatives))
        r = r + (r >= torch.arange(M)[:, None]).long()
        out[b, idx] = idx[r]
    return out


class Wav2Vec2MaskingCollator:
    """Batch audio (``AudioCollator``) and add ``mask_time_indices`` [B, N] and
    ``negative_indices`` [B, N, K] for the frame grid of the conv encoder."""

    def __init__(self, audio_collate: Callable[[Sequence[Any]], Dict[str, Any]], conv_kernel: Sequence[int],
                 conv_stride: Sequence[int], mask_prob: float = 0.65, mask_length: int = 10,
                 min_masks: int = 2, num_negatives: int = 100) -> None:
        self.audio_collate = audio_collate
        self.conv_kernel, self.conv_stride = list(conv_kernel), list(conv_stride)
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.num_negatives = num_negatives

    def __call__(self, samples: Sequence[Any]) -> Dict[str, Any]:
        batch = self.audio_collate(samples)
        T = batch["input_values"].shape[1]
        num_frames = int(conv_output_lengths(torch.tensor([T]), self.conv_kernel, self.conv_stride)[0])
        lengths = conv_output_lengths(batch["attention_mask"].sum(-1), self.conv_kernel, self.conv_stride)
        mask = compute_span_mask(lengths.tolist(), num_frames, self.mask_prob, self.mask_length, self.min_masks)
        batch["mask_time_indices"] = mask
        batch["negative_indices"] = sample_negatives(mask, self.num_negatives)
        return batch


# --------------------------------------------------------------------------- Gumbel temperature


def _geometric(start: float, end: float, step: int, total: int, decay: float) -> float:
    return start * (end / start) ** min(step / max(total, 1), 1.0)


def _linear(start: float, end: float, step: int, total: int, decay: float) -> float:
    return start + (end - start) * min(step / max(total, 1), 1.0)


def _cosine(start: float, end: float, step: int, total: int, decay: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))


def _fairseq(start: float, end: float, step: int, total: int, decay: float) -> float:
    return max(start * decay ** step, end)


GUMBEL_SCHEDULES: Dict[str, Callable[[float, float, int, int, float], float]] = {
    "geometric": _geometric, "linear": _linear, "cosine": _cosine, "fairseq": _fairseq,
}


def gumbel_temperature(step: int, total_steps: int, start: float = 2.0, end: float = 0.5,
                       schedule: str = "geometric", decay: float = 0.999995) -> float:
    """Gumbel-softmax temperature after ``step`` optimizer steps of ``total_steps``."""
    if schedule not in GUMBEL_SCHEDULES:
        raise ValueError(f"unknown gumbel schedule {schedule!r}; choose from {sorted(GUMBEL_SCHEDULES)}")
    return float(GUMBEL_SCHEDULES[schedule](start, end, step, total_steps, decay))


# --------------------------------------------------------------------------- objective


def _code_perplexity(codes: torch.Tensor, num_vars: int) -> torch.Tensor:
    """Perplexity of the used codewords, summed over groups; ``codes`` is [M, G] (fairseq code_perplexity)."""
    marginal = F.one_hot(codes, num_vars).float().mean(0)  # [G, V]
    return torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).sum()


@OBJECTIVES.register("wav2vec2")
class Wav2Vec2Objective(nn.Module):
    """Contrastive + diversity (+ feature penalty) loss of wav2vec 2.0 on a ``Wav2Vec2Encoder``."""

    def __init__(self, encoder: nn.Module, mask_prob: float = 0.65, mask_length: int = 10, min_masks: int = 2,
                 num_negatives: int = 100, logit_temperature: float = 0.1, diversity_weight: float = 0.1,
                 feature_penalty_weight: float = 0.0, gumbel_start: float = 2.0, gumbel_end: float = 0.5,
                 gumbel_schedule: str = "geometric", gumbel_decay: float = 0.999995,
                 freeze_feature_encoder: bool = False, feature_grad_mult: float = 1.0,
                 collapse_fraction: float = 0.1, collapse_warn_every: int = 100) -> None:
        super().__init__()
        if not hasattr(encoder, "features") or not hasattr(encoder, "model"):
            raise TypeError(f"wav2vec2 objective needs the 'wav2vec2' encoder, got {type(encoder).__name__}")
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if gumbel_schedule not in GUMBEL_SCHEDULES:
            raise ValueError(f"unknown gumbel_schedule {gumbel_schedule!r}; choose from {sorted(GUMBEL_SCHEDULES)}")
        self.encoder = encoder
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.num_negatives, self.logit_temperature = num_negatives, logit_temperature
        self.diversity_weight, self.feature_penalty_weight = diversity_weight, feature_penalty_weight
        self.gumbel = dict(start=gumbel_start, end=gumbel_end, schedule=gumbel_schedule, decay=gumbel_decay)
        self.feature_grad_mult = feature_grad_mult
        self.collapse_fraction, self.collapse_warn_every = collapse_fraction, collapse_warn_every
        self._calls_since_warn = collapse_warn_every
        self.register_buffer("gumbel_temperature", torch.tensor(float(gumbel_start)))
        if freeze_feature_encoder:
            encoder.model.freeze_feature_encoder()
        cfg = encoder.model.config
        self.num_codevectors = int(cfg.num_codevector_groups * cfg.num_codevectors_per_group)
        self.find_unused_parameters = bool(cfg.layerdrop > 0)  # DDP: LayerDrop skips whole blocks

    # -- collator matching this objective (for the modality plugin)
    def make_collator(self, audio_collate: Callable[[Sequence[Any]], Dict[str, Any]]) -> Wav2Vec2MaskingCollator:
        cfg = self.encoder.model.config
        return Wav2Vec2MaskingCollator(audio_collate, cfg.conv_kernel, cfg.conv_stride, self.mask_prob,
                                       self.mask_length, self.min_masks, self.num_negatives)

    def _ensure_masks(self, batch: Mapping[str, Any], num_frames: int, frame_mask: torch.Tensor) -> tuple:
        mask = batch.get("mask_time_indices")
        neg = batch.get("negative_indices")
        if mask is None:
            mask = compute_span_mask(frame_mask.sum(-1).tolist(), num_frames, self.mask_prob,
                                     self.mask_length, self.min_masks)
            neg = None
        if neg is None:
            neg = sample_negatives(mask.cpu(), self.num_negatives)
        dev = frame_mask.device
        return mask.to(dev).bool(), neg.to(dev).long()

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        x = batch["input_values"]
        attention_mask = batch.get("attention_mask")
        model = self.encoder.model
        with torch.no_grad():
            n_frames = int(self.encoder.frame_lengths(torch.tensor([x.shape[1]]))[0])
            fm = self.encoder.frame_mask(attention_mask, n_frames, x.shape[0], x.device)
        mask, neg = self._ensure_masks(batch, n_frames, fm)
        if bool((mask & ~fm).any()):
            raise ValueError("mask_time_indices marks padded frames; masks must come from the attention mask")
        model.set_gumbel_temperature(float(self.gumbel_temperature))
        out = self.encoder.features(x, attention_mask, mask_time_indices=mask,
                                    feature_grad_mult=self.feature_grad_mult)
        c = model.project_hid(out["last_hidden_state"])  # [B, N, P]
        extract = model.dropout_features(out["extract_features"])
        q, codes, prob_ppl = self.quantize(extract, mask)
        q = model.project_q(q.to(model.project_q.weight.dtype))  # [B, N, P]

        # cosine logits for all (frame, frame) pairs of an utterance, then pick the positive (diagonal)
        # and the distractors: a bmm + gather is memory-light and has a deterministic backward
        B, N, P = q.shape
        cn = F.normalize(c.float(), dim=-1, eps=1e-8)
        qn = F.normalize(q.float(), dim=-1, eps=1e-8)
        sim = torch.bmm(cn, qn.transpose(1, 2)) / self.logit_temperature  # [B, N, N]
        b_idx, t_idx = mask.nonzero(as_tuple=True)
        neg_idx = neg[b_idx, t_idx]  # [M, K] frame indices in the same utterance
        rows = sim[b_idx, t_idx]  # [M, N]
        pos_logit = rows.gather(1, t_idx[:, None])
        neg_logit = rows.gather(1, neg_idx)
        # a distractor with the same codewords as the positive is the positive (fairseq/HF: -inf)
        neg_is_pos = (codes[b_idx[:, None], neg_idx] == codes[b_idx, t_idx][:, None]).all(-1)
        logits = torch.cat([pos_logit, neg_logit.masked_fill(neg_is_pos, float("-inf"))], dim=1)
        contrastive = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        diversity = (self.num_codevectors - prob_ppl) / self.num_codevectors
        loss = contrastive + self.diversity_weight * diversity
        logs: Dict[str, Any] = {}
        if self.feature_penalty_weight > 0:
            conv = out["conv_features"]
            pen = conv.float().pow(2)[fm].mean()
            loss = loss + self.feature_penalty_weight * pen
            logs["feature_penalty"] = pen.detach()
        with torch.no_grad():
            code_ppl = _code_perplexity(codes[b_idx, t_idx], model.quantizer.num_vars)
            acc = (logits.argmax(-1) == 0).float().mean()
        self._check_collapse(float(code_ppl))
        logs.update({"loss": loss, "contrastive_loss": contrastive.detach(), "diversity_loss": diversity.detach(),
                     "prob_perplexity": prob_ppl.detach(), "code_perplexity": code_ppl, "accuracy": acc,
                     "mask_fraction": (mask.sum() / fm.sum().clamp(min=1)).float(),
                     "gumbel_temperature": float(self.gumbel_temperature)})
        return logs

    def quantize(self, extract: torch.Tensor, mask: torch.Tensor) -> tuple:
        """Gumbel-softmax product quantization (eq. 1-2), the HF ``Wav2Vec2GumbelVectorQuantizer``
        forward with the chosen code indices exposed: returns codevectors [B, N, C], codes [B, N, G]
        and the perplexity of the batch-averaged soft distribution over masked frames (train) or of
        the hard codes (eval), exactly as HF computes it."""
        qz = self.encoder.model.quantizer
        B, N, _ = extract.shape
        G, V = qz.num_groups, qz.num_vars
        logits = qz.weight_proj(extract).view(B * N * G, V)
        if self.training:
            probs = F.gumbel_softmax(logits.float(), tau=qz.temperature, hard=True).type_as(logits)
            soft = torch.softmax(logits.view(B * N, G, V).float(), dim=-1)
        else:
            probs = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
            soft = probs.view(B * N, G, V)
        codes = probs.detach().argmax(-1).view(B, N, G)
        ppl = qz._compute_perplexity(soft, mask.reshape(-1))
        vectors = (probs.view(B * N, G * V).unsqueeze(-1) * qz.codevectors).view(B * N, G, V, -1).sum(-2)
        return vectors.view(B, N, -1), codes, ppl

    def _check_collapse(self, code_ppl: float) -> None:
        self._calls_since_warn += 1
        limit = self.collapse_fraction * self.num_codevectors
        if self.training and code_ppl < limit and self._calls_since_warn >= self.collapse_warn_every:
            self._calls_since_warn = 0
            warnings.warn(f"wav2vec2: codebook collapse? code perplexity {code_ppl:.1f} < "
                          f"{self.collapse_fraction:g} x {self.num_codevectors} codewords; consider a higher "
                          "diversity_weight, a slower Gumbel anneal or a lower learning rate", stacklevel=2)

    def on_step_end(self, step: int, total_steps: int) -> Dict[str, float]:
        """Anneal the Gumbel temperature (no I/O: the HF folder is written by the speech plugin's
        ``after_pretrain``)."""
        t = gumbel_temperature(step, total_steps, **self.gumbel)
        self.gumbel_temperature.fill_(t)
        return {"gumbel_temperature": t}
