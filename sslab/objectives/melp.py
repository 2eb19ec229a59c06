"""MELP: multi-scale ECG-language pretraining (Pan et al. 2025, "From Token to Rhythm: A Multi-Scale
Approach for ECG-Language Pretraining"). Three losses, weighted and individually switchable
(default weights of the paper's code: token 2.0, beat 0.2, rhythm 1.0; a weight of 0 skips the loss):

* **token level** -- captioning: a transformer text decoder cross-attends to the ECG tokens and
  predicts the report autoregressively, ``L_tok = -1/|y| sum_t log p(y_t | y_<t, ECG)`` (CoCa-style
  captioning, Yu et al. 2022, eq. 2). Its gradients reach the decoder and the ECG encoder only.
* **beat level** -- ``num_queries`` learned queries pool the ECG tokens by cross-attention into
  beat-scale embeddings ``b_q``; the report's sentences are mean-pooled text tokens ``s_k``. The
  attention similarity of report ``i`` and ECG ``j`` follows GLoRIA (Huang et al. 2021, eq. 3-5):
  ``a_kq = softmax_q(g1 cos(s_k, b_q))``, ``c_k = sum_q a_kq b_q``,
  ``R(i, j) = 1/g2 log sum_k exp(g2 cos(s_k, c_k))``; then a symmetric InfoNCE over ``g3 R``.
* **rhythm level** -- CLIP (Radford et al. 2021) symmetric InfoNCE between the pooled ECG and the
  ``[CLS]`` report embedding, learnable temperature (``logit_scale`` initialised at ``1/0.07``,
  clamped at 100); embeddings are all-gathered across ranks under DDP with
  ``torch.distributed.nn.functional.all_gather`` (which back-propagates), with each rank scoring its
  local rows against the global batch (open_clip's ``local_loss``).

Batch: ``{"ecg": [B, C, T], "input_ids": [B, L], "attention_mask": [B, L], "sentence_ids": [B, L]}``
(``sentence_ids`` = sentence index of each token, -1 for special tokens and padding), as produced by
:class:`sslab.datasets.ecg_text.ReportCollator`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES

DEFAULT_WEIGHTS = {"token": 2.0, "beat": 0.2, "rhythm": 1.0}


# --------------------------------------------------------------------------- distributed gather


def gather_with_grad(x: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """All rows of ``x`` from every rank (differentiable) and the offset of this rank's rows."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0), dist.get_rank() * x.shape[0]


