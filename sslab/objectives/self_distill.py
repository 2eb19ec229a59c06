"""Self-distillation for further pretraining (Lee et al. 2023, "Self-Distillation for Further
Pre-training of Transformers", Sec. 3.2, Eq. 4):

1. further-pretrain a copy of the initial encoder on the target corpus -> teacher ``T`` (any sslab
   run, e.g. ``mlm`` on PTB-XL reports);
2. start the student ``S`` again from the *initial* checkpoint and train it with the masked
   prediction loss plus hidden-state matching to the frozen teacher:

       L = L_MLM(S) + alpha * 1/|V| sum_{t in V} || h_S(x~)_t - sg(h_T(x~)_t) ||^2

   over the real tokens ``V`` of the masked input ``x~``.

``teacher`` and ``init_from`` are exported-encoder paths (run dir, ``encoder/`` or .safetensors).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.text_collate import MLMCollator
from sslab.objectives.mlm import LMHead, encoder_inputs, masked_ce, step_encoder_hooks


def _load_weights(encoder: nn.Module, path: str) -> None:
    from sslab.core.export import load_encoder

    src = load_encoder(path)
    missing, unexpected = encoder.load_state_dict(src.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"init_from={path}: weights do not fit the student encoder "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")


@OBJECTIVES.register("self_distill")
class SelfDistillObjective(nn.Module):
    def __init__(self, encoder: nn.Module, teacher: Any, init_from: Optional[str] = None, alpha: float = 1.0,
                 mask_prob: float = 0.15, tie_weights: bool = True) -> None:
        super().__init__()
        if isinstance(teacher, (str, bytes)) or hasattr(teacher, "__fspath__"):
            from sslab.core.export import load_encoder

            teacher = load_encoder(teacher)
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an exported-encoder path or an nn.Module, got {type(teacher).__name__}")
        if init_from:
            _load_weights(encoder, init_from)
        self.encoder = encoder
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha = float(alpha)
        self.head = LMHead(encoder.get_input_embeddings(), encoder.dim, tie=tie_weights)
        t_dim = getattr(teacher, "dim", encoder.dim)
        self.proj = nn.Identity() if t_dim == encoder.dim else nn.Linear(encoder.dim, t_dim)

    @staticmethod
    def collator(tokenizer: Any, mask_prob: float = 0.15, **_: Any) -> MLMCollator:
        return MLMCollator(tokenizer, mask_prob)

    def train(self, mode: bool = True) -> "SelfDistillObjective":
        super().train(mode)
        self.teacher.eval()  # the teacher never uses dropout
        return self

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        inputs = encoder_inputs(batch)
        h = self.encoder(inputs)
        mlm = masked_ce(self.head, h, batch["labels"])
        with torch.no_grad():
            target = self.teacher(inputs)
        valid = batch["attention_mask"].bool()
        match = F.mse_loss(self.proj(h)[valid].float(), target[valid].float())
        return {"loss": mlm["loss"] + self.alpha * match, "mlm_loss": mlm["loss"].detach(),
                "match_loss": match.detach(), "mlm_acc": mlm["acc"]}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        return step_encoder_hooks(self, step, total_steps)
