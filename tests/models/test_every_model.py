"""The facts of docs/paper.md section 5 for every model config in conf/model (the registered
models), on tiny versions of their networks: a new model config gets these tests for free.
The checks against exact marginals of tiny models are in ``test_bounds``.

Every tolerance is a multiple (4 or 5) of the standard error of the compared statistic,
estimated from the same draws.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.bounds import iwae_bound
from benchmark.randomness.noise import draw_stacked_normal
from benchmark.runs.builders import build_model
from benchmark.runs.config import CONFIG_DIR, compose_config
from benchmark.training.stacked import StackedReplicas
from tests.conftest import TINY_X

MODELS = sorted(path.stem for path in (CONFIG_DIR / "model").glob("*.yaml"))


def tiny_network(value: Any, key: str = "") -> Any:
    """The network config with every width 3 and every latent size 1 (any nesting)."""
    if isinstance(value, dict):
        return {k: tiny_network(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [tiny_network(v, key) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return 1 if key == "latent" else 3
    return value


def tiny(model: str, *overrides: str, seed: int = 0) -> ImportanceWeightedModel:
    """Model config ``model`` on 4 pixels with a tiny network, in float64."""
    cfg = compose_config([f"model={model}", *overrides])
    cfg.network = tiny_network(OmegaConf.to_container(cfg.network, resolve=True))
    torch.manual_seed(seed)
    return build_model(cfg, x_dim=TINY_X.shape[1]).double()


def is_random(model: ImportanceWeightedModel) -> bool:
    return any(layer.random for _, layer in model.gaussian_layers())


def latent_noise_only(model: ImportanceWeightedModel, noise: dict) -> dict:
    """``noise`` with the weight noise of every network left out (deterministic layers take
    none)."""
    return {
        name: noise[name] if name in model.latent_sizes else [{} for _ in noise[name]]
        for name in noise
    }


@pytest.mark.parametrize("name", MODELS)
def test_mean_bound_grows_with_k_and_stays_below_the_log_likelihood(name: str) -> None:
    """E[L_k] rises with k (the tiny encoders are imperfect) and stays below log p(x), here
    its S = 100,000 estimate (itself an L_S, so the gap to it only shrinks)."""
    model = tiny(name, "model.init_std=0.2")
    x = TINY_X[:1]
    reps = 3_000
    means, ses = [], []
    with torch.no_grad():
        for i, k in enumerate((1, 4, 32)):
            bounds = model.bound(x.expand(reps, -1), k, torch.Generator().manual_seed(i))
            means.append(bounds.mean().item())
            ses.append(bounds.std().item() / math.sqrt(reps))
        log_w = model.log_weights(x, 100_000, torch.Generator().manual_seed(9))[:, 0]
    log_px = (torch.logsumexp(log_w, 0) - math.log(log_w.numel())).item()
    for (m0, s0), (m1, s1) in itertools.pairwise(zip(means, ses, strict=True)):
        assert m1 > m0 + 4 * math.hypot(s0, s1)
    for m, s in zip(means, ses, strict=True):
        assert m < log_px + 4 * s


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sampling", ["local", "shared"])
def test_vanishing_weight_std_gives_the_deterministic_models_numbers(
    name: str, sampling: str
) -> None:
    """Random weights with every std -> 0 give the point-estimate model's log-weights for the
    same latent noise, whatever their weight noise (the same seed and noise), with either
    weight sampling."""
    random = tiny(name, f"model.weight_sampling={sampling}")
    if not is_random(random):
        pytest.skip(f"{name} has no random weights")
    deterministic = tiny(name, "model.random_encoder=false", "model.random_decoder=false")
    with torch.no_grad():
        for parameter_name, parameter in random.named_parameters():
            if parameter_name.endswith("_rho"):
                parameter.fill_(-80.0)  # softplus(-80) ~ 1.8e-35
    loaded = deterministic.load_state_dict(random.state_dict(), strict=False)
    assert not loaded.missing_keys
    x = TINY_X.repeat_interleave(5, dim=0)
    with torch.no_grad():
        noise = random.draw_noise(x, 25, torch.Generator().manual_seed(0))
        expected = deterministic.log_weights_with_noise(x, latent_noise_only(random, noise))
        got = random.log_weights_with_noise(x, noise)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sampling", ["local", "shared"])
def test_importance_samples_see_different_weights_only_with_random_weights(
    name: str, sampling: str
) -> None:
    """With all latent noise zero, the k samples of a data point differ only through their
    weights: identical for point-estimate weights, different for random ones; and with local
    sampling two copies of one data point get different weights too."""
    model = tiny(name, "model.init_std=0.3", f"model.weight_sampling={sampling}")
    x = TINY_X[:1].expand(2, -1)
    with torch.no_grad():
        noise = model.draw_noise(x, 8, torch.Generator().manual_seed(0))
        for latent in model.latent_sizes:
            noise[latent].zero_()
        log_w = model.log_weights_with_noise(x, noise)
    if not is_random(model):
        torch.testing.assert_close(log_w, log_w[:1].expand_as(log_w), rtol=0, atol=1e-12)
        return
    assert log_w.std(0).min() > 1e-3
    if sampling == "local":
        assert (log_w[:, 0] - log_w[:, 1]).abs().min() > 1e-6
    else:
        torch.testing.assert_close(log_w[:, 0], log_w[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_samples_and_reconstructions_are_pixel_means(name: str) -> None:
    model = tiny(name)
    generator = torch.Generator().manual_seed(0)
    samples = model.sample(5, generator)
    reconstructions = model.reconstruct(TINY_X, generator)
    assert samples.shape == (5, 4) and reconstructions.shape == TINY_X.shape
    for images in (samples, reconstructions):
        assert ((images > 0) & (images < 1)).all()
    pixel_mean = torch.tensor([0.1, 0.5, 0.9, 0.5], dtype=torch.float64)
    model.init_output_bias(pixel_mean)
    with torch.no_grad():
        for _, layer in model.gaussian_layers():
            if layer.n_out == 4:  # the output layer: logits of the pixel means
                layer.weight.zero_()
                if layer.random:
                    layer.weight_rho.fill_(-80.0)
                    layer.bias_rho.fill_(-80.0)
    torch.testing.assert_close(model.sample(3, generator), pixel_mean.expand(3, -1))


@pytest.mark.parametrize("name", MODELS)
def test_stacked_replicas_are_the_models_alone(name: str) -> None:
    """Three models of one config stacked (:class:`StackedReplicas`, vmap): replica r's bound
    and its slice of the stacked gradient are model r's own, for its own data and noise."""
    models = [tiny(name, "model.init_std=0.3", seed=seed) for seed in range(3)]
    xs = torch.stack([TINY_X[torch.tensor(o)] for o in ([0, 1, 2], [2, 0, 1], [1, 1, 0])])
    generators = [torch.Generator().manual_seed(r) for r in range(3)]
    noise = draw_stacked_normal(models[0].noise_shapes(3, 4), generators, xs)
    stacked = StackedReplicas(models)
    bounds = stacked.bounds(xs, noise)
    grads = torch.autograd.grad(bounds.square().sum(), list(stacked.stacked))
    for r, model in enumerate(models):
        own_noise = model.draw_noise(xs[r], 4, torch.Generator().manual_seed(r))
        own = iwae_bound(model.log_weights_with_noise(xs[r], own_noise))
        own_grads = torch.autograd.grad(own.square().sum(), list(model.parameters()))
        torch.testing.assert_close(bounds[r], own, rtol=1e-12, atol=1e-12)
        for stacked_grad, own_grad in zip(grads, own_grads, strict=True):
            torch.testing.assert_close(stacked_grad[r], own_grad, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(bounds[0], bounds[1])  # the replicas do differ
    replica = stacked.replica(1)
    with torch.no_grad():
        stacked.stacked[0].add_(1.0)  # a replica's parameters are views of the stacked ones
    assert torch.equal(next(replica.parameters()), stacked.stacked[0][1])
