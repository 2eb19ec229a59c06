import pytest
import torch
from torch import nn

from core_fixtures import RegressionData, make_cfg, make_objective
from sslab.core.ema import EMATeacher, momentum_schedule
from sslab.core.schedules import cosine, warmup_cosine
from sslab.core.trainer import Trainer


def test_warmup_cosine_values():
    assert warmup_cosine(0, 100, 10, 1.0, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert cosine(50, 100, 0.04, 0.4) == pytest.approx(0.22)


def test_trainer_applies_lr_and_weight_decay_schedules(tmp_path):
    cfg = make_cfg(tmp_path / "r", ["train.steps=10", "train.batch_size=16", "optim.lr=0.1", "optim.min_lr=0.0",
                                    "optim.warmup_steps=0", "optim.weight_decay=0.04",
                                    "optim.weight_decay_end=0.4"])
    seen = []
    hook = lambda step, total, tr: seen.append([(g["lr"], g["weight_decay"]) for g in tr.optimizer.param_groups])  # noqa: E731
    Trainer(make_objective(), RegressionData(), None, cfg, tmp_path / "r", hooks=[hook]).fit()
    lr5 = {lr for lr, _ in seen[5]}  # the 6th step ran with the LR of step index 5
    assert len(lr5) == 1 and lr5.pop() == pytest.approx(cosine(5, 10, 0.1, 0.0))
    wds = sorted({wd for _, wd in seen[5]})
    assert wds == [0.0, pytest.approx(cosine(5, 10, 0.04, 0.4))]  # norms/biases never decay


def test_ema_teacher_update_and_no_grad():
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = teacher.module.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    teacher.update(student, momentum=0.9)
    assert torch.allclose(teacher.module.weight, 0.9 * before + 0.1 * student.weight)
    out = teacher(torch.randn(4, 3))
    assert not out.requires_grad


def test_momentum_schedule():
    m = momentum_schedule(0.998, 0.9995)
    assert m(0, 100) == pytest.approx(0.998) and m(100, 100) == pytest.approx(0.9995)
    assert m(50, 100) == pytest.approx((0.998 + 0.9995) / 2)
    with pytest.raises(ValueError, match="linear"):
        momentum_schedule(0.9, 0.99, kind="exp")


def test_bf16_autocast_runs_on_cpu_when_asked(tmp_path):
    cfg = make_cfg(tmp_path / "r", ["train.steps=3", "train.batch_size=16", "train.precision=bf16"])
    metrics = Trainer(make_objective(), RegressionData(), None, cfg, tmp_path / "r").fit()
    assert metrics["loss"] > 0
    with pytest.raises(ValueError, match="train.precision: must be auto, bf16 or fp32"):
        Trainer(make_objective(), RegressionData(), None,
                make_cfg(tmp_path / "q", ["train.precision=fp8"]), tmp_path / "q")


def test_tensorboard_event_file_is_written(tmp_path):
    cfg = make_cfg(tmp_path / "r", ["train.steps=3", "train.batch_size=16", "train.tensorboard=true"])
    Trainer(make_objective(), RegressionData(), None, cfg, tmp_path / "r").fit()
    events = list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_ema_foreach_update_is_bitwise_the_per_tensor_lerp():
    """The foreach update (few kernels) gives exactly the per-parameter ``lerp_`` loop; buffers are copied."""
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Linear(7, 3))
    teacher, reference = EMATeacher(student), EMATeacher(student)
    for _ in range(3):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        student.train()(torch.randn(8, 5))  # moves the BatchNorm running stats (buffers)
        teacher.update(student, momentum=0.7)
        with torch.no_grad():
            for t, s in zip(reference.module.parameters(), student.parameters()):
                t.lerp_(s, 0.3)
    for t, r in zip(teacher.module.parameters(), reference.module.parameters()):
        assert torch.equal(t, r)
    for t, s in zip(teacher.module.buffers(), student.buffers()):
        assert torch.equal(t, s)
    with pytest.raises(ValueError, match="different parameter lists"):
        teacher.update(nn.Linear(5, 7), momentum=0.5)
