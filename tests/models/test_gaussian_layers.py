"""GaussianLinear: each sampling mode draws pre-activations with the right distribution."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from benchmark.models.gaussian_layers import GaussianLinear, inverse_softplus
from benchmark.randomness.noise import draw_normal

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


def draw(
    layer: GaussianLinear, h: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The layer's pre-activations for k fresh draws of its noise."""
    return layer(h, draw_normal(layer.noise_shapes(h.shape[1], k), generator, h))


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
def test_sampling_modes_match_analytic_and_explicit_moments(sampling: str) -> None:
    """Both sampling modes draw the pre-activations of a random layer with the analytic mean
    and variance, as explicit weight draws do."""
    layer, h = make_layer(sampling)
    mean, var = analytic_moments(layer, h)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = draw(layer, h, K, generator)
    assert draws.shape == (K, 2, 2)
    assert_moments(draws, mean, var)
    torch.manual_seed(2)
    assert_moments(explicit_draws(layer, h, K), mean, var)


def test_local_mode_is_independent_across_data_points_shared_mode_is_not() -> None:
    """Local: (i, j) pairs get independent weights. Shared: rows of one sample share W_j."""
    for sampling in ("local", "shared"):
        layer, h = make_layer(sampling)
        with torch.no_grad():
            draws = draw(layer, h, K, torch.Generator().manual_seed(3))
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
        draws = draw(layer, h, 8, torch.Generator().manual_seed(0))
    assert torch.equal(draws, draws[:, :1].expand_as(draws))
    assert draws[:, 0].std(0).min() > 0  # but every sample has its own weights


def test_input_with_sample_dimension_is_used_per_sample() -> None:
    layer, _ = make_layer("local")
    h = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        layer.weight_rho.fill_(-60.0)
        layer.bias_rho.fill_(-60.0)
        out = draw(layer, h, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, h @ layer.weight.detach() + layer.bias.detach())


def test_deterministic_layer_is_affine_and_keeps_sample_dimension() -> None:
    torch.manual_seed(0)
    layer = GaussianLinear(3, 2)
    h = torch.randn(1, 4, 3)
    out = draw(layer, h, 7)
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


def test_nonpositive_init_std_is_rejected() -> None:
    with pytest.raises(ValueError, match="init_std"):
        GaussianLinear(2, 2, random=True, init_std=0.0)


def test_moments_are_the_analytic_mean_and_std_and_give_the_same_draws() -> None:
    """``moments`` (the local reparameterization): mean h M + m and std
    sqrt((h*h)(S*S) + s*s); ``mean + std * eps`` is the layer's own draw for the same eps."""
    layer, h = make_layer("local")
    mean, std = layer.moments(h)
    expected_mean, expected_var = analytic_moments(layer, h)
    torch.testing.assert_close(mean[0], expected_mean)
    torch.testing.assert_close(std[0], expected_var.sqrt())
    eps = torch.randn(5, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mean + std * eps, layer(h, {"pre_activation": eps}))
