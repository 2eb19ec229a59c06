"""UL2 span statistics and layout, MeCo metadata/phase, conditional control tokens, RTS/SLM."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslab.datasets.text_collate import IGNORE, CausalCollator, SubstitutionCollator, special_mask
from sslab.datasets.text_packing import DocumentDataset
from sslab.datasets.text_tokenizer import BAD_ID, CLS_ID, GOOD_ID, META_ID, MODE_IDS, NUM_SPECIAL, SENTINEL_BASE
from sslab.objectives.conditional import ConditionalCollator, ConditionalObjective
from sslab.objectives.meco import MeCoCollator, MeCoObjective, strip_metadata
from sslab.objectives.rts import RTSObjective, SLMObjective
from sslab.objectives.ul2 import UL2Collator, UL2Objective, random_spans_noise_mask, span_lengths
from text_helpers import pydoc_docs, pydoc_tokenizer, tiny_encoder, one_thread  # noqa: F401


@pytest.mark.parametrize("density,mean_span", [(0.15, 3.0), (0.5, 3.0), (0.15, 8.0), (0.5, 8.0)])
def test_ul2_span_statistics_match_the_configured_rates(density: float, mean_span: float) -> None:
    torch.manual_seed(0)
    L = 200
    noise, spans = 0, []
    for _ in range(200):
        m = random_spans_noise_mask(L, density, mean_span)
        noise += int(m.sum())
        spans += span_lengths(m)
        assert not m[0]  # starts with a non-noise run, as in T5
    assert noise / (200 * L) == pytest.approx(density, abs=0.005)
    assert sum(spans) / len(spans) == pytest.approx(mean_span, rel=0.1)
    assert len(spans) == 200 * round(round(L * density) / mean_span)


def _ul2_items(n: int = 64):
    ds = DocumentDataset(pydoc_docs(), pydoc_tokenizer(), max_len=48)
    return [ds[i % len(ds)] for i in range(n)]


def test_ul2_examples_reconstruct_the_text_and_loss_only_on_targets() -> None:
    torch.manual_seed(0)
    col = UL2Collator([{"mode": "R", "density": 0.3, "mean_span": 3.0}], max_len=96)
    items = _ul2_items(16)
    b = col(items)
    for i, it in enumerate(items):
        content = it["input_ids"][1:]
        pl = int(b["prefix_len"][i])
        ids = b["input_ids"][i][b["attention_mask"][i].bool()].tolist()
        prefix, targets = ids[:pl], ids[pl:]
        assert prefix[0] == MODE_IDS["R"] and b["mode"][i] == MODE_IDS["R"]
        lab = b["labels"][i]
        assert (lab[:pl] == IGNORE).all() and torch.equal(lab[pl:len(ids)], torch.tensor(targets))
        # undo the corruption: each sentinel in the prefix is replaced by its span from the targets
        spans, cur = {}, None
        for t in targets:
            if SENTINEL_BASE <= t < SENTINEL_BASE + 48:
                cur = t
                spans[cur] = []
            else:
                spans[cur].append(t)
        rebuilt = []
        for t in prefix[1:]:
            rebuilt.extend(spans[t] if t in spans else [t])
        assert rebuilt == content
        corrupted = sum(len(v) for v in spans.values())
        assert corrupted == round(len(content) * 0.3)


def test_ul2_mixture_ratios_and_s_denoiser() -> None:
    torch.manual_seed(0)
    col = UL2Collator([{"mode": "R", "weight": 3.0}, {"mode": "X", "density": 0.5, "weight": 1.0},
                       {"mode": "S", "weight": 4.0}], max_len=96)
    b = col(_ul2_items(400))
    frac = {k: (b["mode"] == v).float().mean().item() for k, v in MODE_IDS.items()}
    assert frac["R"] == pytest.approx(3 / 8, abs=0.06) and frac["S"] == pytest.approx(0.5, abs=0.06)
    s_rows = (b["mode"] == MODE_IDS["S"]).nonzero()[:, 0]
    for i in s_rows[:20].tolist():
        ids = b["input_ids"][i][b["attention_mask"][i].bool()]
        assert not ((ids >= SENTINEL_BASE) & (ids < NUM_SPECIAL)).any()  # S: plain prefix + continuation
    with pytest.raises(ValueError, match="mode must be one of"):
        UL2Collator([{"mode": "Q"}])


def test_ul2_objective_trains_and_logs_per_mode() -> None:
    torch.manual_seed(0)
    tok = pydoc_tokenizer()
    obj = UL2Objective(tiny_encoder(tok, causal=True, position="alibi", ffn="swiglu"))
    col = UL2Objective.collator(tok, max_len=96)
    out = obj(col(_ul2_items(16)))
    assert torch.isfinite(out["loss"]) and any(k.startswith("loss_") for k in out)
    with pytest.raises(ValueError, match="causal encoder"):
        UL2Objective(tiny_encoder(tok))


def _meco_items():
    ds = DocumentDataset(pydoc_docs(), pydoc_tokenizer(), max_len=32)
    return [ds[i] for i in range(8)]


def test_meco_metadata_tokens_carry_no_loss() -> None:
    torch.manual_seed(0)
    items = _meco_items()
    b = MeCoCollator()(items)
    for i, it in enumerate(items):
        m = int(b["meta_len"][i])
        assert m == len(it["meta_ids"]) + 1 and b["input_ids"][i, m] == META_ID
        assert (b["labels"][i, : m + 1] == IGNORE).all()  # [CLS], metadata and [META]
        n = len(it["input_ids"]) - 1
        assert torch.equal(b["labels"][i, m + 1: m + 1 + n], torch.tensor(it["input_ids"][1:]))
    obj = MeCoObjective(tiny_encoder(pydoc_tokenizer(), causal=True))
    out = obj(b)
    h = obj.encoder({"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]})
    logits = obj.head(h[:, :-1])
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(out["loss"], ref, atol=1e-5)


def test_meco_cooldown_strips_metadata_exactly() -> None:
    items = _meco_items()
    b = MeCoCollator()(items)
    plain = CausalCollator()(items)
    s = strip_metadata(b)
    assert torch.equal(s["input_ids"], plain["input_ids"])
    assert torch.equal(s["attention_mask"], plain["attention_mask"])
    expect = plain["labels"].clone()
    expect[:, 0] = IGNORE
    assert torch.equal(s["labels"], expect)


def test_meco_phase_switches_at_the_right_step_and_is_checkpointed() -> None:
    obj = MeCoObjective(tiny_encoder(pydoc_tokenizer(), causal=True), cooldown_frac=0.1)
    assert obj.switch_step(100) == 90
    for step in range(1, 90):
        obj.on_step_end(step, 100)
        assert not bool(obj.cooldown)
    logs = obj.on_step_end(90, 100)
    assert bool(obj.cooldown) and logs["meco_cooldown_start"] == 90  # steps 91..100 (10%) are plain text
    b = MeCoCollator()(_meco_items())
    assert obj(b)["meco_phase"] == 1.0
    fresh = MeCoObjective(tiny_encoder(pydoc_tokenizer(), causal=True))
    fresh.load_state_dict(obj.state_dict())
    assert bool(fresh.cooldown)


def test_conditional_tokens_from_thresholds_and_untagged_fraction() -> None:
    torch.manual_seed(0)
    tok = pydoc_tokenizer()
    base = DocumentDataset(pydoc_docs(), tok, max_len=24)
    items = [{**base[i % len(base)], "score": (i % 10) / 10} for i in range(1000)]
    col = ConditionalCollator(tok, lm="causal", threshold=0.5, untagged_fraction=0.2)
    b = col(items)
    ctrl = b["control"]
    assert (ctrl == -1).float().mean().item() == pytest.approx(0.2, abs=0.04)
    scores = torch.tensor([it["score"] for it in items])
    tagged = ctrl >= 0
    assert ((ctrl == GOOD_ID) == (tagged & (scores >= 0.5))).all()
    assert ((ctrl == BAD_ID) == (tagged & (scores < 0.5))).all()
    assert torch.equal(b["input_ids"][tagged, 1], ctrl[tagged])
    assert (b["labels"][tagged, 1] == IGNORE).all()  # no loss on predicting the control token
    assert (b["input_ids"][:, 0] == CLS_ID).all()
    none = col([{**items[0], "score": None}])
    assert none["control"].item() == -1
    obj = ConditionalObjective(tiny_encoder(tok, causal=True))
    assert torch.isfinite(obj(col(items[:8]))["loss"])
    mb = ConditionalCollator(tok, lm="masked", threshold=0.5, untagged_fraction=0.0)(items[:64])
    assert (mb["labels"][:, 1] == IGNORE).all() and (mb["input_ids"][:, 1] >= GOOD_ID).all()


def test_substitution_collator_and_rts_slm() -> None:
    torch.manual_seed(0)
    tok = pydoc_tokenizer()
    ds = DocumentDataset(pydoc_docs(), tok, max_len=48)
    items = [ds[i % len(ds)] for i in range(128)]
    b = SubstitutionCollator(tok, 0.15)(items)
    orig = CausalCollator()(items)["input_ids"]
    rep = b["replaced"].bool()
    assert (b["input_ids"][rep] != orig[rep]).all() and (b["input_ids"][rep] >= NUM_SPECIAL).all()
    assert torch.equal(b["input_ids"][~rep], orig[~rep])
    ordinary = ~special_mask(orig)
    assert rep.sum().item() / ordinary.sum().item() == pytest.approx(0.15, abs=0.015)
    assert torch.equal(b["labels"][rep], orig[rep]) and (b["labels"][~rep] == IGNORE).all()
    for cls in (RTSObjective, SLMObjective):
        out = cls(tiny_encoder(tok))(b)
        assert torch.isfinite(out["loss"])
