"""MLM masking statistics and loss; ELECTRA labels; GDES gradient routing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslab.datasets.text_collate import IGNORE, MLMCollator, special_mask
from sslab.datasets.text_packing import PackedDataset
from sslab.datasets.text_tokenizer import MASK_ID, NUM_SPECIAL
from sslab.objectives.electra import ElectraObjective
from sslab.objectives.mlm import MLMObjective
from text_helpers import pydoc_docs, pydoc_tokenizer, tiny_encoder, one_thread  # noqa: F401


def _items(n: int = 64, block: int = 64):
    ds = PackedDataset(pydoc_docs(), pydoc_tokenizer(), block_size=block)
    return [ds[i % len(ds)] for i in range(n)]


@pytest.mark.parametrize("rate", [0.15, 0.30])
def test_mlm_masking_rate_and_80_10_10(rate: float) -> None:
    torch.manual_seed(0)
    col = MLMCollator(pydoc_tokenizer(), rate)
    items = _items(256)
    b = col(items)
    orig = torch.nn.utils.rnn.pad_sequence([torch.tensor(i["input_ids"]) for i in items], batch_first=True)
    ordinary = ~special_mask(orig)
    sel = b["labels"] != IGNORE
    assert not (sel & ~ordinary).any()  # specials and padding are never selected
    assert abs(sel.sum().item() / ordinary.sum().item() - rate) < 0.01
    assert torch.equal(b["labels"][sel], orig[sel])
    masked = (b["input_ids"] == MASK_ID) & sel
    kept = (b["input_ids"] == orig) & sel
    assert abs(masked.sum().item() / sel.sum().item() - 0.8) < 0.03
    assert abs(kept.sum().item() / sel.sum().item() - 0.1) < 0.03
    assert (b["input_ids"][sel & ~masked] >= NUM_SPECIAL).all()  # random replacements are ordinary tokens
    assert torch.equal(b["input_ids"][~sel], orig[~sel])


def test_mlm_loss_is_cross_entropy_on_masked_positions_only() -> None:
    torch.manual_seed(0)
    tok = pydoc_tokenizer()
    obj = MLMObjective(tiny_encoder(tok), mask_prob=0.15)
    b = MLMObjective.collator(tok, mask_prob=0.15)(_items(8))
    out = obj(b)
    h = obj.encoder(b)
    logits = F.linear(obj.head.norm(F.gelu(obj.head.dense(h))), obj.encoder.tok_emb.weight, obj.head.bias)
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(out["loss"], ref, atol=1e-5)
    assert abs(out["loss"].item() - torch.log(torch.tensor(float(len(tok)))).item()) < 0.5  # ~uniform at init


def test_mlm_loss_goes_down_on_real_text() -> None:
    torch.manual_seed(0)
    tok = pydoc_tokenizer()
    obj = MLMObjective(tiny_encoder(tok), mask_prob=0.15)
    col = MLMObjective.collator(tok, mask_prob=0.3)
    items = _items(64, block=32)
    opt = torch.optim.AdamW(obj.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        b = col([items[(step * 8 + j) % len(items)] for j in range(8)])
        loss = obj(b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.8


def _electra(sharing: str = "gdes") -> ElectraObjective:
    torch.manual_seed(0)
    tok = pydoc_tokenizer()
    return ElectraObjective(tiny_encoder(tok), embedding_sharing=sharing, disc_weight=50.0)


def test_gdes_delta_starts_at_zero_and_mirror_equals_generator() -> None:
    obj = _electra()
    assert torch.count_nonzero(obj.gdes_delta) == 0
    assert torch.equal(obj.encoder.tok_emb.weight, obj.generator.tok_emb.weight)
    assert not obj.encoder.tok_emb.weight.requires_grad


def test_gdes_discriminator_loss_never_reaches_the_generator_embedding() -> None:
    obj = _electra()
    b = ElectraObjective.collator(pydoc_tokenizer())(_items(8))
    c = obj.corrupt(b)
    logits = obj.discriminate(c["corrupted"], b["attention_mask"])
    disc_loss = F.binary_cross_entropy_with_logits(logits, c["disc_labels"])
    disc_loss.backward()
    g = obj.generator.tok_emb.weight.grad
    assert g is None or torch.count_nonzero(g) == 0
    assert obj.gdes_delta.grad is not None and obj.gdes_delta.grad.abs().sum() > 0
    # and a full optimizer step on the discriminator loss leaves E_G untouched
    before = obj.generator.tok_emb.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    opt.step()
    obj.on_step_end(1, 10)
    assert torch.equal(obj.generator.tok_emb.weight, before)
    assert torch.allclose(obj.encoder.tok_emb.weight, before + obj.gdes_delta.detach())


def test_gdes_total_loss_gradient_on_generator_embedding_is_the_mlm_gradient() -> None:
    obj = _electra()
    b = ElectraObjective.collator(pydoc_tokenizer())(_items(8))
    torch.manual_seed(1)
    obj(b)["loss"].backward()
    g_total = obj.generator.tok_emb.weight.grad.clone()
    obj.zero_grad()
    torch.manual_seed(1)
    obj.corrupt(b)["gen_loss"].backward()
    assert torch.allclose(g_total, obj.generator.tok_emb.weight.grad, atol=1e-6)


def test_disc_prior_loss_is_the_bce_of_predicting_the_replaced_fraction() -> None:
    from sslab.objectives.electra import binary_entropy

    out = _electra()(ElectraObjective.collator(pydoc_tokenizer())(_items(8)))
    assert 0 < out["replaced_frac"] < 1
    assert torch.allclose(out["disc_prior_loss"], binary_entropy(out["replaced_frac"]))
    # the BCE of a constant prediction logit(p) on labels with a fraction p of ones
    labels = torch.zeros(1000)
    labels[:137] = 1.0
    p = labels.mean()
    bce = F.binary_cross_entropy_with_logits(torch.full((1000,), float(torch.logit(p))), labels)
    assert torch.allclose(binary_entropy(p), bce, atol=1e-5)
    assert float(binary_entropy(torch.tensor(0.5))) == pytest.approx(0.6931, abs=1e-4)


def test_shared_embedding_does_receive_discriminator_gradient() -> None:
    obj = _electra("shared")
    assert obj.encoder.tok_emb is obj.generator.tok_emb
    b = ElectraObjective.collator(pydoc_tokenizer())(_items(8))
    c = obj.corrupt(b)
    F.binary_cross_entropy_with_logits(obj.discriminate(c["corrupted"], b["attention_mask"]),
                                       c["disc_labels"]).backward()
    assert obj.generator.tok_emb.weight.grad.abs().sum() > 0


def test_electra_labels_are_zero_where_the_generator_sampled_the_original(monkeypatch) -> None:
    obj = _electra()
    b = ElectraObjective.collator(pydoc_tokenizer())(_items(8))
    sel = b["labels"] != IGNORE
    target = b["labels"][sel]
    keep = torch.arange(len(target)) % 2 == 0  # half the samples reproduce the original token

    def fake_sample(logits: torch.Tensor) -> torch.Tensor:
        other = (target - NUM_SPECIAL + 1) % (len(pydoc_tokenizer()) - NUM_SPECIAL) + NUM_SPECIAL
        return torch.where(keep, target, other)

    monkeypatch.setattr(obj, "sample", fake_sample)
    c = obj.corrupt(b)
    assert torch.equal(c["disc_labels"][sel], (~keep).float())
    assert c["disc_labels"][~sel].sum() == 0
    assert torch.equal(c["corrupted"][sel], fake_sample(None))
    out = obj(b)
    assert 0 < out["replaced_frac"] < 1 and torch.isfinite(out["loss"])


def test_electra_bad_config() -> None:
    tok = pydoc_tokenizer()
    with pytest.raises(ValueError, match="embedding_sharing"):
        ElectraObjective(tiny_encoder(tok), embedding_sharing="tied")
    with pytest.raises(KeyError, match="labels"):
        _electra()({"input_ids": torch.zeros(1, 3, dtype=torch.long)})
