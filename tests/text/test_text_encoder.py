"""Text transformer behaviour: causality, prefix LM, padding invariance, ALiBi/GLU, bad input."""
from __future__ import annotations

import pytest
import torch
from text_helpers import one_thread  # noqa: F401

from sslab.encoders.text_transformer import TextTransformer, alibi_slopes


def _enc(**kw) -> TextTransformer:
    torch.manual_seed(0)
    args = dict(vocab_size=100, dim=32, depth=2, heads=4, max_len=64)
    args.update(kw)
    return TextTransformer(**args).eval()


@pytest.mark.parametrize("position,ffn", [("learned", "gelu"), ("alibi", "swiglu"), ("alibi", "geglu")])
def test_causal_outputs_ignore_the_future(position: str, ffn: str) -> None:
    enc = _enc(causal=True, position=position, ffn=ffn)
    x = torch.randint(60, 100, (2, 12))
    y = x.clone()
    y[:, 7:] = torch.randint(60, 100, (2, 5))
    a, b = enc(x), enc(y)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-5)
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)


def test_prefix_lm_is_bidirectional_inside_the_prefix_only() -> None:
    enc = _enc(causal=True)
    x = torch.randint(60, 100, (1, 12))
    y = x.clone()
    y[0, 4] = (x[0, 4] + 1 - 60) % 40 + 60  # change a token inside the prefix (prefix_len=6)
    pl = torch.tensor([6])
    a, b = enc({"input_ids": x, "prefix_len": pl}), enc({"input_ids": y, "prefix_len": pl})
    assert not torch.allclose(a[0, :4], b[0, :4], atol=1e-4)  # earlier prefix positions see position 4
    z = x.clone()
    z[0, 9] = (x[0, 9] + 1 - 60) % 40 + 60  # a target token: invisible to the prefix and earlier targets
    c = enc({"input_ids": z, "prefix_len": pl})
    assert torch.allclose(a[0, :9], c[0, :9], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_change_real_tokens_or_mean_pool(causal: bool) -> None:
    enc = _enc(causal=causal, position="alibi")
    x = torch.randint(60, 100, (1, 9))
    padded = torch.cat([x, torch.zeros(1, 5, dtype=torch.long)], 1)
    att = (padded != 0).long()
    a, b = enc(x), enc({"input_ids": padded, "attention_mask": att})
    assert torch.allclose(a, b[:, :9], atol=1e-5)
    assert torch.allclose(enc.pool(a), enc.pool(b, att), atol=1e-5)


def test_bidirectional_sees_the_future_and_alibi_slopes() -> None:
    enc = _enc()
    x = torch.randint(60, 100, (1, 10))
    y = x.clone()
    y[0, 9] = (x[0, 9] + 1 - 60) % 40 + 60
    assert not torch.allclose(enc(x)[0, 0], enc(y)[0, 0], atol=1e-5)
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert len(alibi_slopes(6)) == 6


def test_bad_inputs_raise_clear_errors() -> None:
    enc = _enc()
    with pytest.raises(ValueError, match="token id out of range"):
        enc(torch.tensor([[1, 150]]))
    with pytest.raises(ValueError, match="exceeds max_len"):
        enc(torch.randint(60, 100, (1, 65)))
    with pytest.raises(TypeError, match="must be integer"):
        enc(torch.rand(1, 4))
    with pytest.raises(ValueError, match="not divisible"):
        TextTransformer(dim=30, heads=4)
    with pytest.raises(ValueError, match="ffn must be"):
        TextTransformer(ffn="relu")
