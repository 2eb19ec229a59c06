"""Masked language modelling (BERT) and causal language modelling on any token encoder.

* ``mlm``: cross-entropy on the masked positions only, ``L = -1/|M| sum_{i in M} log p(x_i | x_~M)``
  (Devlin et al. 2019, Sec. 3.1). The masking rate is configurable: 15% (BERT) or 30-40%
  (Wettig et al. 2023, "Should You Mask 15% in MLM?"). Masking runs in the collator.
* ``clm``: next-token prediction ``L = -1/N sum_t log p(x_{t+1} | x_{<=t})`` on a causal encoder.

Text objectives expose ``collator(tokenizer, **objective_kwargs)`` so that the text modality can build
the matching collator from the same ``objective:`` section.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.text_collate import IGNORE, CausalCollator, MLMCollator


class LMHead(nn.Module):
    """BERT prediction head: dense -> GELU -> LayerNorm -> decoder tied to the input embedding."""

    def __init__(self, embedding: nn.Embedding, dim: int, tie: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        vocab, emb_dim = embedding.weight.shape
        if emb_dim != dim:
            raise ValueError(f"LM head: embedding dim {emb_dim} != encoder dim {dim}")
        self.tied = tie
        # tied weight is looked up at call time, so GDES/embedding swaps stay consistent
        self._embedding = [embedding]
        self.decoder = None if tie else nn.Linear(dim, vocab, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, h: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.norm(F.gelu(self.dense(h)))
        if self.decoder is not None:
            return self.decoder(h) + self.bias
        w = self._embedding[0].weight if weight is None else weight
        return F.linear(h, w, self.bias)


def encoder_inputs(batch: Mapping[str, Any], *keys: str) -> Dict[str, Any]:
    """The subset of ``batch`` the encoder reads (ids, attention mask, prefix length)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "prefix_len", *keys) if k in batch}


def masked_ce(logits_fn: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
              labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Cross-entropy on positions with ``labels != -100`` only (the head runs on those rows only)."""
    sel = labels != IGNORE
    n = int(sel.sum())
    if n == 0:  # a batch with nothing masked: zero loss that still touches the graph
        return {"loss": hidden.sum() * 0.0, "acc": torch.tensor(0.0, device=hidden.device), "n_pred": 0}
    logits = logits_fn(hidden[sel])
    target = labels[sel]
    loss = F.cross_entropy(logits.float(), target)
    acc = (logits.argmax(-1) == target).float().mean()
    return {"loss": loss, "acc": acc.detach(), "n_pred": n, "logits": logits, "target": target}


def step_encoder_hooks(module: nn.Module, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
    """Forward ``on_step_end`` to the encoder (e.g. a LoRA-adapted encoder that switches vectors)."""
    hook = getattr(getattr(module, "encoder", None), "on_step_end", None)
    return hook(step, total_steps) if callable(hook) else None


@OBJECTIVES.register("mlm")
class MLMObjective(nn.Module):
    """Masked LM on ``encoder``; batches come from :class:`~sslab.datasets.text_collate.MLMCollator`."""

    def __init__(self, encoder: nn.Module, mask_prob: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, tie_weights: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.mask_prob = mask_prob
        self.head = LMHead(encoder.get_input_embeddings(), encoder.dim, tie=tie_weights)

    @staticmethod
    def collator(tokenizer: Any, mask_prob: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, **_: Any) -> MLMCollator:
        return MLMCollator(tokenizer, mask_prob, mask_replace_prob, random_replace_prob)

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        if "labels" not in batch:
            raise KeyError("mlm batch needs 'labels' (use MLMObjective.collator)")
        h = self.encoder(encoder_inputs(batch))
        out = masked_ce(self.head, h, batch["labels"])
        return {"loss": out["loss"], "mlm_acc": out["acc"]}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        return step_encoder_hooks(self, step, total_steps)


def causal_lm_loss(head: LMHead, hidden: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Shifted next-token cross-entropy: position ``t`` predicts ``labels[t+1]``."""
    return masked_ce(head, hidden[:, :-1], labels[:, 1:])


@OBJECTIVES.register("clm")
class CausalLMObjective(nn.Module):
    """Causal (decoder-only) LM; the encoder must be built with ``causal: true``."""

    def __init__(self, encoder: nn.Module, tie_weights: bool = True) -> None:
        super().__init__()
        if not getattr(encoder, "causal", False):
            raise ValueError("clm needs a causal encoder (encoder.causal: true)")
        self.encoder = encoder
        self.head = LMHead(encoder.get_input_embeddings(), encoder.dim, tie=tie_weights)

    @staticmethod
    def collator(tokenizer: Any, **_: Any) -> CausalCollator:
        return CausalCollator(tokenizer)

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        h = self.encoder(encoder_inputs(batch))
        out = causal_lm_loss(self.head, h, batch["labels"])
        return {"loss": out["loss"], "lm_acc": out["acc"]}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        return step_encoder_hooks(self, step, total_steps)
