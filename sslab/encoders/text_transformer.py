"""BERT-style text transformer with a causal / prefix-LM variant.

Options:
* ``position="learned"`` (BERT, Devlin et al. 2019) or ``"alibi"`` (Press et al. 2022, ALiBi:
  attention score ``q.k - m_h |i - j|`` with head slopes ``m_h = 2^(-8h/H)``; used by MosaicBERT),
* ``ffn="gelu"`` or a gated linear unit ``"geglu"`` / ``"swiglu"`` (Shazeer 2020,
  ``FFN(x) = W2 (act(W1a x) * W1b x)``; hidden width scaled by 2/3 to keep the parameter count),
* ``causal=True``: decoder-only; ``inputs["prefix_len"]`` ([B]) makes the first tokens attend
  bidirectionally (prefix LM, used by UL2's S-denoiser and by UL2's decoder-only inputs).
* ``unpad=True``: MosaicBERT's unpadded batches (Portes et al. 2023, Sec. 2.1, after FlashAttention's
  ``unpad_input``/``pad_input``): the real tokens are gathered into one packed ``[T, D]`` tensor
  (``T`` = number of real tokens) before the embedding LayerNorm, and every token-wise operation
  (embeddings, LayerNorms, QKV and output projections, FFN) runs on it, so their FLOPs scale with
  ``T`` instead of ``B * L``. Attention re-pads Q/K/V into ``[B, L', H, d]`` (``L'`` = last real
  column of the batch) around ``scaled_dot_product_attention`` with the same mask/ALiBi/prefix-LM
  bias as the padded path, then gathers the real rows again (a portable stand-in for
  FlashAttention's varlen kernel; attention FLOPs stay ``B * L'^2``). The output equals the padded
  path on real positions; **pad positions of the returned tensor are zeros** (the padded path
  leaves arbitrary values there). A batch without padding takes the padded path (same computation).

Inputs: a ``LongTensor [B, L]`` of ids or a dict with ``input_ids``, optional ``attention_mask``
(1 = token), optional ``inputs_embeds`` ([B, L, D], replaces the token lookup; used by GDES) and
``prefix_len``. ``mask`` (the encoder-contract argument) is taken as the attention mask when given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import ENCODERS

Inputs = Union[torch.Tensor, Mapping[str, Any]]


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al. 2022, Sec. 3); non-power-of-2 heads interleave as in the paper."""
    def pow2(n: int) -> list:
        start = 2 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(pow2(heads))
    closest = 2 ** math.floor(math.log2(heads))
    extra = pow2(2 * closest)[0::2][: heads - closest]
    return torch.tensor(pow2(closest) + extra)


@dataclass
class Unpadded:
    """Where the packed rows come from: ``indices`` into the flattened ``[B * L]`` layout (row-major,
    as MosaicBERT's ``unpad_input``), batch size and the (cropped) padded length ``L``."""

    indices: torch.Tensor
    batch: int
    seqlen: int

    @classmethod
    def from_mask(cls, att: torch.Tensor) -> "Unpadded":
        B, L = att.shape
        real = att.bool()
        cols = real.any(0).nonzero()
        seqlen = int(cols.max()) + 1 if len(cols) else 1  # trailing all-pad columns are dropped
        indices = real[:, :seqlen].reshape(-1).nonzero().squeeze(1)
        return cls(indices, B, seqlen)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, ...]`` (``L`` >= seqlen) -> ``[T, ...]``."""
        return x[:, : self.seqlen].reshape(self.batch * self.seqlen, *x.shape[2:])[self.indices]

    def pad(self, x: torch.Tensor, seqlen: Optional[int] = None) -> torch.Tensor:
        """``[T, ...]`` -> ``[B, seqlen, ...]`` with zeros at pad positions (MosaicBERT's ``pad_input``)."""
        out = x.new_zeros(self.batch * self.seqlen, *x.shape[1:]).index_put((self.indices,), x)
        out = out.view(self.batch, self.seqlen, *x.shape[1:])
        if seqlen is not None and seqlen > self.seqlen:
            out = F.pad(out, (0, 0) * (x.dim() - 1) + (0, seqlen - self.seqlen))
        return out


class FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, kind: str, dropout: float) -> None:
        super().__init__()
        if kind not in ("gelu", "geglu", "swiglu"):
            raise ValueError(f"ffn must be gelu, geglu or swiglu, got {kind!r}")
        self.kind = kind
        hidden = int(dim * mlp_ratio)
        if kind != "gelu":
            hidden = max(1, int(2 * hidden / 3))
            self.fc1 = nn.Linear(dim, 2 * hidden)
        else:
            self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.kind == "gelu":
            h = F.gelu(h)
        else:
            a, b = h.chunk(2, dim=-1)
            h = (F.gelu(a) if self.kind == "geglu" else F.silu(a)) * b
        return self.fc2(self.drop(h))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor, unpadded: Optional[Unpadded] = None) -> torch.Tensor:
        """``x``: ``[B, L, D]``, or packed ``[T, D]`` with ``unpadded`` (projections on real tokens only)."""
        qkv = self.qkv(x)
        if unpadded is not None:
            qkv = unpadded.pad(qkv)  # [B, L', 3D], zeros at pad positions
        B, L, D3 = qkv.shape
        D = D3 // 3
        q, k, v = qkv.view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B, L, D)
        if unpadded is not None:
            out = unpadded.unpad(out)
        return self.proj(out)


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, ffn: str, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, ffn, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, unpadded: Optional[Unpadded] = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), bias, unpadded))
        return x + self.drop(self.mlp(self.norm2(x)))


