"""wav2vec 2.0 objective: mask statistics, distractors, Gumbel schedule, loss vs HF reference, gradients,
padding, HF round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
from sslab.objectives.wav2vec2 import (Wav2Vec2Objective, compute_span_mask, conv_output_lengths,
                                       gumbel_temperature, sample_negatives)

torch.set_num_threads(1)


def _expected_mask_fraction(L: int, p: float = 0.65, span: int = 10) -> float:
    """Exact expectation for HF's sampler: n = floor(p*L/span + U) starts without replacement
    among N = L - span + 1 positions; frame t is covered by k_t possible starts."""
    N = L - span + 1
    x = p * L / span
    lo = math.floor(x)
    total = 0.0
    for n, w in ((lo, 1 - (x - lo)), (lo + 1, x - lo)):
        n = min(n, N)
        cover = 0.0
        for t in range(L):
            k = min(t, N - 1) - max(0, t - span + 1) + 1
            miss = math.comb(N - k, n) / math.comb(N, n) if N - k >= n else 0.0
            cover += 1 - miss
        total += w * cover / L
    return total


def test_mask_fraction_matches_expectation_for_p065_span10():
    np.random.seed(0)
    L = 400
    fracs = [compute_span_mask([L] * 16, L, 0.65, 10, min_masks=2).float().mean().item() for _ in range(60)]
    expected = _expected_mask_fraction(L)
    assert 0.47 < expected < 0.51  # "about 49% of all time steps are masked" (wav2vec 2.0, sec. 4.2)
    assert abs(np.mean(fracs) - expected) < 0.01


def test_mask_spans_are_at_least_span_long_and_avoid_padding():
    np.random.seed(1)
    lengths = [200, 120, 60]
    mask = compute_span_mask(lengths, 200, 0.65, 10)
    for b, n in enumerate(lengths):
        row = mask[b].numpy().astype(int)
        assert row[n:].sum() == 0
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row, 0])))[::2]  # lengths of masked runs
        assert len(runs) > 0 and runs.min() >= 10
    with pytest.raises(ValueError, match="utterance 1 of the batch has 8 frames"):
        compute_span_mask([50, 8], 50)


def test_negatives_never_include_the_positive_and_stay_in_utterance():
    torch.manual_seed(0)
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[0, 5:25] = True
    mask[1, 0:3] = True
    mask[2, [7, 40]] = True
    neg = sample_negatives(mask, 100)
    for b in range(3):
        masked = set(mask[b].nonzero().squeeze(-1).tolist())
        for t in range(50):
            if t in masked:
                drawn = set(neg[b, t].tolist())
                assert t not in drawn and drawn <= masked
            else:
                assert (neg[b, t] == -1).all()
    assert set(neg[2, 7].tolist()) == {40}  # only one other masked frame
    # uniform over the other masked frames
    counts = np.bincount(neg[0, 5].numpy(), minlength=50)[5:25]
    big = sample_negatives(mask[:1], 5000)[0, 5]
    freq = np.bincount(big.numpy(), minlength=50)[6:25] / 5000
    assert counts[0] == 0 and np.abs(freq - 1 / 19).max() < 0.02
    with pytest.raises(ValueError, match="utterance 0 has 1 masked frame"):
        one = torch.zeros(1, 10, dtype=torch.bool)
        one[0, 3] = True
        sample_negatives(one, 5)


def test_gumbel_schedules():
    assert gumbel_temperature(0, 100) == pytest.approx(2.0)
    assert gumbel_temperature(50, 100) == pytest.approx(1.0)  # geometric midpoint of 2.0 and 0.5
    assert gumbel_temperature(100, 100) == pytest.approx(0.5)
    assert gumbel_temperature(500, 100) == pytest.approx(0.5)
    lin = [gumbel_temperature(s, 10, schedule="linear") for s in range(11)]
    assert lin[5] == pytest.approx(1.25) and all(a > b for a, b in zip(lin, lin[1:]))
    assert gumbel_temperature(5, 10, schedule="cosine") == pytest.approx(1.25)
    assert gumbel_temperature(1000, 10, schedule="fairseq") == pytest.approx(2.0 * 0.999995 ** 1000)
    assert gumbel_temperature(10**7, 10, schedule="fairseq") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown gumbel schedule"):
        gumbel_temperature(1, 2, schedule="step")


def _tiny(**kw) -> Wav2Vec2Encoder:
    torch.manual_seed(0)
    return Wav2Vec2Encoder(config=tiny_config(**kw))


def _batch(B: int = 2, T: int = 16000, lengths=None):
    torch.manual_seed(1)
    x = torch.randn(B, T)
    am = torch.ones(B, T, dtype=torch.long)
    for b, n in enumerate(lengths or []):
        x[b, n:] = 0
        am[b, n:] = 0
    return {"input_values": x, "attention_mask": am}


def test_gumbel_annealing_through_on_step_end_drives_quantizer_and_state():
    obj = Wav2Vec2Objective(_tiny(), num_negatives=10)
    assert obj.on_step_end(5, 10)["gumbel_temperature"] == pytest.approx(1.0)
    np.random.seed(0)
    obj(_batch())
    assert obj.encoder.model.quantizer.temperature == pytest.approx(1.0)
    state = obj.state_dict()
    fresh = Wav2Vec2Objective(_tiny(), num_negatives=10)
    fresh.load_state_dict(state)
    assert float(fresh.gumbel_temperature) == pytest.approx(1.0)


def test_loss_matches_hf_reference_on_fixed_masks():
    """Our loss == HF Wav2Vec2ForPreTraining's (sum-reduced) loss / #masked, eval-mode quantizer."""
    enc = _tiny()
    obj = Wav2Vec2Objective(enc, num_negatives=20).eval()
    batch = _batch()
    N = int(conv_output_lengths(torch.tensor([16000]), enc.config.conv_kernel, enc.config.conv_stride)[0])
    np.random.seed(0)
    torch.manual_seed(0)
    mask = compute_span_mask([N, N], N)
    neg = sample_negatives(mask, 20)
    with torch.no_grad():
        ours = obj({**batch, "mask_time_indices": mask, "negative_indices": neg})
        hf_neg = neg.clamp(min=0) + torch.arange(2)[:, None, None] * N
        ref = enc.model(batch["input_values"], mask_time_indices=mask, sampled_negative_indices=hf_neg)
    n = int(mask.sum())
    assert float(ours["contrastive_loss"]) == pytest.approx(float(ref.contrastive_loss) / n, rel=1e-4)
    assert float(ours["diversity_loss"]) == pytest.approx(float(ref.diversity_loss) / n, rel=1e-4)
    assert float(ours["prob_perplexity"]) == pytest.approx(float(ref.codevector_perplexity), rel=1e-4)
    assert float(ours["loss"]) == pytest.approx(float(ref.loss) / n, rel=1e-4)


