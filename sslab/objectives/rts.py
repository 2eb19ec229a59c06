"""Objectives without a [MASK] token (Di Liello et al. 2022, "Effective Pre-Training Objectives for
Transformer-based Autoencoders"): a fraction of the tokens is swapped for random other tokens.

* ``rts`` (random token substitution): binary detection per token,
  ``L = BCE(D(x~)_t, 1[t substituted])`` over all real tokens — ELECTRA's discriminator task
  without a generator (cheaper; the substitutes are uniform, hence easier to spot).
* ``slm`` (swapped language modelling): predict the original token at the substituted positions,
  ``L = -1/|S| sum_{t in S} log p(x_t | x~)`` — MLM with no [MASK]/pretrain-finetune mismatch.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.text_collate import SubstitutionCollator
from sslab.objectives.mlm import LMHead, encoder_inputs, masked_ce, step_encoder_hooks


@OBJECTIVES.register("rts")
class RTSObjective(nn.Module):
    def __init__(self, encoder: nn.Module, substitution_prob: float = 0.15) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.GELU(), nn.Linear(encoder.dim, 1))

    @staticmethod
    def collator(tokenizer: Any, substitution_prob: float = 0.15, **_: Any) -> SubstitutionCollator:
        return SubstitutionCollator(tokenizer, substitution_prob)

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        if "replaced" not in batch:
            raise KeyError("rts batch needs 'replaced' (use RTSObjective.collator)")
        logits = self.head(self.encoder(encoder_inputs(batch))).squeeze(-1)
        valid = batch["attention_mask"].bool()
        target = batch["replaced"][valid].float()
        loss = F.binary_cross_entropy_with_logits(logits[valid].float(), target)
        with torch.no_grad():
            acc = ((logits[valid] > 0).float() == target).float().mean()
        return {"loss": loss, "rts_acc": acc}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        return step_encoder_hooks(self, step, total_steps)


@OBJECTIVES.register("slm")
class SLMObjective(nn.Module):
    def __init__(self, encoder: nn.Module, substitution_prob: float = 0.15, tie_weights: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = LMHead(encoder.get_input_embeddings(), encoder.dim, tie=tie_weights)

    @staticmethod
    def collator(tokenizer: Any, substitution_prob: float = 0.15, **_: Any) -> SubstitutionCollator:
        return SubstitutionCollator(tokenizer, substitution_prob)

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        out = masked_ce(self.head, self.encoder(encoder_inputs(batch)), batch["labels"])
        return {"loss": out["loss"], "slm_acc": out["acc"]}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        return step_encoder_hooks(self, step, total_steps)
