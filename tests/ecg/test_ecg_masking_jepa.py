"""Block masks (statistics over many draws), vit1d, JEPA: EMA schedule, gradient routing, loss falls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslab.encoders.vit1d import ViT1D
from sslab.objectives.jepa import JEPA
from sslab.objectives.masking import BlockMasker1D, BlockMasker2D, JEPACollator1D, JEPACollator2D


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread avoids oversubscription on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _runs(mask: torch.Tensor):
    """Lengths of contiguous True runs."""
    m = mask.int().tolist()
    out, cur = [], 0
    for v in m + [0]:
        if v:
            cur += 1
        elif cur:
            out.append(cur)
            cur = 0
    return out


def test_1d_mask_statistics():
    torch.manual_seed(0)
    masker = BlockMasker1D((0.15, 0.25), min_block=10, max_blocks=4)
    n = 50
    ratios, n_blocks = [], []
    for _ in range(2000):
        k = masker.n_context(n)
        ctx, tgt = masker(n, k)
        assert len(ctx) == k and len(ctx) + len(tgt) == n
        assert not set(ctx.tolist()) & set(tgt.tolist())
        is_t = torch.zeros(n, dtype=torch.bool)
        is_t[tgt] = True
        runs = _runs(is_t)
        assert min(runs) >= 10
        ratios.append(k / n)
        n_blocks.append(len(runs))
    assert 0.15 <= min(ratios) and max(ratios) <= 0.25
    assert abs(np.mean(ratios) - 0.2) < 0.005
    assert set(n_blocks) == {1, 2, 3, 4}  # 38-42 target patches: up to 4 blocks of >= 10
    with pytest.raises(ValueError, match="min_block"):
        BlockMasker1D(min_block=10).n_context(12)


def test_1d_collator_shapes_and_determinism():
    col = JEPACollator1D(BlockMasker1D(), patch_size=5)
    batch = [torch.randn(12, 250) for _ in range(4)]
    torch.manual_seed(1)
    a = col(batch)
    torch.manual_seed(1)
    b = col(batch)
    assert a["inputs"].shape == (4, 12, 250)
    assert a["context_idx"].shape[0] == 4 and a["context_idx"].shape[1] + a["target_idx"].shape[1] == 50
    assert torch.equal(a["context_idx"], b["context_idx"]) and torch.equal(a["target_idx"], b["target_idx"])


def test_2d_masks():
    torch.manual_seed(0)
    masker = BlockMasker2D()
    fr = []
    for _ in range(200):
        ctx, tgt = masker(14, 14)
        assert not set(ctx.tolist()) & set(tgt.tolist()) and len(ctx) >= 4
        fr.append(len(tgt) / 196)
    assert 0.3 < np.mean(fr) < 0.75  # 4 blocks of 15-20 % with overlaps
    out = JEPACollator2D(masker, 16)([torch.randn(3, 224, 224) for _ in range(3)])
    assert out["context_idx"].shape[0] == 3 and out["target_idx"].max() < 196


def test_vit1d_sizes_mask_and_errors():
    assert abs(sum(p.numel() for p in ViT1D(size="xs").parameters()) / 1e6 - 3.6) < 0.1
    enc = ViT1D(patch_size=5, dim=32, depth=2, heads=2, num_registers=2).eval()
    x = torch.randn(2, 12, 250)
    assert enc(x).shape == (2, 50, 32)
    keep = torch.tensor([[0, 3, 7], [1, 2, 49]])
    assert enc(x, mask=keep).shape == (2, 3, 32)
    # a kept token only sees kept tokens: changing a dropped patch does not change the output
    x2 = x.clone()
    x2[:, :, 25:30] += 5  # patch 5 is dropped in both rows
    assert torch.allclose(enc(x, mask=keep), enc(x2, mask=keep), atol=1e-6)
    with pytest.raises(ValueError, match="expects \\[batch, 12 leads, samples\\]"):
        enc(torch.randn(2, 8, 250))
    with pytest.raises(ValueError, match="not a multiple of patch_size 5"):
        enc(torch.randn(2, 12, 252))


def _objective(seed=0):
    torch.manual_seed(seed)
    enc = ViT1D(patch_size=5, dim=32, depth=2, heads=2)
    return JEPA(enc, momentum=(0.998, 0.9995))


def test_target_gets_no_gradient_and_ema_schedule():
    obj = _objective()
    col = JEPACollator1D(BlockMasker1D(), 5)
    batch = col([torch.randn(12, 250) for _ in range(4)])
    out = obj(batch)
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in obj.target.parameters())
    assert all(p.grad is not None for p in obj.encoder.parameters())
    assert all(p.grad is not None for p in obj.predictor.parameters())
    assert obj.predictor.dim == 16 and len(obj.predictor.blocks) == 2  # half width, same depth
    assert obj.on_step_end(0, 100)["momentum"] == pytest.approx(0.998)
    assert obj.on_step_end(50, 100)["momentum"] == pytest.approx(0.99875)
    assert obj.on_step_end(100, 100)["momentum"] == pytest.approx(0.9995)
    # EMA update: target <- m target + (1 - m) encoder
    t0 = [p.clone() for p in obj.target.parameters()]
    with torch.no_grad():
        for p in obj.encoder.parameters():
            p.add_(1.0)
    obj.on_step_end(0, 100)
    for a, b, e in zip(t0, obj.target.parameters(), obj.encoder.parameters()):
        torch.testing.assert_close(b, 0.998 * a + 0.002 * e)


def test_jepa_loss_falls_on_synthetic_ecg():
    from sslab.datasets.ecg_synthetic import SyntheticECGConfig, simulate_record
    from sslab.datasets.ecg_wfdb import LeadNorm, random_crop

    torch.manual_seed(0)
    np.random.seed(0)
    cfg = SyntheticECGConfig(n_records=48, noise_range=(0.0, 0.02), wander_range=(0.0, 0.05))
    sigs = [simulate_record(cfg, i)[0] for i in range(48)]
    norm = LeadNorm.fit(sigs)
    sigs = [norm(s) for s in sigs]
    obj = _objective()
    col = JEPACollator1D(BlockMasker1D(), 5)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.99))
    losses = []
    for step in range(60):
        batch = col([torch.from_numpy(random_crop(sigs[i], 250)) for i in np.random.randint(0, 48, 16)])
        loss = obj(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.on_step_end(step + 1, 60)
        losses.append(loss.item())
    print("jepa losses", np.mean(losses[:5]), np.mean(losses[-5:]))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert first == pytest.approx(0.43, abs=0.03)  # seeded start: near the LN-target smooth-L1 level
    assert last < 0.85 * first  # measured: 0.426 -> 0.329


def test_jepa_bad_config():
    enc = ViT1D(patch_size=5, dim=32, depth=1, heads=2)
    with pytest.raises(ValueError, match="loss must be one of"):
        JEPA(enc, loss="huber")
    with pytest.raises(ValueError, match="momentum must be"):
        JEPA(enc, momentum=(0.9995, 0.99))


def test_batch_layer_target_norm_removes_positional_part():
    """With identical samples the target is position-only: batch_layer makes it zero, layer does not."""
    col = JEPACollator1D(BlockMasker1D(), 5)
    torch.manual_seed(0)
    x = torch.randn(12, 250)
    batch = col([x, x, x])
    sums = {}
    for norm in ("layer", "batch_layer"):
        torch.manual_seed(0)
        obj = JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2), target_norm=norm)
        obj.loss_fn = lambda pred, h: h.abs().sum()  # expose the targets
        sums[norm] = float(obj(batch)["loss"])
    assert sums["layer"] > 100 and sums["batch_layer"] < 1e-4 * sums["layer"]
    with pytest.raises(ValueError, match="target_norm must be one of"):
        JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2), target_norm="batch")


def test_target_sample_var_reads_collapse():
    """The logged share of target variance between samples: 0 for identical records, large for different ones."""
    col = JEPACollator1D(BlockMasker1D(), 5)
    torch.manual_seed(0)
    obj = JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2))
    x = torch.randn(12, 250)
    same = float(obj(col([x, x, x]))["target_sample_var"])
    different = float(obj(col([torch.randn(12, 250) for _ in range(3)]))["target_sample_var"])
    assert same < 1e-6 and 0.3 < different <= 1.0 + 1e-6, (same, different)
    with pytest.raises(ValueError, match="export must be one of"):
        JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2), export="ema")


def test_ema_at_forward_updates_before_the_targets_and_resumes():
    """ema_at=forward (original ECG-JEPA): on_step_end only records the step; the next training forward updates."""
    torch.manual_seed(0)
    obj = JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2), ema_at="forward", token_weight_decay=False)
    batch = JEPACollator1D(BlockMasker1D(), 5)([torch.randn(12, 250) for _ in range(2)])
    with torch.no_grad():
        for p in obj.encoder.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in obj.target.parameters()]
    assert obj.on_step_end(50, 100)["momentum"] == pytest.approx(0.99875)
    assert all(torch.equal(a, b) for a, b in zip(t0, obj.target.parameters()))
    obj.eval()
    obj(batch)  # evaluation forwards never move the target
    assert all(torch.equal(a, b) for a, b in zip(t0, obj.target.parameters()))
    obj.train()
    obj(batch)
    for a, b, e in zip(t0, obj.target.parameters(), obj.encoder.parameters()):
        torch.testing.assert_close(b, 0.99875 * a + 0.00125 * e)
    fresh = JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2), ema_at="forward")
    fresh.load_extra_state(obj.extra_state())
    assert (fresh._step, fresh._total) == (50, 100)
    assert obj.no_weight_decay() == ["predictor.mask_token"]  # no registers in this encoder
    with pytest.raises(ValueError, match="ema_at must be one of"):
        JEPA(ViT1D(patch_size=5, dim=32, depth=1, heads=2), ema_at="after")