def clip_loss(ecg: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
              gather: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021, Fig. 3) on L2-normalised ``[B, E]`` embeddings.

    ``L = 1/2 [CE(s * e t_all^T, y) + CE(s * t e_all^T, y)]`` with ``y`` this rank's row positions.
    Returns (loss, ECG->report top-1 accuracy within the (global) batch)."""
    if gather:
        ecg_all, off = gather_with_grad(ecg)
        text_all, _ = gather_with_grad(text)
    else:
        ecg_all, text_all, off = ecg, text, 0
    labels = torch.arange(ecg.shape[0], device=ecg.device) + off
    logits_e2t = logit_scale * ecg @ text_all.t()
    logits_t2e = logit_scale * text @ ecg_all.t()
    loss = 0.5 * (F.cross_entropy(logits_e2t, labels) + F.cross_entropy(logits_t2e, labels))
    acc = (logits_e2t.argmax(1) == labels).float().mean()
    return loss, acc.detach()


# --------------------------------------------------------------------------- modules


class CaptionDecoder(nn.Module):
    """Pre-norm transformer decoder: causal self-attention over report tokens, cross-attention to the
    (projected) ECG tokens, tied output layer."""

    def __init__(self, vocab_size: int, memory_dim: int, dim: int = 256, depth: int = 2, heads: int = 4,
                 max_len: int = 128, pad_id: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        nn.init.trunc_normal_(self.embed.weight, std=0.02)  # tied output layer: start near uniform
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.mem_proj = nn.Linear(memory_dim, dim)
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, depth)
        self.norm = nn.LayerNorm(dim)
        self.max_len, self.pad_id = max_len, pad_id

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``ids`` ``[B, L]`` -> next-token logits ``[B, L, vocab]``."""
        L = ids.shape[1]
        if L > self.max_len:
            raise ValueError(f"caption decoder: {L} tokens exceed max_len {self.max_len}")
        x = self.embed(ids) + self.pos[:, :L]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=ids.device), diagonal=1)
        h = self.layers(x, self.mem_proj(memory), tgt_mask=causal, tgt_is_causal=True,
                        tgt_key_padding_mask=~attention_mask.bool())
        return self.norm(h) @ self.embed.weight.t()

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, bos_id: int, eos_id: int, max_new: int = 40) -> torch.Tensor:
        """Greedy decoding from ``[BOS]`` -> ``[B, <=max_new+1]`` ids (stops when all hit ``eos_id``)."""
        B = memory.shape[0]
        ids = torch.full((B, 1), bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        for _ in range(min(max_new, self.max_len - 1)):
            logits = self(ids, torch.ones_like(ids), memory)[:, -1]
            nxt = logits.argmax(-1).masked_fill(done, self.pad_id)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if done.all():
                break
        return ids


class BeatQueries(nn.Module):
    """``num_queries`` learned queries cross-attend to ECG tokens -> ``[B, Q, dim]`` beat embeddings."""

    def __init__(self, dim: int, num_queries: int = 8, heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_kv = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        out, _ = self.attn(self.queries.expand(tokens.shape[0], -1, -1), kv, kv, need_weights=False)
        return out


def sentence_pool(tokens: torch.Tensor, sentence_ids: torch.Tensor, max_sentences: int
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean of the text tokens of each sentence -> (``[B, S, D]``, valid mask ``[B, S]``)."""
    S = max(int(sentence_ids.max().item()) + 1, 1) if sentence_ids.numel() else 1
    S = min(S, max_sentences)
    onehot = (sentence_ids.unsqueeze(-1) == torch.arange(S, device=tokens.device)).to(tokens.dtype)  # [B, L, S]
    counts = onehot.sum(1)  # [B, S]
    pooled = torch.einsum("bls,bld->bsd", onehot, tokens) / counts.clamp_min(1).unsqueeze(-1)
    return pooled, counts > 0


def attention_similarity(sent: torch.Tensor, sent_mask: torch.Tensor, beats: torch.Tensor,
                         g1: float = 4.0, g2: float = 5.0) -> torch.Tensor:
    """GLoRIA attention similarity (Huang et al. 2021, eq. 3-5) of every report with every ECG.

    ``sent`` ``[Bt, S, E]`` and ``beats`` ``[Be, Q, E]`` L2-normalised; returns ``R`` ``[Bt, Be]``."""
    sim = torch.einsum("tse,bqe->tbsq", sent, beats)
    att = torch.softmax(g1 * sim, dim=-1)
    ctx = F.normalize(torch.einsum("tbsq,bqe->tbse", att, beats), dim=-1)
    r = (sent.unsqueeze(1) * ctx).sum(-1)  # [Bt, Be, S]
    r = r.masked_fill(~sent_mask.unsqueeze(1), float("-inf"))
    return torch.logsumexp(g2 * r, dim=-1) / g2


def beat_loss(sent: torch.Tensor, sent_mask: torch.Tensor, beats: torch.Tensor, g1: float = 4.0,
              g2: float = 5.0, g3: float = 10.0) -> torch.Tensor:
    """Symmetric InfoNCE over ``g3 * R`` (GLoRIA eq. 6-7); pairs are the diagonal."""
    logits = g3 * attention_similarity(sent, sent_mask, beats, g1, g2)  # [text, ecg]
    y = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.t(), y))


# --------------------------------------------------------------------------- objective


@OBJECTIVES.register("melp")
class MELP(nn.Module):
    """ECG encoder (``self.encoder``, exported) + report text encoder + caption decoder + beat queries +
    projections. See the module docstring for the three losses.

    Args:
        encoder: ECG encoder (``forward(x) -> [B, N, D]``, ``pool``, ``dim``).
        vocab_size, pad_id, bos_id, eos_id: of the report tokenizer (the plugin fills them in).
        text: kwargs of :class:`sslab.encoders.report_text.ReportTextEncoder` (dim, depth, heads, ...).
        decoder: kwargs of :class:`CaptionDecoder` (dim, depth, heads).
        weights: ``{"token", "beat", "rhythm"}`` loss weights (0 switches a loss off).
    """

    def __init__(self, encoder: nn.Module, vocab_size: int, pad_id: int = 0, bos_id: int = 2, eos_id: int = 3,
                 text: Optional[Mapping[str, Any]] = None, decoder: Optional[Mapping[str, Any]] = None,
                 embed_dim: int = 128, num_queries: int = 8, max_sentences: int = 16,
                 weights: Optional[Mapping[str, float]] = None, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0, beat_gammas: Tuple[float, float, float] = (4.0, 5.0, 10.0),
                 max_len: int = 128) -> None:
        super().__init__()
        from sslab.encoders.report_text import ReportTextEncoder, text_spec

        self.encoder = encoder
        w = dict(DEFAULT_WEIGHTS)
        unknown = sorted(set(weights or {}) - set(w))
        if unknown:
            raise ValueError(f"melp.weights: unknown loss(es) {unknown}; valid: {sorted(w)}")
        w.update({k: float(v) for k, v in (weights or {}).items()})
        bad = {k: v for k, v in w.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"melp.weights: weights must be finite and >= 0 (0 switches a loss off), got {bad}")
        if all(v == 0 for v in w.values()):
            raise ValueError("melp.weights: every loss is switched off")
        self.weights = w
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_sentences, self.beat_gammas = max_sentences, tuple(beat_gammas)
        self.max_logit_scale = max_logit_scale
        self.text = ReportTextEncoder(**text_spec(vocab_size, pad_id, max_len=max_len, **dict(text or {})))
        D, T = int(encoder.dim), self.text.dim
        dec = {"dim": 256, "depth": 2, "heads": 4, **dict(decoder or {})}
        self.decoder = CaptionDecoder(vocab_size, D, max_len=max_len, pad_id=pad_id, **dec)
        self.beat_queries = BeatQueries(D, num_queries, heads=_heads(D))
        self.beat_proj = nn.Linear(D, embed_dim)
        self.sent_proj = nn.Linear(T, embed_dim)
        self.ecg_proj = nn.Linear(D, embed_dim)
        self.text_proj = nn.Linear(T, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    # ----------------------------------------------------------------- embeddings (used by zero-shot)
    def embed_ecg(self, ecg: torch.Tensor, tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rhythm-level ECG embedding, L2-normalised ``[B, E]``."""
        tokens = self.encoder(ecg) if tokens is None else tokens
        return F.normalize(self.ecg_proj(self.encoder.pool(tokens)), dim=-1)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rhythm-level report embedding (``[CLS]``), L2-normalised ``[B, E]``."""
        tokens = self.text({"input_ids": input_ids, "attention_mask": attention_mask}) if tokens is None else tokens
        return F.normalize(self.text_proj(self.text.pool(tokens)), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(self.max_logit_scale)).exp()

    # ----------------------------------------------------------------- losses
    def caption_loss(self, ecg_tokens: torch.Tensor, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(ids[:, :-1], att[:, :-1], ecg_tokens)
        target = ids[:, 1:].masked_fill(~att[:, 1:].bool(), -100)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)

    def beat_level_loss(self, ecg_tokens: torch.Tensor, text_tokens: torch.Tensor,
                        sentence_ids: torch.Tensor) -> torch.Tensor:
        beats = F.normalize(self.beat_proj(self.beat_queries(ecg_tokens)), dim=-1)
        sent, sent_mask = sentence_pool(text_tokens, sentence_ids, self.max_sentences)
        if not bool(sent_mask.any(1).all()):
            raise ValueError("melp beat loss: a report in the batch has no sentence tokens "
                             "(empty report? use the ReportCollator, which rejects them)")
        sent = F.normalize(self.sent_proj(sent), dim=-1)
        return beat_loss(sent, sent_mask, beats, *self.beat_gammas)

    def rhythm_loss(self, ecg_tokens: torch.Tensor, text_tokens: torch.Tensor, ids: torch.Tensor,
                    att: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        e = self.embed_ecg(None, ecg_tokens)  # type: ignore[arg-type]
        t = self.embed_text(ids, att, text_tokens)
        return clip_loss(e, t, self.scale())

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
        for key in ("ecg", "input_ids", "attention_mask"):
            if key not in batch:
                raise KeyError(f"melp: batch lacks {key!r} (has {sorted(batch)})")
        ids, att = batch["input_ids"], batch["attention_mask"]
        w = self.weights
        ecg_tokens = self.encoder(batch["ecg"])
        text_tokens = None
        if w["beat"] or w["rhythm"]:
            text_tokens = self.text({"input_ids": ids, "attention_mask": att})
        out: Dict[str, Any] = {}
        total = ecg_tokens.new_zeros(())
        if w["token"]:
            out["loss_token"] = self.caption_loss(ecg_tokens, ids, att)
            total = total + w["token"] * out["loss_token"]
        if w["beat"]:
            if "sentence_ids" not in batch:
                raise KeyError("melp: the beat loss needs batch['sentence_ids']")
            out["loss_beat"] = self.beat_level_loss(ecg_tokens, text_tokens, batch["sentence_ids"])
            total = total + w["beat"] * out["loss_beat"]
        if w["rhythm"]:
            out["loss_rhythm"], out["acc_e2t"] = self.rhythm_loss(ecg_tokens, text_tokens, ids, att)
            total = total + w["rhythm"] * out["loss_rhythm"]
            out["temperature"] = float(1.0 / self.scale().detach())
        out["loss"] = total
        return {k: (v.detach() if isinstance(v, torch.Tensor) and k != "loss" else v) for k, v in out.items()}


def _heads(dim: int) -> int:
    for h in (8, 4, 2, 1):
        if dim % h == 0 and dim // h >= 16:
            return h
    return 1
