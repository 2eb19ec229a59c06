"""Conditional training with control tokens (Korbak et al. 2023, "Pretraining Language Models with
Human Preferences", Sec. 3 "Conditional training"; Keskar et al. 2019, CTRL).

Every document gets a control token from its quality score: ``[GOOD]`` if ``score >= threshold``
else ``[BAD]``; a fraction ``untagged_fraction`` of the documents (and documents without a score)
get no token, so the model also works unconditioned. Sequence: ``[CLS] [ctrl] text [SEP]``; the
control token is conditioning only (no loss on predicting it). At inference, prepend ``[GOOD]``.

``lm: causal`` trains a causal LM (the paper's setting); ``lm: masked`` trains MLM, where the control
token (a special token) is never masked.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.text_collate import IGNORE, CausalCollator, MLMCollator
from sslab.datasets.text_tokenizer import BAD_ID, CLS_ID, GOOD_ID
from sslab.objectives.mlm import LMHead, causal_lm_loss, encoder_inputs, masked_ce, step_encoder_hooks


class ControlTagger:
    """Decide the control token of one item from its ``score``."""

    def __init__(self, threshold: float = 0.5, untagged_fraction: float = 0.1) -> None:
        if not 0.0 <= untagged_fraction <= 1.0:
            raise ValueError(f"untagged_fraction must be in [0, 1], got {untagged_fraction}")
        self.threshold = float(threshold)
        self.untagged_fraction = float(untagged_fraction)

    def token(self, score: Optional[float]) -> Optional[int]:
        if score is None or score != score:
            return None
        if float(torch.rand(())) < self.untagged_fraction:
            return None
        return GOOD_ID if score >= self.threshold else BAD_ID

    def tag(self, item: Mapping[str, Any]) -> Dict[str, Any]:
        ids = list(item["input_ids"])
        if not ids or ids[0] != CLS_ID:
            raise ValueError("conditional training items must start with [CLS] (use DocumentDataset)")
        tok = self.token(item.get("score"))
        return {**item, "input_ids": ids if tok is None else [CLS_ID, tok, *ids[1:]], "control": tok}


class ConditionalCollator:
    """Tag items, then build causal-LM or MLM batches; the control position never carries loss."""

    def __init__(self, tokenizer: Any, lm: str = "causal", threshold: float = 0.5,
                 untagged_fraction: float = 0.1, mask_prob: float = 0.15) -> None:
        if lm not in ("causal", "masked"):
            raise ValueError(f"lm must be 'causal' or 'masked', got {lm!r}")
        self.tagger = ControlTagger(threshold, untagged_fraction)
        self.inner = CausalCollator(tokenizer) if lm == "causal" else MLMCollator(tokenizer, mask_prob)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        tagged = [self.tagger.tag(it) for it in items]
        batch = self.inner(tagged)
        ids = batch["input_ids"]
        is_ctrl = torch.zeros_like(ids, dtype=torch.bool)
        is_ctrl[:, 1] = torch.tensor([t["control"] is not None for t in tagged])
        batch["labels"] = batch["labels"].masked_fill(is_ctrl, IGNORE)
        batch["control"] = torch.tensor([-1 if t["control"] is None else t["control"] for t in tagged])
        return batch


@OBJECTIVES.register("conditional")
class ConditionalObjective(nn.Module):
    def __init__(self, encoder: nn.Module, lm: str = "causal", threshold: float = 0.5,
                 untagged_fraction: float = 0.1, mask_prob: float = 0.15, tie_weights: bool = True) -> None:
        super().__init__()
        if lm not in ("causal", "masked"):
            raise ValueError(f"lm must be 'causal' or 'masked', got {lm!r}")
        if lm == "causal" and not getattr(encoder, "causal", False):
            raise ValueError("conditional with lm: causal needs a causal encoder (encoder.causal: true)")
        self.encoder = encoder
        self.lm = lm
        self.head = LMHead(encoder.get_input_embeddings(), encoder.dim, tie=tie_weights)

    @staticmethod
    def collator(tokenizer: Any, lm: str = "causal", threshold: float = 0.5, untagged_fraction: float = 0.1,
                 mask_prob: float = 0.15, **_: Any) -> ConditionalCollator:
        return ConditionalCollator(tokenizer, lm, threshold, untagged_fraction, mask_prob)

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        h = self.encoder(encoder_inputs(batch))
        out = causal_lm_loss(self.head, h, batch["labels"]) if self.lm == "causal" else \
            masked_ce(self.head, h, batch["labels"])
        logs: Dict[str, Any] = {"loss": out["loss"], "acc": out["acc"]}
        if "control" in batch:
            logs["tagged_frac"] = (batch["control"] >= 0).float().mean()
        return logs

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        return step_encoder_hooks(self, step, total_steps)
