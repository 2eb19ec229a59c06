"""LoRA family on any module: SwitchLoRA output invariance, DyLoRA nested ranks, peft layer selection,
trainable-parameter counts, export round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from text_helpers import one_thread  # noqa: F401
from torch import nn

from sslab.core.export import build_encoder, load_encoder, save_encoder
from sslab.encoders.adapters import (AdaptedEncoder, DyLoRALinear, SwitchLoRALinear, apply_adapter,
                                     count_parameters, resolve_layers, set_rank, switch_all)
from sslab.encoders.text_transformer import TextTransformer


class TinyViTLike(nn.Module):
    """A non-text encoder (patch MLP + blocks) to show the adapters are generic."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Linear(16, 24)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 24)) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x)
        for blk in self.layers:
            h = h + blk(h)
        return h


def _text(depth: int = 4) -> TextTransformer:
    torch.manual_seed(0)
    return TextTransformer(vocab_size=120, dim=32, depth=depth, heads=4, max_len=32).eval()


def test_switchlora_output_identical_before_and_after_a_switch() -> None:
    torch.manual_seed(0)
    layer = SwitchLoRALinear(nn.Linear(20, 12), r=4, alpha=8.0, num_candidates=6)
    x = torch.randn(5, 20)
    with torch.no_grad():  # give the LoRA factors trained-looking values
        layer.lora_A.add_(torch.randn_like(layer.lora_A))
        layer.lora_B.add_(torch.randn_like(layer.lora_B))
    before, W0 = layer(x), layer.base.weight.clone()
    A0, B0 = layer.lora_A.clone(), layer.lora_B.clone()
    assert layer.switch(num=2) == 4
    after = layer(x)
    assert torch.allclose(before, after, atol=1e-5)
    assert not torch.allclose(W0, layer.base.weight)  # the frozen weight absorbed the change
    assert (layer.lora_A != A0).any(dim=1).sum() == 2 and (layer.lora_B != B0).any(dim=0).sum() == 2
    assert not layer.base.weight.requires_grad


def test_switchlora_initial_output_equals_base_and_model_level_switch() -> None:
    torch.manual_seed(0)
    model = TinyViTLike()
    x = torch.randn(3, 16)
    ref = model(x)
    apply_adapter(model, "switchlora", target_modules=r"layers\.\d+\.\d", r=4, layers_pattern="layers")
    assert torch.allclose(model(x), ref, atol=1e-5)
    assert sum(isinstance(m, SwitchLoRALinear) for m in model.modules()) == 6
    out_before = model(x)
    assert switch_all(model, 1) == 12
    assert torch.allclose(model(x), out_before, atol=1e-5)


