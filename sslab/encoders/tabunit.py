"""TabUnit + Transformer row encoder (UniTabE, Yang et al., ICLR 2024, Sec. 3.1-3.2).

Each cell is built from three parts (UniTabE's TabUnit):

* column name: mean of its WordPiece token embeddings -> ``n``;
* value: token embeddings + place-value/index position + data-type embedding, a per-token MLP
  (non-linear, so digit order matters) and a masked mean -> ``v``;
* numeric cells also get ``MLP(z)`` of their column-standardised value added to ``v``
  (``numeric_scalar=True``; a TransTab-style addition to UniTabE's digit tokens that makes magnitudes
  directly readable; set it False for the pure digit-token design);
* a gated link between name and value, ``g = sigmoid(W_g [n; v])``, ``cell = LN(W_n n + g * W_v v + e_type)``.

A row is ``[CLS] + cells`` fed to a pre-norm Transformer encoder **without positional embeddings over
cells**, so the [CLS] output is invariant to the column order (self-attention is permutation
equivariant; padding cells are excluded through the key-padding mask). Any schema works, including
columns never seen in pretraining: names and values go through the shared tokenizer.

``forward(inputs, mask=None)`` takes the dict built by :class:`sslab.datasets.tables_tokenize.TableCollator`
(``name_ids, value_ids, value_pos, type_ids, cell_mask``) and returns ``[B, 1 + C, D]``; ``mask`` ``[B, C]``
hides those cells' values (replaced by a learned [MASK] value vector, name and type kept), as in
UniTabE's masked-cell pretraining. ``pool`` returns the [CLS] token.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from sslab.core.registry import ENCODERS
from sslab.datasets.tables import COLUMN_TYPES
from sslab.datasets.tables_tokenize import N_POS, PAD, TableTokenizer


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [..., L, D]`` over L where ``keep [..., L]``; zeros where nothing is kept."""
    w = keep.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(-2) / w.sum(-2).clamp_min(1.0)


@ENCODERS.register("tabunit")
class TabUnitEncoder(nn.Module):
    """UniTabE row encoder. ``tokenizer`` (JSON of the shared HF tokenizer) makes the export self-contained."""

    def __init__(self, vocab_size: Optional[int] = None, tokenizer: Optional[str] = None, dim: int = 128,
                 depth: int = 3, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.1,
                 digits: int = 4, numeric_scalar: bool = True) -> None:
        super().__init__()
        if tokenizer is not None:
            tok_vocab = TableTokenizer.from_str(tokenizer, digits).vocab_size
            if vocab_size is not None and vocab_size != tok_vocab:
                raise ValueError(f"tabunit: vocab_size={vocab_size} but the tokenizer has {tok_vocab} tokens")
            vocab_size = tok_vocab
        if not vocab_size:
            raise ValueError("tabunit: give vocab_size or tokenizer (the shared table tokenizer as JSON)")
        if dim % heads:
            raise ValueError(f"tabunit: dim={dim} must be divisible by heads={heads}")
        self.dim = dim
        self.vocab_size = vocab_size
        self._tokenizer_json = tokenizer
        self.digits = digits
        self.tok_emb = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(N_POS, dim)
        self.type_emb = nn.Embedding(len(COLUMN_TYPES), dim)
        self.value_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.name_proj = nn.Linear(dim, dim)
        self.value_proj = nn.Linear(dim, dim)
        self.gate = nn.Linear(2 * dim, dim)
        self.cell_norm = nn.LayerNorm(dim)
        self.mask_value = nn.Parameter(torch.zeros(dim))
        self.numeric_scalar = numeric_scalar
        if numeric_scalar:  # TransTab-style magnitude feature added to the digit-token value vector
            self.scalar_proj = nn.Sequential(nn.Linear(1, dim), nn.GELU(), nn.Linear(dim, dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.mask_value, std=0.02)
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    def tokenizer(self) -> TableTokenizer:
        """The shared tokenizer this encoder was built with (needed to encode new tables)."""
        if self._tokenizer_json is None:
            raise ValueError("this tabunit encoder was built without its tokenizer JSON")
        return TableTokenizer.from_str(self._tokenizer_json, self.digits)

    def embed_cells(self, inputs: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """TabUnit: ``[B, C, D]`` cell vectors (name + gated value + type)."""
        name_ids, value_ids = inputs["name_ids"], inputs["value_ids"]
        type_e = self.type_emb(inputs["type_ids"])  # [B, C, D]
        n = self.name_proj(_masked_mean(self.tok_emb(name_ids), name_ids != PAD))
        # only non-pad value tokens go through the per-token MLP (most cells hold 1-5 of VALUE_LEN tokens)
        B, C, L = value_ids.shape
        keep = (value_ids != PAD).reshape(-1)
        idx = keep.nonzero(as_tuple=True)[0]
        cell_of = idx // L
        tokens = (self.tok_emb(value_ids.reshape(-1)[idx]) + self.pos_emb(inputs["value_pos"].reshape(-1)[idx])
                  + type_e.reshape(B * C, -1)[cell_of])
        h = self.value_mlp(tokens)
        v = torch.zeros(B * C, self.dim, dtype=h.dtype, device=h.device).index_add_(0, cell_of, h)
        count = torch.zeros(B * C, dtype=h.dtype, device=h.device).index_add_(0, cell_of, torch.ones_like(cell_of, dtype=h.dtype))
        v = (v / count.clamp_min(1.0).unsqueeze(-1)).reshape(B, C, self.dim)
        if self.numeric_scalar and "num_z" in inputs:
            z = inputs["num_z"].to(v.dtype).unsqueeze(-1)
            v = v + self.scalar_proj(z) * inputs["num_valid"].unsqueeze(-1).to(v.dtype)
        if mask is not None:
            v = torch.where(mask.unsqueeze(-1), self.mask_value.to(v.dtype).expand_as(v), v)
        g = torch.sigmoid(self.gate(torch.cat([n, v], -1)))
        return self.cell_norm(n + g * self.value_proj(v) + type_e)

    def forward(self, inputs: Dict[str, Any], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        cells = self.embed_cells(inputs, mask)
        B = cells.shape[0]
        x = torch.cat([self.cls.expand(B, -1, -1).to(cells.dtype), cells], 1)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=cells.device), inputs["cell_mask"]], 1)
        x = self.blocks(x, src_key_padding_mask=~keep)
        return self.norm(x)

    def pool(self, tokens: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tokens[:, 0]
