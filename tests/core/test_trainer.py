import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core_fixtures import RegressionData, flat_params, make_cfg, make_objective
from sslab.core.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint
from sslab.core.config import load_experiment
from sslab.core.trainer import NonFiniteLossError, Trainer, param_groups
from sslab.run import pretrain

HERE = Path(__file__).parent


def test_loss_goes_down_and_artifacts(tmp_path):
    run = tmp_path / "r"
    cfg = make_cfg(run, ["train.steps=60", "train.batch_size=32"])
    obj = make_objective()
    Trainer(obj, RegressionData(), None, cfg, run).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 61))
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.5 * first
    assert {"lr", "wd", "grad_norm", "samples_per_s"} <= rows[-1].keys()
    assert (run / "loss.png").stat().st_size > 1000
    assert latest_checkpoint(run / "checkpoints").name == "step_00000060.pt"


def test_grad_accumulation_equals_large_batch(tmp_path):
    a = make_objective()
    Trainer(a, RegressionData(), None, make_cfg(tmp_path / "a", ["train.steps=5", "train.batch_size=8",
                                                                   "train.grad_accum=4"]), tmp_path / "a").fit()
    b = make_objective()
    Trainer(b, RegressionData(), None, make_cfg(tmp_path / "b", ["train.steps=5", "train.batch_size=32"]),
            tmp_path / "b").fit()
    assert torch.allclose(flat_params(a), flat_params(b), atol=1e-6)
    assert not torch.allclose(flat_params(a), flat_params(make_objective()))


def test_no_weight_decay_on_norms_and_biases():
    groups = param_groups(make_objective(), 0.05, {"head": 2.0})
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["encoder.net.0.weight"]["weight_decay"] == 0.05
    assert by_name["encoder.net.0.bias"]["weight_decay"] == 0.0
    assert by_name["encoder.net.2.weight"]["weight_decay"] == 0.0  # LayerNorm weight
    assert by_name["head.weight"]["lr_scale"] == 2.0 and by_name["encoder.net.0.weight"]["lr_scale"] == 1.0


RESUME_SCRIPT = """
import sys, torch
from sslab.core.config import load_experiment
from sslab.run import pretrain
from sslab.core.export import load_encoder
cfg = load_experiment(None, sys.argv[2:])
run = pretrain(cfg)
enc = load_encoder(run)
torch.save(torch.cat([p.detach().flatten() for p in enc.parameters()]), sys.argv[1])
"""


def _run_pretrain_process(out: Path, overrides):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(out), *overrides], check=True, env=env,
                   capture_output=True, timeout=300)
    return torch.load(out)


def test_exact_resume_in_a_new_process(tmp_path):
    """N steps straight == N/2 steps, checkpoint, new process resumes N/2 (random masks included)."""
    common = ["modality=vector", "encoder.name=mlp", "encoder.in_dim=64", "encoder.dim=16",
              "objective.name=masked_feature", "objective.in_dim=64", "train.steps=12",
              "train.batch_size=32", "train.progress=false", "optim.warmup_steps=3", f"output_dir={tmp_path}"]
    straight = _run_pretrain_process(tmp_path / "a.pt", common + ["name=straight"])
    half = _run_pretrain_process(tmp_path / "b.pt", common + ["name=resumed", "train.stop_after=6"])
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["step_00000006.pt"]
    assert not torch.equal(half, straight)
    resumed = _run_pretrain_process(tmp_path / "c.pt", common + ["name=resumed"])
    assert torch.equal(resumed, straight)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 13))


