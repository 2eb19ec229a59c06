"""Checkpoint averaging equals the hand-computed weighted average; errors name the file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from text_helpers import one_thread  # noqa: F401

from sslab.eval.averaging import average_files, average_state_dicts, resolve_weights


def _states():
    torch.manual_seed(0)
    return [{"w": torch.randn(3, 4), "b": torch.randn(4).half(), "step": torch.tensor(i)} for i in (10, 20, 30)]


def test_uniform_and_weighted_average_equal_hand_computation() -> None:
    s = _states()
    avg = average_state_dicts(s)
    assert torch.allclose(avg["w"], (s[0]["w"] + s[1]["w"] + s[2]["w"]) / 3, atol=1e-6)
    assert avg["b"].dtype == torch.float16
    assert torch.allclose(avg["b"].float(), (s[0]["b"].float() + s[1]["b"].float() + s[2]["b"].float()) / 3, atol=1e-3)
    assert avg["step"].item() == 30  # integer buffers come from the newest checkpoint
    lin = average_state_dicts(s, "linear")
    assert torch.allclose(lin["w"], (1 * s[0]["w"] + 2 * s[1]["w"] + 3 * s[2]["w"]) / 6, atol=1e-6)
    ex = average_state_dicts(s, [0.0, 1.0, 3.0])
    assert torch.allclose(ex["w"], (s[1]["w"] + 3 * s[2]["w"]) / 4, atol=1e-6)
    assert resolve_weights("exp:0.5", 3) == [0.25, 0.5, 1.0]


def test_safetensors_files_and_bad_inputs(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    s = _states()
    paths = []
    for i, st in enumerate(s):
        p = tmp_path / f"e{i}.safetensors"
        save_file({k: v.contiguous() for k, v in st.items()}, str(p))
        paths.append(p)
    avg = average_files(paths, "linear")
    assert torch.allclose(avg["w"], (s[0]["w"] + 2 * s[1]["w"] + 3 * s[2]["w"]) / 6, atol=1e-6)
    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(3, 5), "b": s[0]["b"], "step": s[0]["step"]}, str(bad))
    with pytest.raises(ValueError, match=r"bad.safetensors: w has shape \(3, 5\)"):
        average_files([paths[0], bad])
    with pytest.raises(ValueError, match="got 2 weights for 3"):
        average_state_dicts(s, [1.0, 2.0])
    with pytest.raises(ValueError, match="parameters differ"):
        average_state_dicts([s[0], {"w": s[1]["w"]}])
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        average_files([tmp_path / "nope.pt"])
