"""log sigmoid and softplus built without log1p: accurate over the whole float range, with
their gradients; softplus powers of several tensors from one kernel call."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from torch.nn import functional as F

from benchmark.kernels import compiled as cpu_kernels
from benchmark.kernels.logistic import log_sigmoid, softplus, softplus_power, tanh

WIDE = torch.cat([torch.linspace(-1e4, 1e4, 20_001), torch.linspace(-100, 100, 200_001)])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_log_sigmoid_has_float_accuracy_everywhere(compiled: bool) -> None:
    exact = F.logsigmoid(WIDE.double())
    function = torch.compile(log_sigmoid, fullgraph=True) if compiled else log_sigmoid
    for dtype, tolerance in ((torch.float32, 5e-7), (torch.float64, 1e-15)):
        got = function(WIDE.to(dtype)).double()
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


@pytest.mark.parametrize("power", [1, 2])
def test_softplus_powers_of_several_tensors_are_accurate_with_their_gradients(
    power: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = WIDE[WIDE.abs() < 85 / power]  # softplus(r)^power in float32's normal range
    parts = (r[:1000].view(10, 100), r[1000:], r[:7])
    values = softplus_power(parts, power)
    assert len(values) == len(parts)
    for value, part in zip(values, parts, strict=True):
        exact = F.softplus(part.double()).pow(power)
        assert ((value.double() - exact) / exact).abs().max().item() < power * 1e-6
    monkeypatch.setattr(cpu_kernels, "_compile_failed", True)  # the eager fallback
    for value, eager in zip(values, softplus_power(parts, power), strict=True):
        torch.testing.assert_close(value, eager)
    monkeypatch.undo()
    r64 = [
        torch.linspace(a, b, 1001, dtype=torch.float64, requires_grad=True)
        for a, b in ((-40, 40), (-3, 0))
    ]
    sum(value.sum() for value in softplus_power(r64, power)).backward()
    for part in r64:
        x = part.detach()
        slope = power * F.softplus(x).pow(power - 1) * torch.sigmoid(x)
        torch.testing.assert_close(part.grad, slope)
    small = tuple(part[::50].detach().requires_grad_() for part in r64)
    assert torch.autograd.gradcheck(lambda *rhos: softplus_power(rhos, power), small)


def test_softplus_power_takes_stds_or_variances_only_and_differentiates_once() -> None:
    with pytest.raises(ValueError, match="power 1 or 2, got 3"):
        softplus_power([torch.zeros(2)], 3)
    r = torch.zeros(3, requires_grad=True)
    loss = softplus_power([r], 2)[0].square().sum()  # an upstream gradient that needs grad
    (grad,) = torch.autograd.grad(loss, r, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):  # not a silent, partial one
        grad.sum().backward()


def test_softplus_power_compiles_once_for_parameters_of_any_size_and_under_autocast() -> None:
    def call(*shapes: tuple[int, ...]) -> None:
        softplus_power([torch.nn.Parameter(torch.randn(shape)) for shape in shapes], 1)

    torch.compiler.reset()  # below dynamo's recompile limit, so a new graph would show
    graphs = counters["stats"]["unique_graphs"]
    call((5, 3), (3,), (3, 6), (6,))  # two layers' weights and biases
    assert counters["stats"]["unique_graphs"] == graphs + 1  # the kernel was compiled
    call((7, 4), (4,), (4, 9), (9,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call((6, 5), (5,), (5, 2), (2,))
    assert counters["stats"]["unique_graphs"] == graphs + 1


def test_tanh_is_accurate_with_the_tanh_gradient() -> None:
    x = WIDE[WIDE.abs() < 30]
    assert (tanh(x).double() - torch.tanh(x.double())).abs().max().item() < 3e-7
    x64 = torch.linspace(-10, 10, 1001, dtype=torch.float64, requires_grad=True)
    assert (tanh(x64) - torch.tanh(x64)).abs().max().item() < 1e-15
    tanh(x64).sum().backward()
    torch.testing.assert_close(x64.grad, 1 - torch.tanh(x64.detach()).square())
    assert torch.autograd.gradcheck(tanh, (x64[::50].detach().requires_grad_(),))


def test_tanh_under_torch_compile_has_the_eager_gradient() -> None:
    """Traced by dynamo, whose autograd-Function support in torch 2.11 lost the gradient of a
    Function whose output was written in place (pytorch/pytorch#180642)."""
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def loss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return tanh(x @ w).square().sum()

    (eager,) = torch.autograd.grad(loss(x, w), w)
    (traced,) = torch.autograd.grad(torch.compile(loss, backend="eager")(x, w), w)
    assert eager.abs().min() > 0
    torch.testing.assert_close(traced, eager)