def _launch(script_args, world):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, str(HERE / "core_ddp_script.py"), *script_args]
    if world > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *cmd[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_single_process(tmp_path, mode):
    """2 ranks x batch 16 (gloo, CPU) == 1 process x batch 32: same samples, same updates."""
    (tmp_path / "single").mkdir()
    (tmp_path / mode).mkdir()
    _launch([str(tmp_path / "single"), "32", "ddp"], world=1)
    _launch([str(tmp_path / mode), "16", mode], world=2)
    a, b = torch.load(tmp_path / "single" / "final.pt"), torch.load(tmp_path / mode / "final.pt")
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert torch.allclose(a["state"][key], b["state"][key], atol=1e-5), key
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert not (tmp_path / mode / "r").exists()


def test_interrupted_checkpoint_write_leaves_no_valid_looking_file(tmp_path, monkeypatch):
    run = tmp_path / "r"
    cfg = make_cfg(run, ["train.steps=4", "train.batch_size=16", "train.ckpt_every=2"])
    Trainer(make_objective(), RegressionData(), None, cfg, run).fit()
    ckpts = run / "checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000002.pt", "step_00000004.pt"]

    import sslab.core.checkpoint as ck

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ck.torch, "save", dying_save)
    cfg2 = make_cfg(run, ["train.steps=6", "train.batch_size=16", "train.ckpt_every=2"])
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_objective(), RegressionData(), None, cfg2, run).fit()
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000002.pt", "step_00000004.pt"]
    assert not [p for p in ckpts.iterdir() if p.suffix == ".tmp"]
    assert load_checkpoint(latest_checkpoint(ckpts))["step"] == 4
    # a truncated file under a final name (written by something else) is reported by name
    bad = ckpts / "step_00000009.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="step_00000009.pt"):
        load_checkpoint(bad)


def test_nan_loss_is_reported_with_step(tmp_path):
    data = RegressionData()
    data.x[3] = float("nan")
    cfg = make_cfg(tmp_path / "r", ["train.steps=20", "train.batch_size=256"])
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 1"):
        Trainer(make_objective(), data, None, cfg, tmp_path / "r").fit()


def test_dataset_smaller_than_batch_is_an_error(tmp_path):
    cfg = make_cfg(tmp_path / "r", ["train.steps=2", "train.batch_size=1000"])
    with pytest.raises(ValueError, match="fewer than one global batch"):
        Trainer(make_objective(), RegressionData(), None, cfg, tmp_path / "r")


def test_length_bucketing_groups_similar_lengths_and_resumes():
    from sslab.core.data import ResumableBatchSampler

    lengths = [int(x) for x in torch.randint(1, 1000, (400,), generator=torch.Generator().manual_seed(0))]
    plain = list(ResumableBatchSampler(400, 8, seed=1))
    bucketed = ResumableBatchSampler(400, 8, seed=1, lengths=lengths, bucket_pool=10)
    batches = list(bucketed)
    assert sorted(i for b in batches for i, _, _ in b) == sorted(i for b in plain for i, _, _ in b)
    spread = lambda bs: sum(max(lengths[i] for i, _, _ in b) - min(lengths[i] for i, _, _ in b) for b in bs)  # noqa: E731
    assert spread(batches) < 0.2 * spread(plain)
    bucketed.set_position(0, 7)
    assert list(bucketed) == batches[7:]
    with pytest.raises(ValueError, match="one length per sample"):
        ResumableBatchSampler(400, 8, lengths=lengths[:10], bucket_pool=4)


def test_unshuffled_order_follows_the_dataset(tmp_path):
    seen = []

    class Recording(RegressionData):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    cfg = make_cfg(tmp_path / "r", ["train.steps=3", "train.batch_size=16", "train.shuffle=false"])
    Trainer(make_objective(), Recording(), None, cfg, tmp_path / "r").fit()
    assert seen == list(range(48))


