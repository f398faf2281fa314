"""GaussianLinear: each sampling mode draws pre-activations with the right distribution."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from benchmark import kernels
from benchmark.models.gaussian_layers import GaussianLinear, inverse_softplus, weight_scales
from benchmark.models.iwae import ImportanceWeightedAutoencoder
from tests.conftest import PAPER_NETWORK

K = 40_000  # draws per moment check; tolerances are 5 standard errors of each statistic


def make_layer(sampling: str) -> tuple[GaussianLinear, torch.Tensor]:
    torch.manual_seed(1)
    layer = GaussianLinear(3, 2, random=True, init_std=0.1, sampling=sampling).double()
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
        layer.weight_rho.copy_(torch.randn(3, 2))  # unequal stds per weight
        layer.bias_rho.copy_(torch.tensor([-1.0, 0.5]))
    h = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, -1.5]], dtype=torch.float64).unsqueeze(0)
    return layer, h


def analytic_moments(layer: GaussianLinear, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activation mean h M + m and variance (h*h)(S*S) + s*s, ``[B, n_out]``."""
    with torch.no_grad():
        mean = h[0] @ layer.weight + layer.bias
        var = h[0].square() @ layer.weight_std().square() + layer.bias_std().square()
    return mean, var


def explicit_draws(layer: GaussianLinear, h: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: a full weight matrix and bias drawn for every (sample, data point)."""
    batch = h.shape[1]
    with torch.no_grad():
        w = layer.weight + layer.weight_std() * torch.randn(
            k, batch, *layer.weight.shape, dtype=h.dtype
        )
        b = layer.bias + layer.bias_std() * torch.randn(k, batch, layer.n_out, dtype=h.dtype)
        return torch.einsum("bi,kbio->kbo", h[0], w) + b


def assert_moments(draws: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    k = draws.shape[0]
    sample_mean, sample_var = draws.mean(0), draws.var(0)
    assert torch.all((sample_mean - mean).abs() < 5 * torch.sqrt(var / k))
    # The sample variance of Gaussian draws has standard error var * sqrt(2 / (k - 1)).
    assert torch.all((sample_var - var).abs() < 5 * var * math.sqrt(2 / (k - 1)))


@pytest.mark.parametrize("sampling", ["local", "shared"])
@pytest.mark.parametrize("mode", kernels.MODES)
def test_sampling_modes_match_analytic_and_explicit_moments(sampling: str, mode: str) -> None:
    """Both code paths (``kernels=auto``, ``kernels=reference``) draw the pre-activations of
    a random layer with the analytic mean and variance."""
    layer, h = make_layer(sampling)
    mean, var = analytic_moments(layer, h)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad(), kernels.using(mode):
        draws = layer(h, K, generator)
    assert draws.shape == (K, 2, 2)
    assert_moments(draws, mean, var)
    torch.manual_seed(2)
    assert_moments(explicit_draws(layer, h, K), mean, var)


def test_local_mode_is_independent_across_data_points_shared_mode_is_not() -> None:
    """Local: (i, j) pairs get independent weights. Shared: rows of one sample share W_j."""
    for sampling in ("local", "shared"):
        layer, h = make_layer(sampling)
        with torch.no_grad():
            draws = layer(h, K, torch.Generator().manual_seed(3))
            # Cov(a_0u, a_1u) under shared weights: sum_i h_0i h_1i S_iu^2 + s_u^2.
            shared_cov = (
                h[0, 0] * h[0, 1]
            ) @ layer.weight_std().square() + layer.bias_std().square()
        centred = draws - draws.mean(0)
        cov = (centred[:, 0] * centred[:, 1]).mean(0)
        _, var = analytic_moments(layer, h)
        se = torch.sqrt(var[0] * var[1] / K)
        expected = torch.zeros_like(shared_cov) if sampling == "local" else shared_cov
        assert torch.all((cov - expected).abs() < 5 * se), (sampling, cov, expected)
        assert torch.all(shared_cov.abs() > 10 * se)  # the two cases are distinguishable


def test_shared_mode_gives_identical_rows_identical_draws_within_a_sample() -> None:
    layer, _ = make_layer("shared")
    h = torch.ones(1, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        draws = layer(h, 8, torch.Generator().manual_seed(0))
    assert torch.equal(draws, draws[:, :1].expand_as(draws))
    assert draws[:, 0].std(0).min() > 0  # but every sample has its own weights


def test_input_with_sample_dimension_is_used_per_sample() -> None:
    layer, _ = make_layer("local")
    h = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        layer.weight_rho.fill_(-60.0)
        layer.bias_rho.fill_(-60.0)
        out = layer(h, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, h @ layer.weight.detach() + layer.bias.detach())


def test_deterministic_layer_is_affine_and_keeps_sample_dimension() -> None:
    torch.manual_seed(0)
    layer = GaussianLinear(3, 2)
    h = torch.randn(1, 4, 3)
    out = layer(h, 7)
    assert out.shape == (1, 4, 2)
    torch.testing.assert_close(out, h @ layer.weight + layer.bias)
    assert not hasattr(layer, "weight_rho")


@pytest.mark.parametrize("std", [1e-4, 0.01, 0.05, 1.0, 30.0])
def test_initial_std_is_the_configured_value(std: float) -> None:
    assert F.softplus(torch.tensor(inverse_softplus(std), dtype=torch.float64)).item() == (
        pytest.approx(std, rel=1e-9)
    )
    layer = GaussianLinear(4, 3, random=True, init_std=std)
    torch.testing.assert_close(layer.weight_std(), torch.full((4, 3), std))


def test_weight_scales_are_the_variances_for_local_and_the_stds_for_shared_sampling() -> None:
    local, _ = make_layer("local")
    shared, _ = make_layer("shared")
    other_local = GaussianLinear(2, 5, random=True, init_std=0.3).double()
    scales = weight_scales([local, shared, other_local])
    expected = [
        (local.weight_std().square(), local.bias_std().square()),
        (shared.weight_std(), shared.bias_std()),
        (other_local.weight_std().square(), other_local.bias_std().square()),
    ]
    for got, want in zip(scales, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert weight_scales([]) == []
    with pytest.raises(ValueError, match="random layers only"):
        weight_scales([local, GaussianLinear(2, 2)])


def test_nonpositive_init_std_is_rejected() -> None:
    with pytest.raises(ValueError, match="init_std"):
        GaussianLinear(2, 2, random=True, init_std=0.0)


def layer_noise(layer: GaussianLinear, k: int, batch: int, generator: torch.Generator):
    return [
        torch.randn(shape, dtype=layer.weight.dtype, generator=generator)
        for shape in layer.noise_shapes(batch, k)
    ]


@pytest.mark.parametrize("sampling", ["local", "shared"])
@pytest.mark.parametrize("samples_in_input", [1, 4], ids=["shared-input", "per-sample-input"])
@pytest.mark.parametrize("input_grad", [True, False], ids=["hidden", "data"])
def test_hand_fused_layers_match_the_plain_reference_path(
    sampling: str, samples_in_input: int, input_grad: bool
) -> None:
    """``kernels=auto`` (hand-fused backward on CPUs) and ``kernels=reference`` (the formula
    left to autograd) give the same values and gradients for the same noise."""
    layer, _ = make_layer(sampling)
    generator = torch.Generator().manual_seed(2)
    h = torch.randn(samples_in_input, 5, 3, dtype=torch.float64, generator=generator)
    h.requires_grad_(input_grad)
    noise = layer_noise(layer, 4, 5, generator)
    upstream = torch.randn(4, 5, 2, dtype=torch.float64, generator=generator)
    inputs = [h, *layer.parameters()] if input_grad else list(layer.parameters())
    results = []
    for mode in ("auto", "reference"):
        with kernels.using(mode):
            out = layer.with_noise(h, noise)
            results.append((out, torch.autograd.grad(out, inputs, upstream)))
    (fused, fused_grads), (reference, reference_grads) = results
    torch.testing.assert_close(fused, reference)
    for got, expected in zip(fused_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(
        lambda hh: layer.with_noise(hh, noise), (h.detach().requires_grad_(),)
    )


class MatmulDtypes(TorchDispatchMode):
    """Records the dtype of every matrix product run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (
            torch.ops.aten.mm.default,
            torch.ops.aten.addmm.default,
            torch.ops.aten.bmm.default,
        ):
            self.dtypes.append(args[-1].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampling", ["local", "shared"])
def test_backward_keeps_the_autocast_dtype(sampling: str) -> None:
    """Under bf16 autocast the backward's matmuls run in bf16, as autograd's would, and the
    gradients stay close to fp32's."""
    layer, _ = make_layer(sampling)
    layer = layer.float()
    h = torch.randn(4, 5, 3, requires_grad=True)
    noise = layer_noise(layer, 4, 5, torch.Generator().manual_seed(3))
    grads = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = layer.with_noise(h, noise)
        with MatmulDtypes() as backward:
            grads.append(torch.autograd.grad(out.float().sum(), [h, layer.weight]))
        expected = torch.bfloat16 if enabled else torch.float32
        assert len(backward.dtypes) >= 2 and set(backward.dtypes) == {expected}
    for fp32, bf16 in zip(*grads, strict=True):
        assert fp32.dtype == bf16.dtype == torch.float32
        torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("sampling", ["local", "shared"])
def test_the_non_cpu_code_paths_run_forward_and_backward(sampling: str) -> None:
    """On GPUs the model takes torch's own kernels and generators (there is no GPU here):
    run those branches on the meta device, which executes every op's shape logic."""
    model = ImportanceWeightedAutoencoder(
        784, PAPER_NETWORK, k=5, random_encoder=True, random_decoder=True, weight_sampling=sampling
    ).to("meta")
    log_weights = model.log_weights(torch.empty(3, 784, device="meta"), 5)
    log_weights.sum().backward()
    assert log_weights.shape == (5, 3) and log_weights.device.type == "meta"
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_moments_are_the_analytic_mean_and_std_and_give_the_same_draws() -> None:
    """``moments``: mean h M + m and std sqrt((h*h)(S*S) + s*s); ``mean + std * eps`` is the
    layer's own draw for the same eps. Only random layers with local sampling have them."""
    layer, h = make_layer("local")
    mean, std = layer.moments(h)
    expected_mean, expected_var = analytic_moments(layer, h)
    torch.testing.assert_close(mean[0], expected_mean)
    torch.testing.assert_close(std[0], expected_var.sqrt())
    eps = torch.randn(5, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(torch.addcmul(mean, std, eps), layer.with_noise(h, [eps]))
    for other in (GaussianLinear(3, 2), make_layer("shared")[0]):
        with pytest.raises(ValueError, match="random layer with local sampling"):
            other.moments(h)
