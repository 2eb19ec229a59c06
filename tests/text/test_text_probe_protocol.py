"""The paired, repeated-CV probe protocol of ``benchmarks/text_probe_seeds.py`` (docs/text.md,
"Does pretraining beat random init?"): pooling ignores padding, both encoders see identical splits,
label fractions subsample each training fold, and the probe encoding keeps the final [SEP]."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from sslab.datasets.text_tokenizer import CLS_ID, SEP_ID, train_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("text_probe_seeds", ROOT / "benchmarks" / "text_probe_seeds.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_pooling_ignores_pad_positions_and_cls_is_first_token() -> None:
    b = _bench()
    torch.manual_seed(0)
    tok = torch.randn(2, 5, 3)
    att = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    garbage = tok.clone()
    garbage[0, 3:] = 1e6  # whatever sits at pad positions must not matter
    mean = b.pool_tokens(garbage, att, "mean")
    assert torch.allclose(mean[0], tok[0, :3].mean(0))
    assert torch.allclose(mean[1], tok[1].mean(0))
    assert torch.equal(b.pool_tokens(garbage, att, "cls"), garbage[:, 0])


def test_embed_all_matches_unbatched_and_emb_pool_is_bag_of_embeddings() -> None:
    from sslab.encoders.text_transformer import TextTransformer

    b = _bench()
    torch.manual_seed(0)
    enc = TextTransformer(vocab_size=80, dim=16, depth=1, heads=2, max_len=32)
    ids = [[CLS_ID, 20, 21, 22, SEP_ID], [CLS_ID, 30, SEP_ID], [CLS_ID, 40, 41, 42, 43, 44, SEP_ID]]
    batched = b.embed_all(enc, ids, batch=3)
    for i, s in enumerate(ids):
        alone = b.embed_all(enc, [s], batch=1)
        for p in b.POOLS:
            np.testing.assert_allclose(batched[p][i], alone[p][0], atol=1e-5)
    np.testing.assert_allclose(batched["emb"][1], enc.tok_emb.weight[[CLS_ID, 30, SEP_ID]].mean(0).detach().numpy(),
                               atol=1e-6)


def test_splits_are_deterministic_stratified_and_cover_each_item_once_per_repeat() -> None:
    b = _bench()
    y = np.array([0] * 30 + [1] * 15 + [2] * 10)
    sp = b.splits(y, folds=5, repeats=3, cv_seed=0)
    assert len(sp) == 15
    again = b.splits(y, folds=5, repeats=3, cv_seed=0)
    assert all(np.array_equal(te, te2) for (_, te), (_, te2) in zip(sp, again))  # same splits for every encoder
    other = b.splits(y, folds=5, repeats=3, cv_seed=1)
    assert not all(np.array_equal(te, te2) for (_, te), (_, te2) in zip(sp, other))
    for r in range(3):
        tested = np.concatenate([te for _, te in sp[5 * r: 5 * r + 5]])
        assert sorted(tested.tolist()) == list(range(len(y)))
    for tr, te in sp:
        assert not set(tr) & set(te)
        assert np.bincount(y[te]).tolist() == [6, 3, 2]  # stratified


def test_cv_scores_label_fraction_and_signal() -> None:
    b = _bench()
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    informative = np.eye(3)[y] * 3 + rng.normal(0, 0.3, (len(y), 3))
    noise = rng.normal(0, 1, (len(y), 3))
    sp = b.splits(y, folds=4, repeats=2, cv_seed=0)
    good = b.cv_scores(informative, y, sp, 1.0, C=1.0)
    bad = b.cv_scores(noise, y, sp, 1.0, C=1.0)
    assert len(good) == len(sp) == 8
    assert min(a for a, _ in good) == 1.0
    assert np.mean([a for a, _ in bad]) < 0.6
    # a label fraction subsamples each training fold per class (>= 1 per class), deterministically per split
    tr = sp[0][0]
    sub = b.fraction_subset(y[tr], 0.1, seed=0)
    assert len(sub) == 9 and np.bincount(y[tr][sub]).tolist() == [3, 3, 3]
    assert np.array_equal(sub, b.fraction_subset(y[tr], 0.1, seed=0))


def test_probe_encoding_keeps_the_final_sep_when_truncating() -> None:
    b = _bench()
    tok = train_tokenizer(["sinusrhythmus normales ekg", "vorhofflimmern linkstyp"] * 20, vocab_size=120)
    long = " ".join(["sinusrhythmus normales ekg"] * 10)
    ids = b.encode_reports(tok, [long, "ekg"], max_len=8)
    assert len(ids[0]) == 8 and ids[0][0] == CLS_ID and ids[0][-1] == SEP_ID
    assert ids[0][1:7] == tok(long)["input_ids"][1:7]  # the head of the text is kept, the tail cut
    # a text that fits is left whole ("ekg" is at most 3 word pieces whichever merges WordPiece training
    # picked: the vocabulary differs between trainings, as tokenizers breaks ties in hash order)
    assert ids[1] == tok("ekg")["input_ids"] and len(ids[1]) <= 5


def test_merge_summaries_pools_seeds_and_refuses_mismatched_files() -> None:
    import pytest

    b = _bench()

    def result(seeds, steps=600):  # type: ignore[no-untyped-def]
        args = {"corpus": "stdlib_docs", "probe": "stdlib_docs", "steps": steps, "set": [], "folds": 5, "repeats": 1,
                "fractions": [1.0], "C": 1.0, "seeds": seeds}
        row = {"method": "mlm15", "pool": "mean", "fraction": 1.0, "random_acc": [0.5] * len(seeds),
               "pre_acc": [0.6] * len(seeds), "d_acc": [0.1 * (s + 1) for s in seeds], "splits_pos": 5 * len(seeds),
               "splits_neg": 0, "splits": 5 * len(seeds)}
        return {"args": args, "summary": [row]}

    rows, fractions = b.merge_summaries([result([0, 1]), result([2])])
    assert fractions == [1.0] and len(rows) == 1
    assert rows[0]["d_acc"] == pytest.approx([0.1, 0.2, 0.3]) and rows[0]["splits"] == 15
    assert "3/3" in b.compact_table(rows, fractions)
    with pytest.raises(SystemExit, match="differ in"):
        b.merge_summaries([result([0]), result([1], steps=2000)])
    with pytest.raises(SystemExit, match="seeds repeat"):
        b.merge_summaries([result([0]), result([0])])
