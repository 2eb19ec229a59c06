"""MeCo: metadata conditioning then cooldown (Gao et al. 2025, "Metadata Conditioning Accelerates
Language Model Pretraining", Sec. 2).

Training sequence (causal LM): ``[CLS] metadata [META] text [SEP]``. The loss covers the text only
(``labels = -100`` on ``[CLS]``, the metadata and ``[META]``): the model conditions on the source
but is never trained to predict it. For the last ``cooldown_frac`` of the steps (10% in the paper)
the metadata is removed and training continues on plain ``[CLS] text [SEP]`` so that the model
works without metadata at inference.

The phase is a buffer of the objective (checkpointed, so resume is exact) switched by
``on_step_end``; the collator always emits metadata plus ``meta_len`` and the objective strips the
metadata on device during cooldown, so DataLoader workers need no shared state.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.text_collate import IGNORE
from sslab.datasets.text_packing import pad_ids
from sslab.datasets.text_tokenizer import CLS_ID, META_ID, PAD_ID
from sslab.objectives.mlm import LMHead, causal_lm_loss, step_encoder_hooks


class MeCoCollator:
    """Items with ``input_ids`` (``[CLS] text [SEP]``) and ``meta_ids`` -> metadata-prefixed batch
    with ``labels`` (text only) and ``meta_len`` (tokens between ``[CLS]`` and the text, ``[META]``
    included; 0 for a document without metadata)."""

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        seqs, labels, meta_len = [], [], []
        for i, it in enumerate(items):
            ids = list(it["input_ids"])
            if not ids or ids[0] != CLS_ID:
                raise ValueError(f"MeCo item {i}: input_ids must start with [CLS] (use DocumentDataset)")
            meta = list(it.get("meta_ids") or [])
            m = len(meta) + 1 if meta else 0
            seq = [CLS_ID, *meta, META_ID, *ids[1:]] if meta else ids
            seqs.append(seq)
            labels.append([IGNORE] * (1 + m) + ids[1:])
            meta_len.append(m)
        batch = pad_ids(seqs, PAD_ID)
        lab = torch.full_like(batch["input_ids"], IGNORE)
        for i, l in enumerate(labels):
            lab[i, : len(l)] = torch.tensor(l)
        batch["labels"] = lab
        batch["meta_len"] = torch.tensor(meta_len)
        return batch


def strip_metadata(batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove the ``meta_len`` tokens after ``[CLS]`` in every row (vectorised gather, on device)."""
    ids, att, lab, m = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["meta_len"]
    B, L = ids.shape
    pos = torch.arange(L, device=ids.device)[None].expand(B, L)
    src = torch.where(pos == 0, pos, pos + m.to(ids.device)[:, None])
    valid = src < L
    src = src.clamp(max=L - 1)
    new_att = torch.gather(att, 1, src) * valid
    out = {
        "input_ids": torch.where(new_att.bool(), torch.gather(ids, 1, src), torch.full_like(ids, PAD_ID)),
        "attention_mask": new_att,
        "labels": torch.where(new_att.bool(), torch.gather(lab, 1, src), torch.full_like(lab, IGNORE)),
    }
    keep = int(out["attention_mask"].sum(1).max())
    return {k: v[:, :keep] for k, v in out.items()}


@OBJECTIVES.register("meco")
class MeCoObjective(nn.Module):
    def __init__(self, encoder: nn.Module, cooldown_frac: float = 0.1, tie_weights: bool = True) -> None:
        super().__init__()
        if not getattr(encoder, "causal", False):
            raise ValueError("meco needs a causal encoder (encoder.causal: true)")
        if not 0.0 <= cooldown_frac <= 1.0:
            raise ValueError(f"cooldown_frac must be in [0, 1], got {cooldown_frac}")
        self.encoder = encoder
        self.cooldown_frac = cooldown_frac
        self.head = LMHead(encoder.get_input_embeddings(), encoder.dim, tie=tie_weights)
        self.register_buffer("cooldown", torch.tensor(False))

    @staticmethod
    def collator(tokenizer: Any = None, **_: Any) -> MeCoCollator:
        return MeCoCollator()

    def switch_step(self, total_steps: int) -> int:
        """Completed-step count after which training is plain text: ``total - round(frac * total)``."""
        return total_steps - int(math.floor(self.cooldown_frac * total_steps + 0.5))

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        for key in ("input_ids", "attention_mask", "labels", "meta_len"):
            if key not in batch:
                raise KeyError(f"meco batch needs {key!r} (use MeCoObjective.collator)")
        if bool(self.cooldown):
            batch = strip_metadata(batch)
        h = self.encoder({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        out = causal_lm_loss(self.head, h, batch["labels"])
        return {"loss": out["loss"], "lm_acc": out["acc"], "meco_phase": float(bool(self.cooldown))}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        logs = step_encoder_hooks(self, step, total_steps) or {}
        if not bool(self.cooldown) and step >= self.switch_step(total_steps):
            self.cooldown.fill_(True)
            logs["meco_cooldown_start"] = step
        return logs
