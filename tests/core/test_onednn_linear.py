"""sslab.encoders.onednn_linear: the oneDNN fp32 CPU path computes nn.Linear's function and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslab.encoders.onednn_linear import Linear, _use_onednn, onednn_available


@pytest.mark.parametrize("shape,out,bias", [((4, 7, 24), 40, True), ((33, 48), 12, False)])
def test_matches_f_linear_forward_and_backward(shape, out, bias):
    if not onednn_available():
        pytest.skip("this torch build has no oneDNN linear kernel")
    torch.manual_seed(0)
    lin = Linear(shape[-1], out, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    assert _use_onednn(x, lin.weight)
    y = lin(x)
    g = torch.randn_like(y)
    y.backward(g)
    grads = [x.grad.clone(), lin.weight.grad.clone()] + ([lin.bias.grad.clone()] if bias else [])
    x.grad = None
    lin.zero_grad()
    ref = F.linear(x, lin.weight, lin.bias)
    ref.backward(g)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    assert y.grad_fn is not None and "OneDNN" in type(y.grad_fn).__name__  # the oneDNN path really ran
    for a, b in zip(grads, [x.grad, lin.weight.grad] + ([lin.bias.grad] if bias else [])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_falls_back_for_flop_counting_autocast_and_switch(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    lin = Linear(16, 8)
    x = torch.randn(5, 16)
    with FlopCounterMode(display=False) as fc:
        lin(x)
    assert fc.get_total_flops() == 2 * 5 * 16 * 8  # counted as an ordinary aten matmul
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16  # autocast still applies
    monkeypatch.setenv("SSLAB_ONEDNN_LINEAR", "0")
    assert not _use_onednn(x, lin.weight)
    assert lin(x.requires_grad_()).grad_fn.name().startswith("Addmm")
