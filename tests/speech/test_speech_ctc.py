"""CTC evaluation (sslab.eval.ctc): vocabulary, greedy decoding, CER/WER, the frozen probe, fine-tuning routing."""
from __future__ import annotations

import pytest
import torch

from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.eval.ctc import (BLANK, CharVocab, CTCModel, ctc_feasible, error_rates, finetune_ctc, floor_frames,
                            front_features, greedy_decode, train_ctc_probe, trivial_references)


def test_vocabulary_from_normalised_training_transcripts() -> None:
    vocab = CharVocab.from_texts(["Řekni, že ne!", "ANO"])
    assert vocab.symbols == [BLANK, " ", "a", "e", "i", "k", "n", "o", "ř", "ž"]  # lower-cased, no punctuation
    assert len(vocab) == 10
    ids = vocab.encode("že ano")
    assert vocab.decode(ids) == "že ano" and 0 not in ids
    with pytest.raises(KeyError, match=r"\['x'\] not in the training transcripts"):
        vocab.encode("xe")


def test_greedy_decoding_merges_repeats_and_drops_blanks() -> None:
    vocab = CharVocab("ab")  # blank=0, a=1, b=2
    path = [1, 1, 0, 1, 2, 2, 0, 0, 2, 1]  # a a _ a b b _ _ b a -> merge: a _ a b _ b a -> "aabba"
    lp = torch.full((1, len(path) + 2, 3), -10.0)
    lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    lp[0, len(path):, 2] = 0.0  # frames past the length must be ignored
    (seq,) = greedy_decode(lp, torch.tensor([len(path)]))
    assert vocab.decode(seq) == "aabba"
    assert ctc_feasible(3, [1, 2, 1]) and ctc_feasible(3, [1, 1]) and not ctc_feasible(2, [1, 1])


def test_cer_and_wer_on_a_known_case() -> None:
    # ref "ano pane" (8 chars, 2 words); hyp "ano pan" = 1 deletion; hyp "nao pane" = 2 substitutions
    r = error_rates(["ano pan", "nao pane"], ["ano pane", "ano pane"])
    assert r["char_errors"] == 3 and r["ref_chars"] == 16
    assert r["cer"] == pytest.approx(3 / 16) and r["wer"] == pytest.approx(2 / 4)
    assert error_rates(["", "x"], ["ab", "ab"])["cer"] == pytest.approx(4 / 4)
    assert error_rates(["ab cd ef"], ["ab"])["wer"] == pytest.approx(2.0)  # insertions count
    # "Ano, pane!" -> "ano pane" (8 chars): spaces-only hypothesis " " = 7 deletions; "e e" = 6 errors
    assert trivial_references(["Ano, pane!"]) == pytest.approx({"empty": 1.0, "spaces": 7 / 8, "e_per_word": 6 / 8})


