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
from benchmark.runs.experiment import train_and_evaluate
from benchmark.speed.flops import layer_matmuls
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
        logits = model.decoder1(nodes, nodes.shape[0])  # [G1, 1, D]
        log_px_z1 = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # [G1, N]
        mean, log_var = model.decoder2(nodes, nodes.shape[0]).chunk(2, dim=-1)  # [G2, 1, 1]
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
    assert se.max() < 0.05
    bound = model.bound(TINY_X.repeat_interleave(2000, 0), 1).view(3, -1).mean(1)
    assert torch.all(bound < exact - 0.05)  # L_1 sits visibly below log p(x)


@pytest.mark.parametrize(("random_encoder", "random_decoder"), [(False, False), (True, True)])
def test_flop_count_runs_the_data_layer_once_and_the_rest_per_sample(
    random_encoder: bool, random_decoder: bool
) -> None:
    """encoder1's deterministic layers see the B data points; every layer after the first
    random one, and encoder2 and both decoders (their inputs are per-sample latents), see
    the k B (sample, point) rows; a local-sampling random layer costs two products."""
    network = {"hidden": [[7], [5]], "latent": [3, 2], "activation": "tanh"}
    model = TwoStochasticLayerIWAE(
        12, network, random_encoder=random_encoder, random_decoder=random_decoder
    )
    batch, k = 4, 3
    got = {m.name: (m.rows, m.n_in, m.n_out, m.count) for m in layer_matmuls(model, batch, k)}
    rows_1 = batch * k if random_encoder else batch
    count_enc, count_dec = (2 if random_encoder else 1), (2 if random_decoder else 1)
    assert got == {
        "encoder1.0": (batch, 12, 7, count_enc),
        "encoder1.1": (rows_1, 7, 6, count_enc),
        "encoder2.0": (batch * k, 3, 5, count_enc),
        "encoder2.1": (batch * k, 5, 4, count_enc),
        "decoder2.0": (batch * k, 2, 5, count_dec),
        "decoder2.1": (batch * k, 5, 6, count_dec),
        "decoder1.0": (batch * k, 3, 7, count_dec),
        "decoder1.1": (batch * k, 7, 12, count_dec),
    }


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
    result = train_and_evaluate(cfg, Path(cfg.run_dir))
    assert result["protocol"]["latent"] == [100, 50]
    assert result["protocol"]["hidden"] == [[200, 200], [100, 100]]
    assert math.isfinite(result["test_ll"]) and -400 < result["test_ll"] < -100
