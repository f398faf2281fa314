"""The two-stochastic-layer family (benchmark/models/two_layer.py): its S-sample estimate
converges to log p(x) computed exactly by quadrature, its FLOP count follows its networks,
and it trains and evaluates through the same runner as the one-layer models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.bounds import log_normal_diag
from benchmark.models.two_layer import TwoStochasticLayerIWAE
from benchmark.runs.config import compose_config
from benchmark.runs.experiment import run
from tests.conftest import TINY_X

TINY_NETWORK = {"hidden": [[3], [3]], "latent": [1, 1], "activation": "tanh"}


def tiny_two_layer(**flags: object) -> TwoStochasticLayerIWAE:
    torch.manual_seed(0)
    model = TwoStochasticLayerIWAE(TINY_X.shape[1], TINY_NETWORK, k=1, **flags).double()
    with torch.no_grad():
        for layer in model.decoder1.layers:  # a decoder far from the pixel-mean model
            layer.weight.mul_(2.0)
            layer.bias.normal_(0.0, 0.5)
    return model


def exact_log_marginal(model: TwoStochasticLayerIWAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log ∫∫ p(x|z1) N(z1; mu(z2), sigma(z2)^2) N(z2; 0, 1) dz1 dz2 for 1-D z1,
    z2 and point-estimate weights: the trapezoid rule on [-12, 12]^2, 1,201 nodes a side."""
    grid = torch.linspace(-12.0, 12.0, 1201, dtype=torch.float64)
    nodes = grid.view(-1, 1, 1)
    with torch.no_grad():
        logits = model.decoder1.sampled(nodes, nodes.shape[0])  # [G1, 1, D]
        log_px_z1 = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # [G1, N]
        mean, log_var = model.decoder2.sampled(nodes, nodes.shape[0]).chunk(2, dim=-1)  # [G2, 1, 1]
    log_p_z1 = log_normal_diag(grid.view(1, -1, 1), mean, log_var)  # [G2, G1]
    log_p_z2 = -0.5 * grid.square() - 0.5 * math.log(2 * math.pi)
    log_integrand = log_px_z1[None] + log_p_z1[..., None] + log_p_z2[:, None, None]
    inner = torch.trapezoid(torch.exp(log_integrand), grid, dim=1)  # [G2, N]
    return torch.log(torch.trapezoid(inner, grid, dim=0))


def test_estimator_converges_to_the_exact_two_layer_log_likelihood() -> None:
    model = tiny_two_layer()
    exact = exact_log_marginal(model, TINY_X)
    n_samples = 200_000
    estimate = estimate_log_likelihood(model, TINY_X, n_samples=n_samples, progress=False)
    with torch.no_grad():
        log_w = model.log_weights(TINY_X, n_samples, torch.Generator().manual_seed(7))
    se = torch.exp(log_w - exact).std(0) / math.sqrt(n_samples)  # SE of log p_hat
    assert torch.all((estimate.per_point - exact).abs() < 5 * se + se.square())
    # The weights are heavy-tailed (single draws of w / p(x) reach 1e4), so their sample SE
    # varies between noise streams (0.02-0.12 nats over six seeds): a bound that holds for all.
    assert se.max() < 0.15
    bound = model.bound(TINY_X.repeat_interleave(2000, 0), 1).view(3, -1).mean(1)
    assert torch.all(bound < exact - 0.05)  # L_1 sits visibly below log p(x)


@pytest.mark.parametrize("model", ["iwaer_2l"])
def test_the_runner_trains_and_evaluates_the_two_layer_family(
    model: str, tmp_path: Path, data_dir: Path
) -> None:
    """model=iwaer_2l alone brings Burda et al.'s two-layer network; the run writes a result
    whose protocol records it, with a finite estimate above the training-start bound."""
    cfg = compose_config(
        [
            f"model={model}",
            "experiment=smoke",
            f"results_dir={tmp_path}",
            f"data_dir={data_dir}",
            "dataset.train_subset=300",
            "dataset.test_subset=50",
            "eval.n_samples=20",
            "trainer.enable_progress_bar=false",
            "eval.progress=false",
            "~logger",
        ]
    )
    assert cfg.network.latent == [100, 50]
    result = run(cfg)
    assert result["protocol"]["latent"] == [100, 50]
    assert result["protocol"]["hidden"] == [[200, 200], [100, 100]]
    assert math.isfinite(result["test_ll"]) and -400 < result["test_ll"] < -100