def _synthetic(n: int, seed: int) -> tuple:
    """Frame features that encode characters: 3 frames per character, one silent frame between
    characters; feature = a fixed random vector per character (silence: zeros) + noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(4, 8, generator=torch.Generator().manual_seed(99)) * 2
    alphabet = "abc "
    feats, texts = [], []
    for _ in range(n):
        chars = [alphabet[int(i)] for i in torch.randint(0, 3, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g)]
        frames = []
        for ch in chars:
            frames += [protos[alphabet.index(ch)]] * 3 + [torch.zeros(8)]
        x = torch.stack(frames) + 0.3 * torch.randn(len(frames), 8, generator=g)
        feats.append(x)
        texts.append("".join(chars))
    return feats, texts


def test_ctc_probe_learns_a_tiny_synthetic_task() -> None:
    tr_x, tr_t = _synthetic(60, 0)
    te_x, te_t = _synthetic(20, 1)
    vocab = CharVocab.from_texts(tr_t)
    untrained = train_ctc_probe(tr_x, tr_t, te_x, te_t, vocab, epochs=1, lr=1e-6, seed=0)
    trained, head = train_ctc_probe(tr_x, tr_t, te_x, te_t, vocab, epochs=15, lr=3e-2, seed=0, return_head=True)
    assert untrained["cer"] > 0.5
    # the returned head maps raw features (standardisation folded in): same decoding as the probe
    hyps = [vocab.decode(greedy_decode(head(x)[None])[0]) for x in te_x]
    assert error_rates(hyps, te_t)["cer"] == pytest.approx(trained["cer"])
    assert trained["cer"] < 0.1, trained
    assert trained["train_loss"] < trained["train_loss_first"]
    assert trained["n_train"] == 60 and trained["n_dropped_short"] == 0


def test_ctc_probe_drops_clips_too_short_for_their_text_and_counts_them() -> None:
    tr_x, tr_t = _synthetic(10, 0)
    tr_x[0] = tr_x[0][:1]  # one frame for >= 2 characters: no CTC path
    res = train_ctc_probe(tr_x, tr_t, tr_x[1:3], tr_t[1:3], CharVocab.from_texts(tr_t), epochs=1)
    assert res["n_dropped_short"] == 1 and res["n_train"] == 9


def _encoder() -> Wav2Vec2Encoder:
    torch.manual_seed(0)
    return Wav2Vec2Encoder(config=tiny_config())


def test_finetuning_routes_gradients_only_where_asked() -> None:
    waves = {"input_values": torch.randn(2, 8000), "attention_mask": torch.ones(2, 8000, dtype=torch.long)}
    for freeze in (True, False):
        enc = _encoder()
        model = CTCModel(enc, vocab_size=5, freeze_encoder=freeze)
        log_probs, lengths = model(waves)
        targets = torch.tensor([1, 2, 3, 1, 2])
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, lengths, torch.tensor([3, 2]))
        loss.backward()
        assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
        front = {id(p) for p in enc.front_parameters()}
        assert all(p.grad is None for p in enc.front_parameters())  # conv feature encoder: always frozen
        transformer = [p for p in enc.model.wav2vec2.encoder.parameters()]
        if freeze:
            assert all(p.grad is None for p in enc.parameters())
        else:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in transformer)
            assert all(p.grad is None for p in enc.parameters() if id(p) in front)


def test_finetune_ctc_updates_the_encoder_only_when_unfrozen() -> None:
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(int(n), generator=g) for n in (6000, 7000, 8000, 6500)]
    texts = ["ab", "ba", "abb", "a b"]
    vocab = CharVocab.from_texts(texts)
    for freeze in (True, False):
        enc = _encoder()
        before = {k: v.clone() for k, v in enc.state_dict().items()}
        fronts = front_features(enc, waves, batch_size=3)
        assert [f.shape[0] for f in fronts] == [int(n) for n in enc.frame_lengths(torch.tensor([6000, 7000, 8000, 6500]))]
        res = finetune_ctc(enc, fronts, texts, fronts[:2], texts[:2], vocab, freeze_encoder=freeze, epochs=2,
                           lr=1e-2, batch_size=2, mask_time_prob=0.0)
        after = enc.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert not any(k.startswith("model.wav2vec2.feature_extractor") for k in changed)
        if freeze:
            assert changed == set() and res["trainable_params"] == 64 * len(vocab) + len(vocab)  # the head only
        else:
            assert any(k.startswith("model.wav2vec2.encoder.layers") for k in changed)
        assert 0.0 <= res["cer"]


def test_floor_frames_run_at_the_encoder_frame_rate() -> None:
    wave = torch.randn(16000)
    n = int(_encoder().frame_lengths(torch.tensor([16000]))[0])
    for kind, dim in (("mfcc", 39), ("logmel", 40)):
        f = floor_frames(wave, kind)
        assert f.shape[1] == dim and abs(f.shape[0] - n) <= 1 and torch.isfinite(f).all()
    with pytest.raises(ValueError, match="mfcc"):
        floor_frames(wave, "pitch")