class _RandomDraws(torch.utils.data.Dataset):
    """Each sample draws from torch, numpy and ``random``: the stream the seeding must reproduce."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        import random

        import numpy as np

        return torch.tensor([float(i), torch.rand(()).item(), float(np.random.rand()), random.random()])


def _noisy_collate(samples):
    return torch.stack(samples) + torch.rand(len(samples), 1)  # the collator draws too (batch seed)


def test_batched_seeding_reproduces_the_per_sample_stream_and_leaves_global_rng_alone():
    """SeededBatches (one RNG save/restore per batch) == the per-sample reference, bit for bit, with 0 or 2
    workers; the caller's global RNG streams are untouched."""
    import random

    import numpy as np
    from torch.utils.data import DataLoader

    from sslab.core.data import (ResumableBatchSampler, SeededBatches, SeededCollate, SeededDataset,
                                 passthrough)

    sampler = ResumableBatchSampler(64, 8, seed=3)
    keys = list(sampler)
    reference = [SeededCollate(_noisy_collate)([SeededDataset(_RandomDraws())[k] for k in b]) for b in keys]
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    batched = SeededBatches(_RandomDraws(), _noisy_collate)
    got = [batched.__getitems__(b) for b in keys]
    assert (torch.rand(()).item(), np.random.rand(), random.random()) == (
        torch.manual_seed(11) and torch.rand(()).item(), np.random.seed(11) or np.random.rand(),
        random.seed(11) or random.random())
    assert len(got) == 8 and all(torch.equal(a, b) for a, b in zip(got, reference))
    assert len({float(b[0, 1]) for b in got}) == 8  # samples do draw different numbers
    for workers in (0, 2):
        loader = DataLoader(batched, batch_sampler=sampler, collate_fn=passthrough, num_workers=workers)
        assert all(torch.equal(a, b) for a, b in zip(loader, reference)), workers


def _nan_in_batch(k, batch=16):
    """Unshuffled data whose k-th batch (1-based) holds a NaN: the loss of step k is NaN."""
    data = RegressionData()
    data.x[(k - 1) * batch + 1, 0] = float("nan")
    return data


def test_nan_between_logging_steps_stops_at_the_next_check_and_is_never_checkpointed(tmp_path):
    run = tmp_path / "r"
    cfg = make_cfg(run, ["train.steps=20", "train.batch_size=16", "train.shuffle=false", "train.log_every=5",
                         "train.ckpt_every=2"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss in steps 3-4 .*checkpoint, if any, is from step 2"):
        Trainer(make_objective(), _nan_in_batch(3), None, cfg, run).fit()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_00000002.pt"]
    state = load_checkpoint(run / "checkpoints" / "step_00000002.pt")
    assert all(torch.isfinite(v).all() for v in state["objective"].values())
    # a checkpoint requested directly (e.g. by an interrupt handler) is refused too
    trainer = Trainer(make_objective(), _nan_in_batch(2), None,
                      make_cfg(tmp_path / "q", ["train.steps=20", "train.batch_size=16", "train.shuffle=false",
                                                "train.log_every=10"]), tmp_path / "q")
    batches = trainer._batches()
    for _ in range(3):
        trainer.train_step(batches)
    assert not torch.isfinite(flat_params(trainer.objective)).all()
    with pytest.raises(NonFiniteLossError, match="in steps 1-3"):
        trainer.save()
    assert not list_checkpoints(tmp_path / "q" / "checkpoints")


def test_no_host_reads_outside_logging_steps(tmp_path, monkeypatch):
    """Between logging/checkpoint steps nothing is read off the device (on a GPU each read is a sync):
    train_step returns only lr/wd/samples; on a logging step the scalars arrive as floats in one read."""
    cfg = make_cfg(tmp_path / "r", ["train.steps=12", "train.batch_size=16", "train.log_every=4",
                                    "optim.clip_grad=1.0"])
    trainer = Trainer(make_objective(), RegressionData(), None, cfg, tmp_path / "r")
    loader = trainer._batches()
    batches = iter([next(loader) for _ in range(8)])  # the sampler's CPU-side reads are not train_step's
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original, _n=name: reads.append(_n) or _f(self, *a))
    for step in range(1, 9):
        reads.clear()
        values = trainer.train_step(batches)
        if step % 4:
            assert reads == [] and set(values) == {"lr", "wd", "samples"}, (step, reads)
        else:
            assert reads == ["__bool__", "tolist"], (step, reads)  # the finite check + one batched copy
            assert {"loss", "grad_norm"} <= set(values) and all(type(v) is float for v in values.values())


def test_vectorised_sample_seeds_equal_mix_seed():
    import numpy as np

    from sslab.core.data import mix_seed, mix_seeds

    positions = np.array([0, 1, 7, 4095, 10**7, 2**40])
    for seed in (0, 3, -5, 2**63 - 1):
        assert mix_seeds(seed, 2, positions, 2).tolist() == [mix_seed(seed, 2, int(p), 2) for p in positions]
