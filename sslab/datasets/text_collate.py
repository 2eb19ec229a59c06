"""Collators for text pretraining: padding, BERT masking (via transformers'
``DataCollatorForLanguageModeling``), random token substitution (RTS/SLM) and causal LM labels.

All randomness uses torch's global RNG so the trainer's per-batch seeding makes masks reproducible.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import torch

from sslab.datasets.text_packing import pad_ids
from sslab.datasets.text_tokenizer import NUM_SPECIAL, PAD_ID

IGNORE = -100


def _seqs(items: Sequence[Mapping[str, Any]]) -> List[List[int]]:
    if not items:
        raise ValueError("cannot collate an empty batch")
    for i, it in enumerate(items):
        if "input_ids" not in it:
            raise KeyError(f"batch item {i} has no 'input_ids' (keys: {sorted(it)})")
    return [list(it["input_ids"]) for it in items]


def special_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """True where a token is special (ids below ``NUM_SPECIAL``: pad, CLS, SEP, modes, sentinels)."""
    return input_ids < NUM_SPECIAL


class MLMCollator:
    """BERT masking (Devlin et al. 2019, Sec. 3.1): select ``mlm_probability`` of the non-special
    tokens (15% in BERT, 30% or 40% per Wettig et al. 2023); of those 80% -> [MASK], 10% -> random,
    10% kept. Labels are the original ids at selected positions, ``-100`` elsewhere."""

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1) -> None:
        from transformers import DataCollatorForLanguageModeling

        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        self._hf = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability,
                                                   mask_replace_prob=mask_replace_prob,
                                                   random_replace_prob=random_replace_prob)
        self.vocab_size = len(tokenizer)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        batch = pad_ids(_seqs(items), PAD_ID)
        ids = batch["input_ids"].clone()
        inputs, labels = self._hf.torch_mask_tokens(ids, special_tokens_mask=special_mask(ids))
        # the HF collator draws random replacements from the whole vocabulary, specials included;
        # redraw those among ordinary tokens so that no sentinel/mode token leaks into the input
        bad = special_mask(inputs) & (labels != IGNORE) & (inputs != self._hf.tokenizer.mask_token_id)
        if bad.any():
            inputs[bad] = torch.randint(NUM_SPECIAL, self.vocab_size, (int(bad.sum()),))
        batch["input_ids"], batch["labels"] = inputs, labels
        return batch


class SubstitutionCollator:
    """Random token substitution, no [MASK] token (RTS, Di Liello et al. 2022; SLM, "swapped LM"):
    ``probability`` of the non-special tokens are replaced by a *different* random ordinary token.
    Returns ``labels`` (original id where substituted, else -100) and ``replaced`` (0/1 float)."""

    def __init__(self, tokenizer: Any, probability: float = 0.15) -> None:
        if not 0.0 < probability < 1.0:
            raise ValueError(f"substitution probability must be in (0, 1), got {probability}")
        self.p = probability
        self.vocab_size = len(tokenizer)
        if self.vocab_size - NUM_SPECIAL < 2:
            raise ValueError("vocabulary has fewer than two ordinary tokens")

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        batch = pad_ids(_seqs(items), PAD_ID)
        ids = batch["input_ids"]
        chosen = (torch.rand(ids.shape) < self.p) & ~special_mask(ids)
        n_ord = self.vocab_size - NUM_SPECIAL
        # offset in [1, n_ord-1] guarantees the substitute differs from the original
        offset = torch.randint(1, n_ord, ids.shape)
        subst = (ids - NUM_SPECIAL + offset) % n_ord + NUM_SPECIAL
        batch["labels"] = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        batch["replaced"] = chosen.float()
        batch["input_ids"] = torch.where(chosen, subst, ids)
        return batch


class CausalCollator:
    """Next-token prediction: ``labels = input_ids`` with padding ignored (shifted in the loss)."""

    def __init__(self, tokenizer: Any = None) -> None:
        pass

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        batch = pad_ids(_seqs(items), PAD_ID)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
        return batch
