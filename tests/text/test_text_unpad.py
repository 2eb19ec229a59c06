"""MosaicBERT unpadded batches: the packed path computes the padded path's function on real tokens
(outputs and gradients), with ALiBi, GLU FFN, prefix LM and LoRA adapters; pad positions are zeros;
the token-wise layers really run on the real tokens only."""
from __future__ import annotations

from typing import Dict

import pytest
import torch
from text_helpers import one_thread  # noqa: F401

from sslab.core.export import build_encoder
from sslab.encoders.text_transformer import TextTransformer, Unpadded

LENGTHS = [1, 9, 17, 4, 12]  # one length-1 sequence, a batch padded to 17 (+3 trailing pad columns)


def _pair(**kw):  # type: ignore[no-untyped-def]
    args = dict(vocab_size=100, dim=32, depth=2, heads=4, max_len=64, position="alibi", ffn="swiglu")
    args.update(kw)
    torch.manual_seed(0)
    padded = TextTransformer(**args)
    unpadded = TextTransformer(unpad=True, **args)
    unpadded.load_state_dict(padded.state_dict())
    return padded, unpadded


def _batch(L: int = 20, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(LENGTHS), L, dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = torch.randint(5, 100, (n,), generator=g)
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _grads(model: torch.nn.Module, out: torch.Tensor, real: torch.Tensor,
           w: torch.Tensor) -> Dict[str, torch.Tensor]:
    loss = (out[real] * w).sum()  # a loss on real positions only, as every objective uses
    return dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))


@pytest.mark.parametrize("kw", [dict(position="alibi", ffn="geglu"), dict(position="alibi", ffn="swiglu"),
                                dict(position="learned", ffn="gelu"),
                                dict(position="alibi", ffn="geglu", causal=True)])
def test_unpadded_equals_padded_on_real_tokens_outputs_and_gradients(kw) -> None:  # type: ignore[no-untyped-def]
    padded, unpadded = _pair(**kw)
    batch = _batch()
    if kw.get("causal"):
        batch["prefix_len"] = torch.tensor([1, 3, 9, 0, 5])  # prefix LM bias on the packed path too
    real = batch["attention_mask"].bool()
    a, b = padded(batch), unpadded(batch)
    assert b.shape == a.shape
    torch.testing.assert_close(b[real], a[real], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(b[~real]) == 0  # pad positions are zeros on the unpadded path
    assert a[~real].abs().sum() > 0  # ...whereas the padded path leaves values there
    w = torch.randn(int(real.sum()), a.shape[-1], generator=torch.Generator().manual_seed(1))
    ga, gb = _grads(padded, a, real, w), _grads(unpadded, b, real, w)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], atol=1e-5, rtol=1e-4, msg=name)
    assert ga["blocks.0.mlp.fc1.weight"].abs().sum() > 0


def test_unpadded_matches_single_sequences_and_inputs_embeds() -> None:
    """Each packed sequence gives what the sequence alone gives (no padding anywhere); inputs_embeds
    (GDES's entry point) goes through the same packing."""
    padded, unpadded = _pair(position="alibi", ffn="geglu")
    padded.eval(), unpadded.eval()
    batch = _batch()
    out = unpadded(batch)
    for i, n in enumerate(LENGTHS):
        alone = padded(batch["input_ids"][i: i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0], atol=1e-5, rtol=1e-5)
    emb = unpadded.tok_emb(batch["input_ids"])
    via_embeds = unpadded({"inputs_embeds": emb, "attention_mask": batch["attention_mask"]})
    torch.testing.assert_close(via_embeds, out, atol=1e-6, rtol=1e-6)
    full = torch.randint(5, 100, (2, 6))  # no padding at all: identical to the padded path
    torch.testing.assert_close(unpadded(full), padded(full), atol=1e-5, rtol=1e-5)


def test_token_wise_layers_see_only_real_tokens() -> None:
    """The FFN and QKV projections receive a packed [T, D] tensor, T = number of real tokens."""
    _, unpadded = _pair()
    batch = _batch()
    seen = {}
    hooks = [unpadded.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.__setitem__("fc1", i[0].shape)),
             unpadded.blocks[1].attn.qkv.register_forward_hook(lambda m, i, o: seen.__setitem__("qkv", i[0].shape))]
    unpadded(batch)
    for h in hooks:
        h.remove()
    assert seen == {"fc1": (sum(LENGTHS), 32), "qkv": (sum(LENGTHS), 32)}


def test_unpad_helpers_round_trip_and_crop_trailing_padding() -> None:
    att = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    up = Unpadded.from_mask(att)
    assert up.seqlen == 3 and up.indices.tolist() == [0, 1, 3, 4, 5, 6]
    x = torch.arange(15.0).view(3, 5, 1)
    packed = up.unpad(x)
    assert packed.squeeze(1).tolist() == [0.0, 1.0, 5.0, 6.0, 7.0, 10.0]
    back = up.pad(packed, seqlen=5)
    assert back.shape == (3, 5, 1)
    assert torch.equal(back, x * att[..., None])


def test_unpad_option_through_the_registry_and_lora_adapters() -> None:
    """`encoder: {unpad: true}` in YAML; adapters wrap the packed Linear layers unchanged."""
    base = {"name": "text_transformer", "vocab_size": 100, "dim": 32, "depth": 2, "heads": 4, "max_len": 64,
            "position": "alibi", "ffn": "geglu"}
    torch.manual_seed(0)
    ref = build_encoder({"name": "adapted", "base": base, "adapter": {"kind": "lora", "r": 4,
                                                                      "target_modules": ["qkv", "fc1"]}})
    torch.manual_seed(0)
    enc = build_encoder({"name": "adapted", "base": {**base, "unpad": True},
                         "adapter": {"kind": "lora", "r": 4, "target_modules": ["qkv", "fc1"]}})
    assert enc.base.unpad and not ref.base.unpad
    with torch.no_grad():  # non-zero LoRA B so the adapters change the output
        for (n, p), (_, q) in zip(ref.named_parameters(), enc.named_parameters()):
            if "lora_B" in n:
                p.normal_(0, 0.1)
                q.copy_(p)
    batch = _batch()
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(enc(batch)[real], ref(batch)[real], atol=1e-5, rtol=1e-5)


def test_bad_attention_mask_shape_is_an_error() -> None:
    _, unpadded = _pair()
    with pytest.raises(ValueError, match="attention_mask has shape"):
        unpadded({"input_ids": torch.randint(5, 100, (2, 6)), "attention_mask": torch.ones(2, 5)})
