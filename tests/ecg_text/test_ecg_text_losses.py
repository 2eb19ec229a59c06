"""MELP losses: hand-computed InfoNCE, symmetry, GLoRIA attention similarity, gradient routing, switches."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslab.encoders.vit1d import ViT1D
from sslab.objectives.melp import MELP, attention_similarity, beat_loss, clip_loss, sentence_pool

torch.set_num_threads(1)


def test_clip_loss_matches_hand_computation_3x3():
    torch.manual_seed(0)
    e = F.normalize(torch.randn(3, 4), dim=-1)
    t = F.normalize(torch.randn(3, 4), dim=-1)
    scale = torch.tensor(2.5)
    loss, acc = clip_loss(e, t, scale)
    s = [[2.5 * float(e[i] @ t[j]) for j in range(3)] for i in range(3)]
    e2t = [-(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(3)))) for i in range(3)]
    t2e = [-(s[i][i] - math.log(sum(math.exp(s[j][i]) for j in range(3)))) for i in range(3)]
    hand = 0.5 * (sum(e2t) / 3 + sum(t2e) / 3)
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    # symmetric: swapping the towers gives the same loss
    assert clip_loss(t, e, scale)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    # aligned pairs: loss near the minimum, accuracy 1
    low, acc1 = clip_loss(e, e, torch.tensor(50.0))
    assert low.item() < loss.item() and acc1.item() == 1.0


def test_attention_similarity_hand_value_and_sentence_mask():
    torch.manual_seed(1)
    sent = F.normalize(torch.randn(2, 3, 8), dim=-1)
    beats = F.normalize(torch.randn(2, 4, 8), dim=-1)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    R = attention_similarity(sent, mask, beats, g1=4.0, g2=5.0)
    # hand computation for report 0 vs ECG 1 (sentences 0 and 1 only)
    rs = []
    for k in range(2):
        a = torch.softmax(4.0 * beats[1] @ sent[0, k], dim=0)
        c = F.normalize((a[:, None] * beats[1]).sum(0), dim=0)
        rs.append(float(c @ sent[0, k]))
    hand = math.log(sum(math.exp(5.0 * r) for r in rs)) / 5.0
    assert R[0, 1].item() == pytest.approx(hand, rel=1e-5)
    # a masked (padding) sentence does not change anything
    sent2 = sent.clone()
    sent2[0, 2] = F.normalize(torch.randn(8), dim=0)
    assert torch.allclose(attention_similarity(sent2, mask, beats), R)
    # beat loss is lower when sentences equal their ECG's beats than when shuffled
    aligned = beats[:, :3]
    good = beat_loss(aligned, torch.ones(2, 3, dtype=torch.bool), beats)
    bad = beat_loss(aligned.flip(0), torch.ones(2, 3, dtype=torch.bool), beats)
    assert good.item() < bad.item()


def test_sentence_pool_means_per_sentence():
    tokens = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
    sid = torch.tensor([[-1, 0, 0, 1, 1, -1]])
    pooled, valid = sentence_pool(tokens, sid, max_sentences=4)
    assert valid.tolist() == [[True, True]]
    assert torch.allclose(pooled[0, 0], tokens[0, 1:3].mean(0))
    assert torch.allclose(pooled[0, 1], tokens[0, 3:5].mean(0))


def _melp(weights):
    torch.manual_seed(0)
    enc = ViT1D(in_chans=12, patch_size=25, dim=32, depth=1, heads=2)
    return MELP(enc, vocab_size=50, pad_id=0, bos_id=2, eos_id=3, text={"dim": 32, "depth": 1, "heads": 2},
                decoder={"dim": 32, "depth": 1, "heads": 2}, embed_dim=16, num_queries=3, weights=weights,
                max_len=16)


def _batch(B=4, L=9):
    torch.manual_seed(2)
    ids = torch.randint(5, 50, (B, L))
    ids[:, 0] = 2
    att = torch.ones(B, L, dtype=torch.long)
    att[0, 6:] = 0
    ids[0, 6:] = 0
    ids[0, 5] = 3
    ids[1:, -1] = 3
    sid = torch.full((B, L), -1)
    sid[:, 1:4] = 0
    sid[1:, 4:8] = 1
    sid[0, 4:5] = 1
    return {"ecg": torch.randn(B, 12, 100), "input_ids": ids, "attention_mask": att, "sentence_ids": sid}


def _has_grad(module):
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


GROUPS = {
    "encoder": lambda m: m.encoder, "text": lambda m: m.text, "decoder": lambda m: m.decoder,
    "beat": lambda m: torch.nn.ModuleList([m.beat_queries, m.beat_proj, m.sent_proj]),
    "rhythm_proj": lambda m: torch.nn.ModuleList([m.ecg_proj, m.text_proj]),
}


@pytest.mark.parametrize("loss,expect", [
    ("token", {"encoder", "decoder"}),
    ("beat", {"encoder", "text", "beat"}),
    ("rhythm", {"encoder", "text", "rhythm_proj", "logit_scale"}),
])
def test_each_loss_sends_gradients_only_where_it_should(loss, expect):
    weights = {k: (1.0 if k == loss else 0.0) for k in ("token", "beat", "rhythm")}
    m = _melp(weights)
    out = m(_batch())
    assert set(k for k in out if k.startswith("loss_")) == {f"loss_{loss}"}
    out["loss"].backward()
    got = {name for name, sel in GROUPS.items() if _has_grad(sel(m))}
    if m.logit_scale.grad is not None and m.logit_scale.grad.abs() > 0:
        got.add("logit_scale")
    assert got == expect


def test_total_is_weighted_sum_and_switches_are_validated():
    m = _melp({"token": 2.0, "beat": 0.2, "rhythm": 1.0})
    out = m(_batch())
    total = 2.0 * out["loss_token"] + 0.2 * out["loss_beat"] + 1.0 * out["loss_rhythm"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    assert m.weights == {"token": 2.0, "beat": 0.2, "rhythm": 1.0}
    # defaults of the paper's code; a partial override keeps the other defaults
    assert _melp(None).weights == {"token": 2.0, "beat": 0.2, "rhythm": 1.0}
    only_beat_off = _melp({"beat": 0})
    assert only_beat_off.weights == {"token": 2.0, "beat": 0.0, "rhythm": 1.0}
    out = only_beat_off(_batch())
    assert "loss_beat" not in out and {"loss_token", "loss_rhythm"} <= set(out)
    assert out["loss"].item() == pytest.approx(2.0 * out["loss_token"].item() + out["loss_rhythm"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="finite and >= 0"):
        _melp({"rhythm": -1.0})
    with pytest.raises(ValueError, match="finite and >= 0"):
        _melp({"token": float("nan")})
    with pytest.raises(ValueError, match="every loss is switched off"):
        _melp({"token": 0, "beat": 0, "rhythm": 0})
    with pytest.raises(ValueError, match="unknown loss"):
        _melp({"tokens": 1.0})


def test_caption_loss_ignores_padding_and_is_causal():
    m = _melp({"token": 1.0, "beat": 0.0, "rhythm": 0.0}).eval()
    b = _batch()
    with torch.no_grad():
        tokens = m.encoder(b["ecg"])
        base = m.caption_loss(tokens, b["input_ids"], b["attention_mask"])
        ids = b["input_ids"].clone()
        ids[0, 7] = 17  # a padded position: not a target, not attended
        assert m.caption_loss(tokens, ids, b["attention_mask"]).item() == pytest.approx(base.item(), rel=1e-6)
        # causal: logits at position t do not depend on tokens after t
        logits = m.decoder(b["input_ids"], b["attention_mask"], tokens)
        ids2 = b["input_ids"].clone()
        ids2[:, 5:] = 7
        logits2 = m.decoder(ids2, b["attention_mask"], tokens)
        assert torch.allclose(logits[:, :5], logits2[:, :5], atol=1e-5)
    # initial caption loss is near log(vocab) (no exploding tied logits)
    assert base.item() == pytest.approx(math.log(50), abs=1.0)
