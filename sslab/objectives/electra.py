"""ELECTRA replaced-token detection with optional gradient-disentangled embedding sharing.

ELECTRA (Clark et al. 2020, Eq. 1-2): a small generator G is trained with MLM on the masked
positions; its samples ``x~_i ~ p_G(x_i | x_masked)`` replace the masked tokens, and the
discriminator D predicts for every token whether it was replaced:

    L = L_MLM(G) + lambda * L_Disc(D),   L_Disc = BCE(D(x~)_t, 1[x~_t != x_t])   (lambda = 50)

A sampled token equal to the original counts as *original* (label 0).

Embedding sharing (``embedding_sharing``):
* ``shared``: ELECTRA's tied token embeddings (both losses update them),
* ``gdes``: DeBERTaV3 (He et al. 2023, Sec. 3.2) gradient-disentangled embedding sharing:
  ``E_D = sg(E_G) + E_Delta`` with ``E_Delta`` initialised to zero; the discriminator loss only
  updates ``E_Delta``, the MLM loss only ``E_G``. After every optimizer step the discriminator's own
  embedding table is set to ``E_G + E_Delta`` so that the exported encoder is self-contained.
* ``none``: separate embeddings.

The discriminator is ``self.encoder`` (what gets exported); the generator is a shallower copy of the
same architecture (same width, ``generator_depth`` layers, DeBERTaV3-style).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sslab.core.registry import OBJECTIVES
from sslab.datasets.text_collate import IGNORE, MLMCollator
from sslab.objectives.mlm import LMHead, encoder_inputs, masked_ce, step_encoder_hooks

SHARING = ("gdes", "shared", "none")


def build_generator(disc: nn.Module, depth: Optional[int], heads: Optional[int]) -> nn.Module:
    """A generator with the discriminator's architecture, ``depth`` layers (default half)."""
    from sslab.encoders.text_transformer import TextTransformer

    if not isinstance(disc, TextTransformer):
        raise TypeError(f"electra needs a text_transformer discriminator, got {type(disc).__name__}")
    ffn = disc.blocks[0].mlp.kind if len(disc.blocks) else "gelu"
    return TextTransformer(vocab_size=disc.vocab_size, dim=disc.dim, depth=depth or max(1, disc.depth // 2),
                           heads=heads or disc.heads, max_len=disc.max_len, causal=False,
                           position=disc.position, ffn=ffn, pad_id=disc.pad_id,
                           unpad=getattr(disc, "unpad", False))


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """``H(p)`` in nats: the BCE of a discriminator that only knows the replaced fraction ``p``. A
    ``disc_loss`` near ``disc_prior_loss`` means replaced-token detection has not been learned yet."""
    p = p.float().clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@OBJECTIVES.register("electra")
class ElectraObjective(nn.Module):
    def __init__(self, encoder: nn.Module, embedding_sharing: str = "gdes", disc_weight: float = 50.0,
                 generator_depth: Optional[int] = None, generator_heads: Optional[int] = None,
                 mask_prob: float = 0.15, temperature: float = 1.0) -> None:
        super().__init__()
        if embedding_sharing not in SHARING:
            raise ValueError(f"embedding_sharing must be one of {SHARING}, got {embedding_sharing!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.encoder = encoder
        self.sharing = embedding_sharing
        self.disc_weight = float(disc_weight)
        self.temperature = float(temperature)
        self.generator = build_generator(encoder, generator_depth, generator_heads)
        gen_emb = self.generator.get_input_embeddings()
        self.gen_head = LMHead(gen_emb, encoder.dim)
        self.disc_head = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.GELU(), nn.Linear(encoder.dim, 1))
        if embedding_sharing == "shared":
            self.encoder.tok_emb = gen_emb  # one module, updated by both losses
        elif embedding_sharing == "gdes":
            self.gdes_delta = nn.Parameter(torch.zeros_like(gen_emb.weight))
            disc_emb = self.encoder.get_input_embeddings()
            disc_emb.weight.requires_grad_(False)  # a mirror of E_G + E_Delta, written after each step
            self.sync_embedding()

    @staticmethod
    def collator(tokenizer: Any, mask_prob: float = 0.15, **_: Any) -> MLMCollator:
        # ELECTRA replaces every selected token by a generator sample; use 100% [MASK] for G's input
        return MLMCollator(tokenizer, mask_prob, mask_replace_prob=1.0, random_replace_prob=0.0)

    # ------------------------------------------------------------------ GDES
    def discriminator_embedding(self) -> torch.Tensor:
        """``E_D``: ``sg(E_G) + E_Delta`` (gdes), ``E_G`` (shared) or D's own table (none)."""
        if self.sharing == "gdes":
            return self.generator.get_input_embeddings().weight.detach() + self.gdes_delta
        return self.encoder.get_input_embeddings().weight

    @torch.no_grad()
    def sync_embedding(self) -> None:
        if self.sharing == "gdes":
            self.encoder.get_input_embeddings().weight.copy_(self.discriminator_embedding())

    # ------------------------------------------------------------------ steps
    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """Draw replacements from the generator distribution (Gumbel-max, no gradient)."""
        u = torch.rand_like(logits, dtype=torch.float32).clamp_(1e-9, 1.0 - 1e-9)
        return (logits.float() / self.temperature - torch.log(-torch.log(u))).argmax(-1)

    def corrupt(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        """Generator MLM + sampling. Returns the generator loss, the corrupted ids and the
        discriminator labels (1 where the token differs from the original, 0 elsewhere)."""
        labels = batch["labels"]
        gen_h = self.generator(encoder_inputs(batch))
        gen = masked_ce(self.gen_head, gen_h, labels)
        original = torch.where(labels != IGNORE, labels, batch["input_ids"])
        corrupted = original.clone()
        sel = labels != IGNORE
        if "logits" in gen:
            with torch.no_grad():
                corrupted[sel] = self.sample(gen["logits"].detach())
        disc_labels = (corrupted != original).float()
        return {"gen_loss": gen["loss"], "gen_acc": gen["acc"], "corrupted": corrupted, "disc_labels": disc_labels}

    def discriminate(self, corrupted: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token replaced logits ``[B, L]``."""
        inputs: Dict[str, Any] = {"input_ids": corrupted, "attention_mask": attention_mask}
        if self.sharing == "gdes":
            inputs["inputs_embeds"] = F.embedding(corrupted, self.discriminator_embedding())
        return self.disc_head(self.encoder(inputs)).squeeze(-1)

    def forward(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        if "labels" not in batch:
            raise KeyError("electra batch needs 'labels' (use ElectraObjective.collator)")
        c = self.corrupt(batch)
        att = batch.get("attention_mask")
        if att is None:
            att = torch.ones_like(c["corrupted"])
        logits = self.discriminate(c["corrupted"], att)
        valid = att.bool()
        disc_loss = F.binary_cross_entropy_with_logits(logits[valid].float(), c["disc_labels"][valid])
        with torch.no_grad():
            pred = (logits[valid] > 0).float()
            disc_acc = (pred == c["disc_labels"][valid]).float().mean()
            replaced = c["disc_labels"][valid].mean()
        return {"loss": c["gen_loss"] + self.disc_weight * disc_loss, "gen_loss": c["gen_loss"].detach(),
                "disc_loss": disc_loss.detach(), "disc_prior_loss": binary_entropy(replaced),
                "gen_acc": c["gen_acc"], "disc_acc": disc_acc, "replaced_frac": replaced}

    def on_step_end(self, step: int, total_steps: int) -> Optional[Dict[str, Any]]:
        self.sync_embedding()
        out = step_encoder_hooks(self, step, total_steps) or {}
        if self.sharing == "gdes":
            out["gdes_delta_norm"] = float(self.gdes_delta.detach().norm())
        return out