def test_dylora_every_truncated_rank_runs_after_training() -> None:
    torch.manual_seed(0)
    model = TinyViTLike()
    apply_adapter(model, "dylora", target_modules=["0", "2"], r=6, alpha=6.0, layers_pattern="layers",
                  freeze_rest=True)
    x, y = torch.randn(64, 16), torch.randn(64, 24)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    seen = set()
    first = None
    for _ in range(36):
        seen.add(set_rank(model))
        loss = ((model(x) - y) ** 2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert seen == set(range(1, 7))  # ranks are sampled per step
    model.eval()
    losses = {}
    for r in range(1, 7):
        set_rank(model, r)
        with torch.no_grad():
            losses[r] = ((model(x) - y) ** 2).mean().item()
        layer = next(m for m in model.modules() if isinstance(m, DyLoRALinear))
        h = torch.randn(2, layer.base.in_features)
        manual = h @ (layer.base.weight + (layer.alpha / r) * layer.lora_B[:, :r] @ layer.lora_A[:r]).T + layer.base.bias
        assert torch.allclose(layer(h), manual, atol=1e-5)
    assert all(l < first for l in losses.values())  # every nested rank learned something
    with pytest.raises(ValueError, match="rank must be in"):
        set_rank(model, 7)


def test_peft_lora_layer_selection_first_and_last() -> None:
    enc = _text(depth=4)
    assert resolve_layers(enc, "first:1,last:1", "blocks") == [0, 3]
    a = AdaptedEncoder(enc, {"kind": "lora", "r": 4, "target_modules": ["qkv", "fc1"], "layers": "first:1,last:1"})
    lora_modules = {n.split(".lora_A")[0] for n, _ in a.named_parameters() if "lora_A" in n}
    assert lora_modules == {"base.blocks.0.attn.qkv", "base.blocks.0.mlp.fc1",
                            "base.blocks.3.attn.qkv", "base.blocks.3.mlp.fc1"}
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(_text(), [0, 9], "blocks")
    with pytest.raises(ValueError, match="no nn.Linear matches"):
        apply_adapter(_text(), "lora", target_modules=["nonexistent"])
    with pytest.raises(ValueError, match="unknown adapter kind"):
        apply_adapter(_text(), "ia3")


@pytest.mark.parametrize("kind", ["lora", "dylora", "switchlora"])
def test_trainable_parameter_counts_match_hand_count(kind: str) -> None:
    enc = _text(depth=2)
    full = count_parameters(enc)
    assert full["trainable"] == full["total"]
    lin = {n: m for n, m in enc.named_modules() if isinstance(m, nn.Linear) and n.endswith(("qkv", "proj"))}
    r = 4
    lora = sum(r * (m.in_features + m.out_features) for m in lin.values())
    frozen = sum(m.weight.numel() + m.bias.numel() for m in lin.values())
    a = AdaptedEncoder(enc, {"kind": kind, "r": r, "target_modules": ["qkv", "proj"], "freeze_rest": True})
    c = count_parameters(a)
    assert c["trainable"] == lora
    assert c["total"] == full["total"] + lora
    b = AdaptedEncoder(_text(depth=2), {"kind": kind, "r": r, "target_modules": ["qkv", "proj"]})
    assert count_parameters(b)["trainable"] == full["total"] - frozen + lora


def test_adapted_encoder_steps_export_and_reload(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = {"name": "adapted", "base": {"name": "text_transformer", "vocab_size": 120, "dim": 32, "depth": 2,
                                        "heads": 4, "max_len": 32},
            "adapter": {"kind": "switchlora", "r": 4, "target_modules": ["qkv", "fc2"], "switch_every": 2}}
    enc = build_encoder(spec)
    assert enc.on_step_end(1, 10) is None and enc.on_step_end(2, 10) == {"switched": 8, "moments_reset": 0}
    x = torch.randint(60, 120, (2, 10))
    save_encoder(enc, tmp_path)
    again = load_encoder(tmp_path)
    assert torch.allclose(enc.eval()(x), again(x), atol=1e-6)
    dyl = build_encoder({**spec, "adapter": {"kind": "dylora", "r": 4, "target_modules": ["qkv"]}})
    assert 1 <= dyl.on_step_end(1, 10)["dylora_rank"] <= 4
    dyl.eval()
    assert all(m.rank == 4 for m in dyl.modules() if isinstance(m, DyLoRALinear))


def test_switch_and_rank_choices_depend_on_the_step_not_the_global_rng() -> None:
    """DDP ranks have different global RNG streams; the frozen weights must still switch identically."""
    spec = {"name": "adapted", "base": {"name": "text_transformer", "vocab_size": 120, "dim": 32, "depth": 1,
                                        "heads": 4, "max_len": 32},
            "adapter": {"kind": "switchlora", "r": 4, "target_modules": ["qkv"], "switch_every": 1}}
    torch.manual_seed(0)
    a = build_encoder(spec)
    torch.manual_seed(0)
    b = build_encoder(spec)
    torch.manual_seed(1)
    a.on_step_end(3, 10)
    torch.manual_seed(2)
    b.on_step_end(3, 10)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    d = build_encoder({**spec, "adapter": {"kind": "dylora", "r": 8, "target_modules": ["qkv"]}})
    torch.manual_seed(5)
    r1 = d.on_step_end(7, 10)["dylora_rank"]
    torch.manual_seed(6)
    assert d.on_step_end(7, 10)["dylora_rank"] == r1
