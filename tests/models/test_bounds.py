"""The facts of docs/paper.md section 5 that need exact answers, checked statistically on
tiny models whose log p(x) is known (quadrature, or plain Monte Carlo of the mixture); the
facts that hold for every model config are in ``test_every_model``.

Every tolerance is a multiple (4 or 5) of the standard error of the compared statistic,
estimated from the same draws.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.bounds import (
    bernoulli_log_likelihood,
    elbo_analytic_kl,
    iwae_bound,
    log_normal_diag,
    log_standard_normal,
)
from tests.conftest import TINY_X, exact_log_marginal, tiny_model


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.repeat_interleave(n, dim=0)


def test_stable_log_sum_exp_handles_large_log_weights() -> None:
    log_w = torch.tensor([[-1000.0, 500.0], [-1001.0, 500.0]])
    expected = torch.tensor([-1000.0 + math.log((1 + math.exp(-1)) / 2), 500.0])
    torch.testing.assert_close(iwae_bound(log_w), expected)


def test_log_normal_diag_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    z, mean, log_var = torch.randn(3, 5, 4).unbind(0)
    reference = torch.distributions.Normal(mean, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal_diag(z, mean, log_var), reference)
    torch.testing.assert_close(log_standard_normal(z), log_normal_diag(z, 0 * z, 0 * z))


def test_l1_equals_textbook_elbo_in_expectation() -> None:
    """L_1 = E[log p(x|z) + log p(z) - log q(z|x)] = E[log p(x|z)] - KL(q || p)."""
    model = tiny_model()
    n = 40_000
    x = repeat_rows(TINY_X[:1], n)
    with torch.no_grad():
        l1 = model.log_weights(x, 1, torch.Generator().manual_seed(0))[0]
        mean, log_var = model.encoder.sampled(x.unsqueeze(0), 1).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * torch.randn(
            mean.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype
        )
        textbook = elbo_analytic_kl(x, model.decoder.sampled(z, 1), mean, log_var)[0]
    se = math.sqrt(l1.var() / n + textbook.var() / n)
    assert abs(l1.mean() - textbook.mean()) < 5 * se
    assert se < 0.05  # tight enough to see a wrong normaliser such as a missing log(2 pi) / 2


@pytest.mark.parametrize(
    ("random_encoder", "random_decoder"), [(False, False), (True, True)], ids=["iwae", "iwaer"]
)
def test_lk_increases_with_k_and_approaches_log_px(
    random_encoder: bool, random_decoder: bool
) -> None:
    """E[L_k] stays below log p(x) and the gap log p(x) - E[L_k] shrinks strictly with k."""
    model = tiny_model(random_encoder, random_decoder, init_std=0.2)
    x = TINY_X[:1]
    if random_decoder:
        log_px, log_px_se = mixture_log_px(model, x)
    else:
        log_px, log_px_se = exact_log_marginal(model, x).item(), 0.0
    reps = 4_000
    means, ses = [], []
    with torch.no_grad():
        for i, k in enumerate((1, 2, 8, 64, 512)):
            bounds = model.bound(repeat_rows(x, reps), k, torch.Generator().manual_seed(i))
            means.append(bounds.mean().item())
            ses.append(bounds.std().item() / math.sqrt(reps))
    for m, s in zip(means, ses, strict=True):
        assert m < log_px + 4 * math.hypot(s, log_px_se)
    gaps = [log_px - m for m in means]
    for (g0, s0), (g1, s1) in itertools.pairwise(zip(gaps, ses, strict=True)):
        assert g1 < g0 - 4 * math.hypot(s0, s1)  # the encoder is imperfect: every k helps
    assert gaps[-1] < 0.2 * gaps[0]


def mixture_log_px(model, x: torch.Tensor, n: int = 400_000) -> tuple[float, float]:
    """log p_Omega(x) = log E_{theta ~ q, z ~ p}[p(x|z,theta)] by plain Monte Carlo (+ its SE)."""
    with torch.no_grad():
        z = torch.randn((n, 1, 1), generator=torch.Generator().manual_seed(99), dtype=x.dtype)
        logits = model.decoder.sampled(z, n, torch.Generator().manual_seed(98))
        p = torch.exp((x * logits - torch.nn.functional.softplus(logits)).sum(-1)).squeeze(1)
    return math.log(p.mean().item()), (p.std() / p.mean()).item() / math.sqrt(n)


def test_importance_weights_are_unbiased_for_the_marginal_likelihood() -> None:
    """E[w] = p(x) for IWAE (exact by quadrature) and p_Omega(x) for IWAER (by prior sampling).

    q(z|x) is made wider than the prior (log-variance bias 3): with q narrower than p(z) in
    some draws of the encoder's weights, p(z) / q(z|x) has infinite variance, and the sample
    mean of w sits below E[w] in most runs while its standard error is underestimated."""
    n = 200_000
    x = TINY_X[:1]
    for random in (False, True):
        model = tiny_model(random, random, init_std=0.3)
        with torch.no_grad():
            model.encoder.layers[-1].bias[model.latent_sizes["z"] :] = 3.0
        if random:
            log_px, log_px_se = mixture_log_px(model, x)
        else:
            log_px, log_px_se = exact_log_marginal(model, x).item(), 0.0
        with torch.no_grad():
            w = torch.exp(model.log_weights(x, n, torch.Generator().manual_seed(5))[:, 0] - log_px)
        se = math.hypot(w.std().item() / math.sqrt(n), log_px_se)
        assert abs(w.mean().item() - 1.0) < 5 * se, (random, w.mean().item(), se)


@pytest.mark.parametrize("hidden", [(), (3,)], ids=["linear", "hidden3"])
def test_estimator_converges_to_exact_log_likelihood(hidden: tuple[int, ...]) -> None:
    """The S-sample estimate of log p(x) matches quadrature within its delta-method error."""
    model = tiny_model(hidden=hidden)
    exact = exact_log_marginal(model, TINY_X)
    n_samples = 200_000
    estimate = estimate_log_likelihood(model, TINY_X, n_samples=n_samples, progress=False)
    with torch.no_grad():
        log_w = model.log_weights(TINY_X, n_samples, torch.Generator().manual_seed(7))
    w = torch.exp(log_w - exact)
    se = w.std(0) / math.sqrt(n_samples)  # SE of log p_hat ≈ std(w / p) / sqrt(S)
    assert torch.all((estimate.per_point - exact).abs() < 5 * se + se.square())
    assert se.max() < 0.05
    assert estimate.mean == pytest.approx(estimate.per_point.mean().item())


def test_bound_means_agree_across_weight_sampling_modes() -> None:
    """Local and shared sampling draw each data point's samples from the same distribution,
    so E[L_k^R] per data point is the same."""
    reps, k = 6_000, 4
    x = repeat_rows(TINY_X[:1], reps)
    results = []
    for sampling in ("local", "shared"):
        model = tiny_model(True, True, sampling=sampling, init_std=0.4)
        with torch.no_grad():
            if sampling == "local":
                bounds = model.bound(x, k, torch.Generator().manual_seed(0))
            else:  # every sample draws its own weights: one pass of reps x k samples of one
                # data point holds reps independent k-sample passes
                log_w = model.log_weights(x[:1], reps * k, torch.Generator().manual_seed(0))
                bounds = iwae_bound(log_w.view(reps, k).t())
        results.append((bounds.mean().item(), bounds.var().item() / reps))
    (m0, v0), (m1, v1) = results
    assert abs(m0 - m1) < 5 * math.sqrt(v0 + v1)


def test_bernoulli_log_likelihood_and_its_gradient_match_the_textbook_form() -> None:
    torch.manual_seed(0)
    logits = (torch.randn(3, 4, 50, dtype=torch.float64) * 30).requires_grad_()
    x = torch.rand(4, 50, dtype=torch.float64).bernoulli()
    reference = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    value = bernoulli_log_likelihood(x, logits)
    torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-9)
    weights = torch.randn(3, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((value * weights).sum(), logits)
    (ref_grad,) = torch.autograd.grad((reference * weights).sum(), logits)
    torch.testing.assert_close(grad, ref_grad)
    single = bernoulli_log_likelihood(x.float(), logits.detach().float())
    torch.testing.assert_close(single.double(), reference.detach(), rtol=1e-6, atol=1e-4)
