"""Elastic ViT: full size == plain timm; extracted sub-networks == elastic forward at that size."""
from __future__ import annotations

import pytest
import timm
import torch

from sslab.core.export import build_encoder, load_encoder, save_encoder
from sslab.encoders.elastic_vit import ElasticViT, check_elastic_supported, evenly_spaced_blocks
from sslab.encoders.vit_timm import TimmViT

torch.set_num_threads(1)

SPEC = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=48, depth=4, num_heads=4, mlp_ratio=2.0,
            timm_kwargs={"init_values": 0.5})


def _elastic(**kw) -> ElasticViT:
    torch.manual_seed(0)
    enc = ElasticViT(**{**SPEC, **kw}).eval()
    with torch.no_grad():  # non-trivial LayerNorm / bias values so slicing errors cannot hide
        for name, p in enc.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", ".bias", "gamma")):
                p.add_(0.3 * torch.randn_like(p))
    return enc


def test_full_size_equals_plain_timm_forward():
    enc = _elastic()
    x = torch.randn(3, 1, 16, 16)
    plain = enc.model.forward_features(x)
    assert torch.allclose(enc(x), plain, atol=1e-5)
    assert torch.allclose(enc(x, width=48, depth=4), plain, atol=1e-5)
    assert torch.allclose(enc.pool(enc(x)), enc.model.forward_head(plain, pre_logits=True), atol=1e-5)
    # the non-elastic wrapper's forward is timm's as well
    assert torch.allclose(TimmViT.forward(enc, x), plain, atol=1e-6)


@pytest.mark.parametrize("width,depth", [(12, 1), (24, 2), (36, 3), (48, 2), (24, 4)])
def test_extracted_checkpoint_matches_elastic_forward(width, depth, tmp_path):
    from safetensors.torch import load_file, save_file

    enc = _elastic()
    x = torch.randn(2, 1, 16, 16)
    sub = enc.extract(width, depth)
    cfg = enc.sub_timm_config(width, depth)
    save_file(enc.sub_state_dict(width, depth), str(tmp_path / "model.safetensors"))
    # a fresh plain timm model of that size loads the file strictly and reproduces the elastic forward
    plain = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
    plain.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    assert plain.embed_dim == width and len(plain.blocks) == depth
    assert plain.blocks[0].attn.num_heads == width // 12
    ref = enc(x, width=width, depth=depth)
    assert torch.allclose(plain.forward_features(x), ref, atol=1e-5)
    assert torch.allclose(sub.forward_features(x), ref, atol=1e-5)
    assert torch.allclose(plain.forward_head(plain.forward_features(x), pre_logits=True),
                          enc.pool(ref), atol=1e-5)
    # a sub-network is a different function from the full model
    if (width, depth) != (48, 4):
        assert not torch.allclose(ref[..., :width], enc(x)[..., :width], atol=1e-3)


def test_extract_encoder_roundtrip_through_sslab_export(tmp_path):
    enc = _elastic()
    sub = enc.extract_encoder(24, 2)
    save_encoder(sub, tmp_path)
    back = load_encoder(tmp_path)
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :5] = True
    assert torch.allclose(back(x, mask=mask), enc(x, mask=mask, width=24, depth=2), atol=1e-5)


def test_mask_token_replaces_only_masked_patches():
    enc = _elastic()
    x = torch.randn(1, 1, 16, 16)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 3] = True
    x2 = x.clone()
    x2[..., 0:4, 12:16] += 5.0  # patch 3 (row 0, col 3) changes; it is masked, so nothing changes
    assert torch.allclose(enc(x, mask=mask), enc(x2, mask=mask), atol=1e-6)
    assert not torch.allclose(enc(x), enc(x2), atol=1e-3)
    with pytest.raises(ValueError, match="patch mask"):
        enc(x, mask=torch.zeros(1, 15, dtype=torch.bool))


def test_elastic_gradients_reach_only_the_used_slice():
    enc = _elastic()
    enc.train()
    enc(torch.randn(2, 1, 16, 16), width=24, depth=2).pow(2).mean().backward()
    qkv = enc.model.blocks[0].attn.qkv.weight.grad.view(3, 48, 48)
    assert qkv[:, :24, :24].abs().sum() > 0 and qkv[:, 24:, :].abs().sum() == 0
    used = set(evenly_spaced_blocks(4, 2))
    for i, blk in enumerate(enc.model.blocks):
        has_grad = blk.mlp.fc1.weight.grad is not None and blk.mlp.fc1.weight.grad.abs().sum() > 0
        assert has_grad == (i in used)


def test_other_resolution_and_bad_sizes():
    enc = _elastic()
    assert enc(torch.randn(1, 1, 8, 8), width=24).shape == (1, 5, 24)  # pos-embed resampled
    assert evenly_spaced_blocks(12, 4) == [0, 4, 7, 11]
    with pytest.raises(ValueError, match="multiple of head_dim"):
        enc(torch.randn(1, 1, 16, 16), width=20)
    with pytest.raises(ValueError, match="depth must be"):
        enc(torch.randn(1, 1, 16, 16), depth=5)
    with pytest.raises(ValueError, match=r"expects images \[B, 1"):
        enc(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of patch size"):
        enc(torch.randn(1, 1, 18, 18))


def test_build_from_registry_and_rgb():
    enc = build_encoder({"name": "elastic_vit", "img_size": 32, "patch_size": 8, "in_chans": 3,
                         "embed_dim": 64, "depth": 2, "num_heads": 2})
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 17, 64) and enc.dim == 64
    from timm.layers import SwiGLUPacked

    swiglu = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, depth=1,
                               mlp_layer=SwiGLUPacked)
    with pytest.raises(ValueError, match="GluMlp MLP; only timm Mlp"):
        check_elastic_supported(swiglu)
    check_elastic_supported(enc.model)
    with pytest.raises(ValueError, match="timm.create_model"):
        TimmViT(img_size=30, patch_size=7, embed_dim=50, num_heads=3)

