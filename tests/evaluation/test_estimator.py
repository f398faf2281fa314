"""The S-sample test log-likelihood: chunking, memory cap, seeding, standard error."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.evaluation.estimator import (
    estimate_log_likelihood,
    floats_per_sample,
    samples_per_chunk,
)
from benchmark.models.iwae import ImportanceWeightedAutoencoder
from benchmark.randomness.seeding import make_generator
from tests.conftest import PAPER_NETWORK, TINY_X, tiny_model


def paper_model(**flags) -> ImportanceWeightedAutoencoder:
    torch.manual_seed(0)
    return ImportanceWeightedAutoencoder(784, PAPER_NETWORK, **flags)


@pytest.mark.parametrize("sampling", ["local", "shared"])
def test_chunk_size_respects_the_memory_cap(sampling: str) -> None:
    model = paper_model(random_encoder=True, random_decoder=True, weight_sampling=sampling)
    for cap in (2 << 30, 256 << 20, 16 << 20):
        chunk = samples_per_chunk(model, 2000, 100, cap)
        assert 1 <= chunk <= 2000
        assert 4 * chunk * floats_per_sample(model, 100) <= cap or chunk == 1
        assert chunk == 2000 or 4 * (chunk + 1) * floats_per_sample(model, 100) > cap
    assert samples_per_chunk(model, 2000, 100, 2 << 30, max_rows=5000) == 50
    assert samples_per_chunk(model, 2000, 100, 2 << 30, max_rows=50) == 1


def test_floats_per_sample_bound_the_real_activation_size() -> None:
    """The estimate covers the tensors the forward pass actually creates (checked by counting
    the elements of every intermediate output with forward hooks)."""
    model = paper_model(random_encoder=True, random_decoder=True)
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    x = torch.rand(10, 784).bernoulli()
    with torch.no_grad():
        model.log_weights(x, 7)
    for hook in hooks:
        hook.remove()
    assert sum(sizes) <= 7 * floats_per_sample(model, 10)


def test_estimate_does_not_depend_on_chunking_beyond_sampling_error() -> None:
    model = tiny_model(True, True)
    x = TINY_X.repeat(20, 1)
    whole = estimate_log_likelihood(model, x, n_samples=400, progress=False, max_chunk_rows=10**9)
    chunked = estimate_log_likelihood(model, x, n_samples=400, memory_cap_gib=1e-6, progress=False)
    assert samples_per_chunk(model, 400, 100, int(1e-6 * (1 << 30))) < 400
    diff = whole.per_point - chunked.per_point
    assert not torch.equal(whole.per_point, chunked.per_point)
    assert abs(diff.mean().item()) < 5 * diff.std().item() / math.sqrt(diff.numel())


@pytest.mark.parametrize("random_encoder", [False, True], ids=["iwae", "iwaerrec"])
def test_estimate_is_the_log_mean_weight_over_chunks_of_the_eval_stream(
    random_encoder: bool,
) -> None:
    """Exactly log (1/S) sum_j w_j per point, where chunk c of batch b draws its noise from the
    stream (seed, "eval", b, c): 2 batches (the last smaller), chunks of 5, 5 and 2 samples."""
    model = tiny_model(random_encoder, False)
    x = TINY_X.repeat(2, 1)[:5]
    got = estimate_log_likelihood(
        model, x, n_samples=12, batch_size=3, seed=7, progress=False, max_chunk_rows=15
    )
    expected = []
    with torch.no_grad():
        for b, xb in enumerate(x.split(3)):
            log_weights = []
            for c, k in enumerate((5, 5, 2)):
                noise = model.draw_noise(xb, k, make_generator("cpu", 7, "eval", b, c))
                log_weights.append(model.log_weights_with_noise(xb, noise))
            expected.append(torch.logsumexp(torch.cat(log_weights), 0) - math.log(12))
    torch.testing.assert_close(got.per_point, torch.cat(expected))


def test_estimate_is_reproducible_and_seeded() -> None:
    model = tiny_model(True, False)
    a = estimate_log_likelihood(model, TINY_X, n_samples=64, seed=3, progress=False)
    b = estimate_log_likelihood(model, TINY_X, n_samples=64, seed=3, progress=False)
    c = estimate_log_likelihood(model, TINY_X, n_samples=64, seed=4, progress=False)
    assert torch.equal(a.per_point, b.per_point)
    assert not torch.equal(a.per_point, c.per_point)


def test_mean_and_standard_error_over_test_points() -> None:
    model = tiny_model()
    x = TINY_X.repeat(7, 1)
    est = estimate_log_likelihood(model, x, n_samples=32, batch_size=5, progress=False)
    assert est.n_points == 21 and est.n_samples == 32
    values = est.per_point
    assert est.mean == pytest.approx(values.mean().item())
    assert est.standard_error == pytest.approx(values.std(correction=1).item() / math.sqrt(21))
    assert model.training  # the model's mode is restored


@pytest.mark.parametrize("bad", [{"n_samples": 0}, {"batch_size": 0}, {"memory_cap_gib": 0.0}])
def test_bad_arguments_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        estimate_log_likelihood(tiny_model(), TINY_X, progress=False, **bad)


def test_compiled_estimate_matches_eager() -> None:
    """compile=true: the same noise, the same per-point estimates up to float rounding."""
    model = tiny_model(True, False)
    x = TINY_X.repeat(3, 1)
    eager = estimate_log_likelihood(model, x, n_samples=50, progress=False)
    compiled = estimate_log_likelihood(model, x, n_samples=50, progress=False, compile=True)
    torch.testing.assert_close(compiled.per_point, eager.per_point, rtol=0, atol=1e-4)
