"""SiT corruption statistics and losses; POA centering, gradient routing, size sampling and losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslab.core.export import build_encoder
from sslab.datasets.images import BatchedMultiCrop, load_digits
from sslab.objectives.poa import POA, DINOHead, dino_cross_entropy, koleo_loss, sinkhorn_knopp
from sslab.objectives.sit import SiT, GroupMaskCorruptor

torch.set_num_threads(1)

ENC = dict(name="elastic_vit", img_size=16, patch_size=4, in_chans=1, embed_dim=48, depth=4, num_heads=4,
           mlp_ratio=2.0, global_pool="avg")


def _encoder(**kw):
    torch.manual_seed(0)
    return build_encoder({**ENC, **kw})


SMALL = dict(embed_dim=32, depth=2, num_heads=2)  # head_dim 16: widths 16/32, depths 1/2


def test_corruption_ratio_statistics_over_many_draws():
    torch.manual_seed(0)
    c = GroupMaskCorruptor(unit=4, ratio=(0.5, 0.7), noise_prob=0.5)
    images = torch.rand(400, 1, 28, 28)  # 7x7 grid of 4-px cells
    corrupted, mask = c(images)
    ratio = mask.float().mean(dim=(1, 2, 3))
    assert ratio.min() >= 0.5 and ratio.max() <= 0.7
    assert 0.57 < ratio.mean() < 0.65                       # ~uniform target in [0.5, 0.7]
    assert ratio.std() > 0.03                               # the ratio varies per image
    changed = (corrupted != images).any(dim=1, keepdim=True)
    assert not changed[~mask].any()                         # clean pixels untouched
    assert changed[mask].float().mean() > 0.99              # corrupted pixels replaced
    # both corruption kinds occur: swapped pixels equal the previous image's pixels at that place
    swapped = (corrupted == images.roll(1, 0)) & mask
    frac_swap = swapped.float().sum() / mask.float().sum()
    assert 0.3 < frac_swap < 0.7
    # corruption comes in groups (blocks): most corrupted cells have a corrupted 4-neighbour
    cells = mask[:, 0, ::4, ::4].float()
    nb = torch.zeros_like(cells)
    nb[:, 1:] += cells[:, :-1]; nb[:, :-1] += cells[:, 1:]; nb[:, :, 1:] += cells[:, :, :-1]; nb[:, :, :-1] += cells[:, :, 1:]
    assert ((nb > 0) & (cells > 0)).sum() / cells.sum() > 0.95


def test_corruption_is_seeded_by_torch_and_rejects_bad_input():
    c = GroupMaskCorruptor(unit=4)
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(3); a = c(x)
    torch.manual_seed(3); b = c(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="multiple of the corruption unit"):
        c(torch.rand(2, 1, 18, 18))
    with pytest.raises(ValueError, match="ratio"):
        GroupMaskCorruptor(4, ratio=(0.7, 0.5))


def test_sit_teacher_gets_no_gradients_and_recon_only_on_corrupted_pixels():
    obj = SiT(_encoder(), proj_hidden=64, proj_dim=32)
    views = [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)]
    out = obj({"views": views})
    out["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in obj.teacher.parameters())
    assert obj.encoder.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert obj.decoder.mlp[0].weight.grad.abs().sum() > 0
    # reconstruction loss ignores clean pixels: changing them in the target does not change it
    torch.manual_seed(1)
    corrupted, mask = zip(*(obj.corruptor(v) for v in views))
    batch = {"views": views, "corrupted": list(corrupted), "corrupt_mask": list(mask)}
    r1 = obj(batch)["recon"]
    views2 = [torch.where(m, v, v + 3.0) for v, m in zip(views, mask)]
    r2 = obj({**batch, "views": views2})["recon"]
    assert torch.allclose(r1, r2)


def _digit_batches(n_steps, n_local=0, seed=0, batch=32):
    data = load_digits("train")
    coll = BatchedMultiCrop(16, 1, n_global=2, n_local=n_local, local_size=8, global_scale=(0.5, 1.0))
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        yield coll([(data.images[i], int(data.labels[i])) for i in idx])


def _train(obj, steps, lr, n_local=0):
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=lr)
    logs = []
    for step, batch in enumerate(_digit_batches(steps, n_local), 1):
        out = obj(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        obj.on_step_end(step, steps)
        logs.append({k: float(v.detach() if torch.is_tensor(v) else v) for k, v in out.items()})
    return logs


def test_sit_loss_falls_on_digits():
    torch.manual_seed(0)
    obj = SiT(_encoder(**SMALL), proj_hidden=64, proj_dim=32, momentum=(0.99, 1.0))
    logs = _train(obj, 50, 2e-3)
    first = np.mean([l["recon"] for l in logs[:8]])
    last = np.mean([l["recon"] for l in logs[-8:]])
    assert last < 0.92 * first, (first, last)
    assert np.mean([l["loss"] for l in logs[-8:]]) < np.mean([l["loss"] for l in logs[:8]]) - 0.1


def test_poa_loss_falls_on_digits():
    """DINO's cross-entropy is H(teacher) + KL(teacher || student); early in training the teacher's
    entropy changes with its temperature and EMA, so the part the students control, the KL, is tested
    (and the teacher must not collapse: per-sample outputs stay different from the batch mean)."""
    torch.manual_seed(0)
    obj = POA(_encoder(**SMALL), out_dim=64, head_hidden=64, head_bottleneck=32, teacher_temp=(0.02, 0.02),
              momentum=(0.99, 1.0))
    logs = _train(obj, 60, 5e-4, n_local=2)
    for key in ("kl_teacher_intact", "kl_teacher_elastic", "distill_intact_elastic"):
        first = np.mean([l[key] for l in logs[:8]])
        last = np.mean([l[key] for l in logs[-8:]])
        assert last < 0.75 * first, (key, first, last)
    assert np.mean([l["teacher_kl_to_mean"] for l in logs[-8:]]) > 0.1


def test_dino_centering_update_matches_equation():
    obj = POA(_encoder(), out_dim=16, head_hidden=32, head_bottleneck=8, center_momentum=0.9)
    logits = torch.randn(10, 16)
    obj.center.fill_(0.5)
    obj.update_center(logits)
    assert torch.allclose(obj.center, 0.9 * 0.5 + 0.1 * logits.mean(0, keepdim=True), atol=1e-6)
    # in training, forward updates the center from the teacher's outputs; in eval it does not
    batch = {"views": [torch.randn(4, 1, 16, 16) for _ in range(2)], "n_global": 2}
    before = obj.center.clone()
    obj.eval(); obj(batch)
    assert torch.equal(obj.center, before)
    obj.train(); obj(batch)
    assert not torch.equal(obj.center, before)
    # teacher probabilities are centered and sharpened
    probs = obj._teacher_probs(torch.ones(2, 16) + obj.center, obj.center)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 16))


def test_poa_teacher_gets_no_gradients_and_both_students_train():
    obj = POA(_encoder(), out_dim=32, head_hidden=32, head_bottleneck=16, ibot_weight=1.0, koleo_weight=0.1)
    torch.manual_seed(0)
    out = obj({"views": [torch.randn(6, 1, 16, 16) for _ in range(2)] + [torch.randn(6, 1, 8, 8)],
               "n_global": 2})
    out["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in obj.teacher.parameters())
    assert obj.encoder.mask_token.grad is not None            # iBOT masked the student's patches
    assert obj.patch_head.fc1.weight.grad.abs().sum() > 0
    for key in ("dino_teacher_intact", "dino_teacher_elastic", "distill_intact_elastic", "ibot", "koleo"):
        assert torch.isfinite(torch.as_tensor(out[key]))
    # EMA: after a step the teacher moves toward the student by (1 - momentum)
    t0 = obj.teacher.module["encoder"].model.blocks[0].mlp.fc1.weight.clone()
    with torch.no_grad():
        obj.encoder.model.blocks[0].mlp.fc1.weight.add_(1.0)
    obj.on_step_end(1, 100)
    m = obj.momentum(1, 100)
    expected = t0 + (1 - m) * (obj.encoder.model.blocks[0].mlp.fc1.weight - t0)
    assert torch.allclose(obj.teacher.module["encoder"].model.blocks[0].mlp.fc1.weight, expected, atol=1e-6)


def test_elastic_size_sampling_prefers_small_sizes():
    obj = POA(_encoder(), out_dim=16, head_hidden=16, head_bottleneck=8, widths=[12, 24, 48], depths=[1, 2, 4],
              small_bias=0.5)
    assert (48, 4) not in obj.sizes and len(obj.sizes) == 8
    torch.manual_seed(0)
    draws = [obj.sample_size() for _ in range(4000)]
    freq = {s: draws.count(s) / len(draws) for s in obj.sizes}
    assert freq[(12, 1)] > freq[(24, 2)] > freq[(48, 2)]
    expected = obj.size_probs.tolist()
    for s, p in zip(obj.sizes, expected):
        assert abs(freq[s] - p) < 0.03
    with pytest.raises(TypeError, match="elastic"):
        POA(build_encoder({**ENC, "name": "vit_timm"}))


def test_dino_pieces():
    t = torch.softmax(torch.randn(2, 4, 8), -1)
    s = [torch.randn(4, 8) for _ in range(3)]
    expected = np.mean([-(t[i] * torch.log_softmax(s[j] / 0.1, -1)).sum(-1).mean().item()
                        for i in range(2) for j in range(3) if i != j])
    assert abs(dino_cross_entropy(list(t), s, 0.1).item() - expected) < 1e-5
    torch.manual_seed(0)
    logits = 0.3 * torch.randn(32, 8) + torch.linspace(0, 0.5, 8)  # cosine-range logits, biased prototypes
    q = sinkhorn_knopp(logits, 0.05)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-4)
    usage_sk, usage_softmax = q.sum(0), torch.softmax(logits / 0.05, -1).sum(0)
    assert usage_sk.std() < 0.5 * usage_softmax.std()          # much closer to equal prototype usage
    spread, clumped = torch.randn(64, 16), torch.randn(1, 16) + 0.01 * torch.randn(64, 16)
    assert koleo_loss(spread) < koleo_loss(clumped)
    head = DINOHead(48, 10, 32, 8)
    assert head(torch.randn(3, 24)).shape == (3, 10)  # elastic input width
