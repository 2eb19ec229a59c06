"""Self-distillation: student starts from the initial checkpoint, teacher frozen, loss = MLM + alpha*MSE."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sslab.core.export import build_encoder, save_encoder
from sslab.datasets.text_packing import PackedDataset
from sslab.objectives.self_distill import SelfDistillObjective
from text_helpers import pydoc_docs, pydoc_tokenizer, one_thread  # noqa: F401


def _spec():
    return {"name": "text_transformer", "vocab_size": len(pydoc_tokenizer()), "dim": 32, "depth": 2, "heads": 4,
            "max_len": 64}


def test_self_distillation_init_teacher_and_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    initial = build_encoder(_spec())
    save_encoder(initial, tmp_path / "initial")
    teacher = build_encoder(_spec())  # stands in for the further-pretrained copy
    save_encoder(teacher, tmp_path / "teacher")
    student = build_encoder(_spec())
    obj = SelfDistillObjective(student, teacher=str(tmp_path / "teacher"), init_from=str(tmp_path / "initial"),
                               alpha=2.0)
    assert torch.equal(obj.encoder.tok_emb.weight, initial.tok_emb.weight)  # student = initial checkpoint
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    ds = PackedDataset(pydoc_docs(), pydoc_tokenizer(), block_size=48)
    batch = SelfDistillObjective.collator(pydoc_tokenizer())([ds[i] for i in range(8)])
    out = obj(batch)
    valid = batch["attention_mask"].bool()
    h_s = obj.encoder(batch)
    with torch.no_grad():
        h_t = teacher.eval()(batch)
    ref_match = F.mse_loss(h_s[valid], h_t[valid])
    assert torch.allclose(out["match_loss"], ref_match, atol=1e-5)
    assert torch.allclose(out["loss"], out["mlm_loss"] + 2.0 * ref_match, atol=1e-5)
    out["loss"].backward()
    assert all(p.grad is None for p in obj.teacher.parameters())
    obj.train()
    assert not obj.teacher.training


def test_self_distillation_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SelfDistillObjective(build_encoder(_spec()), teacher=str(tmp_path / "missing"))
    other = build_encoder({**_spec(), "depth": 1})
    save_encoder(other, tmp_path / "shallow")
    with pytest.raises(RuntimeError, match="do not fit the student"):
        SelfDistillObjective(build_encoder(_spec()), teacher=build_encoder(_spec()), init_from=str(tmp_path / "shallow"))