def test_gradient_routing_and_frozen_feature_encoder():
    obj = Wav2Vec2Objective(_tiny(), num_negatives=10, freeze_feature_encoder=True, feature_penalty_weight=1.0)
    np.random.seed(0)
    out = obj(_batch())
    out["loss"].backward()
    named = dict(obj.encoder.model.named_parameters())
    conv = [n for n in named if n.startswith("wav2vec2.feature_extractor.")]
    assert conv and all(not named[n].requires_grad and named[n].grad is None for n in conv)
    for n in ("wav2vec2.masked_spec_embed", "quantizer.codevectors", "quantizer.weight_proj.weight",
              "project_hid.weight", "project_q.weight", "wav2vec2.feature_projection.projection.weight"):
        assert named[n].grad is not None and named[n].grad.abs().sum() > 0, n
    assert "feature_penalty" in out and float(out["mask_fraction"]) > 0.3


def test_padding_does_not_change_embeddings_or_mask_padded_frames():
    enc = _tiny().eval()
    x = torch.randn(1, 12000)
    with torch.no_grad():
        alone = enc.embed({"input_values": x, "attention_mask": torch.ones(1, 12000, dtype=torch.long)})
        padded = torch.zeros(2, 20000)
        padded[0, :12000] = x[0]
        padded[1] = torch.randn(20000)
        am = torch.zeros(2, 20000, dtype=torch.long)
        am[0, :12000] = 1
        am[1] = 1
        both = enc.embed({"input_values": padded, "attention_mask": am})
    torch.testing.assert_close(both[0], alone[0], atol=1e-4, rtol=1e-4)
    obj = Wav2Vec2Objective(enc, num_negatives=5)
    bad = torch.zeros(2, int(enc.frame_lengths(torch.tensor([20000]))[0]), dtype=torch.bool)
    bad[0, -12:] = True
    bad[1, :12] = True
    with pytest.raises(ValueError, match="padded frames"):
        obj({"input_values": padded, "attention_mask": am, "mask_time_indices": bad})


def test_save_pretrained_round_trip_loads_in_ctc(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    enc = _tiny()
    enc.save_pretrained(tmp_path / "hf")
    ctc = Wav2Vec2ForCTC.from_pretrained(str(tmp_path / "hf"))
    ours = enc.model.wav2vec2.state_dict()
    theirs = ctc.wav2vec2.state_dict()
    assert set(ours) <= set(theirs)
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k
    fe = Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path / "hf"))
    assert fe.sampling_rate == 16000 and fe.do_normalize
    again = Wav2Vec2Encoder(pretrained=str(tmp_path / "hf"))
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    with pytest.raises(FileNotFoundError, match="not a local HF model folder"):
        Wav2Vec2Encoder(pretrained=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="exactly one"):
        Wav2Vec2Encoder()


def test_embedding_layers_and_frame_level():
    enc = _tiny().eval()
    batch = _batch(B=2, T=16000, lengths=[16000, 8000])
    with torch.no_grad():
        last = enc.tokens(batch)
        first = enc.tokens(batch, layer=1)
        frame = enc.embed(batch, layer=1, level="frame")
    assert last.shape == first.shape == (2, 49, 64) and not torch.allclose(last, first)
    n_real = int(enc.frame_lengths(torch.tensor(8000)))
    torch.testing.assert_close(frame[1], first[1, (n_real - 1) // 2])
    with pytest.raises(ValueError, match="layer must be in"):
        enc.tokens(batch, layer=7)
    with pytest.raises(ValueError, match="expected waveforms"):
        enc(torch.zeros(2, 1, 16000))
