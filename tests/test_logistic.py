"""log sigmoid and softplus built without log1p: accurate over the whole float range."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from benchmark.logistic import log_sigmoid, softplus

WIDE = torch.cat([torch.linspace(-1e4, 1e4, 20_001), torch.linspace(-100, 100, 200_001)])


def test_log_sigmoid_has_float_accuracy_everywhere() -> None:
    exact = F.logsigmoid(WIDE.double())
    for dtype, tolerance in ((torch.float32, 5e-7), (torch.float64, 1e-15)):
        got = log_sigmoid(WIDE.to(dtype)).double()
        error = (got - exact).abs() / exact.abs().clamp(min=1.0)
        assert error.max().item() < tolerance, dtype


def test_softplus_has_float_relative_accuracy_and_the_sigmoid_gradient() -> None:
    r = WIDE[WIDE.abs() < 85]  # softplus(-85) is below float32's normal range
    exact = F.softplus(r.double())
    relative = ((softplus(r).double() - exact) / exact).abs()
    assert relative.max().item() < 1e-6
    r64 = torch.linspace(-40, 40, 1001, dtype=torch.float64, requires_grad=True)
    softplus(r64).sum().backward()
    torch.testing.assert_close(r64.grad, torch.sigmoid(r64.detach()))
    assert torch.autograd.gradcheck(softplus, (r64[::50].detach().requires_grad_(),))