@ENCODERS.register("text_transformer")
class TextTransformer(nn.Module):
    """Token encoder: ``forward(inputs, mask=None) -> [B, L, D]``; ``pool(tokens, attention_mask)``.
    ``unpad=True`` runs the token-wise layers on the real tokens only (MosaicBERT; see the module doc)."""

    def __init__(self, vocab_size: int = 4000, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, max_len: int = 512, dropout: float = 0.0, causal: bool = False,
                 position: str = "learned", ffn: str = "gelu", pool: str = "mean", pad_id: int = 0,
                 unpad: bool = False) -> None:
        super().__init__()
        if position not in ("learned", "alibi"):
            raise ValueError(f"position must be 'learned' or 'alibi', got {position!r}")
        if pool not in ("mean", "cls", "last"):
            raise ValueError(f"pool must be mean, cls or last, got {pool!r}")
        self.vocab_size, self.dim, self.depth, self.heads = vocab_size, dim, depth, heads
        self.max_len, self.causal, self.position, self.pool_mode, self.pad_id = max_len, causal, position, pool, pad_id
        self.unpad = bool(unpad)
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim) if position == "learned" else None
        self.emb_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, ffn, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        if position == "alibi":
            self.register_buffer("slopes", alibi_slopes(heads), persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_emb

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def unpack(inputs: Inputs, mask: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        if isinstance(inputs, torch.Tensor):
            d: Dict[str, Any] = {"input_ids": inputs}
        elif isinstance(inputs, Mapping):
            d = dict(inputs)
        else:
            raise TypeError(f"text encoder inputs must be a LongTensor or a dict, got {type(inputs).__name__}")
        if mask is not None:
            d["attention_mask"] = mask
        return d

    def _bias(self, B: int, L: int, att: torch.Tensor, prefix_len: Optional[torch.Tensor],
              dtype: torch.dtype, pad_queries_see_all: bool = False) -> torch.Tensor:
        device = att.device
        allowed = att[:, None, None, :].bool()  # [B,1,1,L] keys
        if self.causal:
            i = torch.arange(L, device=device)
            causal = (i[None, :] <= i[:, None])[None, None]  # [1,1,L,L]
            if prefix_len is not None:
                pre = i[None, None, None, :] < prefix_len.to(device)[:, None, None, None]
                causal = causal | pre
            allowed = allowed & causal
        if pad_queries_see_all:
            # the rows of pad queries are discarded; letting them attend everywhere keeps every softmax
            # row non-empty (no NaN in forward or backward); real query rows are unchanged
            allowed = allowed | ~att[:, None, :, None].bool()
        if self.position == "alibi":
            i = torch.arange(L, device=device)
            dist = (i[None, :] - i[:, None]).abs().to(dtype)
            bias = -self.slopes.to(dtype)[None, :, None, None] * dist[None, None]
            return bias.masked_fill(~allowed, float("-inf"))
        return allowed

    def forward(self, inputs: Inputs, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        d = self.unpack(inputs, mask)
        emb = d.get("inputs_embeds")
        ids = d.get("input_ids")
        if emb is None:
            if ids is None:
                raise KeyError("text encoder needs 'input_ids' or 'inputs_embeds'")
            if ids.dtype not in (torch.long, torch.int, torch.int32):
                raise TypeError(f"input_ids must be integer, got {ids.dtype}")
            if ids.dim() != 2:
                raise ValueError(f"input_ids must be [B, L], got shape {tuple(ids.shape)}")
            if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
                raise ValueError(f"token id out of range [0, {self.vocab_size}): min {int(ids.min())}, max {int(ids.max())}")
            emb = self.tok_emb(ids)
        B, L, _ = emb.shape
        if L > self.max_len and self.pos_emb is not None:
            raise ValueError(f"sequence length {L} exceeds max_len={self.max_len}")
        att = d.get("attention_mask")
        if att is None:
            att = (ids != self.pad_id) if ids is not None else torch.ones(B, L, dtype=torch.bool, device=emb.device)
        if tuple(att.shape) != (B, L):
            raise ValueError(f"attention_mask has shape {tuple(att.shape)}, the inputs are {(B, L)}")
        if self.unpad and not bool(att.all()):  # without padding both paths are the same computation
            return self._forward_unpadded(emb, att, d.get("prefix_len"))
        x = emb
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(L, device=emb.device))[None]
        x = self.drop(self.emb_norm(x))
        bias = self._bias(B, L, att, d.get("prefix_len"), x.dtype)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.norm(x)

    def _forward_unpadded(self, emb: torch.Tensor, att: torch.Tensor,
                          prefix_len: Optional[torch.Tensor]) -> torch.Tensor:
        """MosaicBERT path: ``[T, D]`` through every token-wise layer, re-padded only inside attention."""
        B, L, _ = emb.shape
        up = Unpadded.from_mask(att)
        x = up.unpad(emb)
        if self.pos_emb is not None:
            pos = torch.arange(up.seqlen, device=emb.device).expand(B, up.seqlen)
            x = x + self.pos_emb(up.unpad(pos))
        x = self.drop(self.emb_norm(x))
        bias = self._bias(B, up.seqlen, att[:, : up.seqlen], prefix_len, x.dtype, pad_queries_see_all=True)
        for blk in self.blocks:
            x = blk(x, bias, up)
        return up.pad(self.norm(x), seqlen=L)

    def pool(self, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean over real tokens (default), the first token (``cls``) or the last real token (``last``)."""
        if self.pool_mode == "cls":
            return tokens[:, 0]
        if attention_mask is None:
            attention_mask = torch.ones(tokens.shape[:2], device=tokens.device)
        m = attention_mask.to(tokens.dtype)
        if self.pool_mode == "last":
            last = (m.sum(1).long() - 1).clamp(min=0)
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        return (tokens * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)
