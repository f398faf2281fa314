"""Test log-likelihood by importance sampling: log p(x) ~ log (1/S) sum_s w_s, S = 2000.

For random-weight models each of the S samples draws its own weights (and, with local
sampling, its own per data point), so the estimate targets log p_Omega(x). Samples are
processed in chunks whose activations fit a memory cap and a cap on (sample, point) rows. All
noise comes from the stream ``(seed, "eval", batch, chunk)``, so the result is reproducible
for a given configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.compilation import CompileMode, begin_graph_step, compile_pass
from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.gaussian_layers import WeightSampling
from benchmark.randomness.seeding import make_generator

BYTES_PER_GIB = 1 << 30


@dataclass
class LogLikelihoodEstimate:
    """Mean over test points of the S-sample estimate, its standard error and per-point values."""

    mean: float
    standard_error: float
    per_point: Tensor
    n_samples: int

    @property
    def n_points(self) -> int:
        return self.per_point.shape[0]


def floats_per_sample(model: ImportanceWeightedModel, batch: int) -> int:
    """Floats alive at once in a no-grad pass of one importance sample over ``batch`` points
    (an upper estimate): per data point, the mean, variance, noise and output of every layer,
    four per latent unit and two per pixel for the likelihood; one weight draw of every
    random layer with shared sampling."""
    layers = [layer for _, layer in model.gaussian_layers()]
    per_point = (
        3 * sum(layer.n_out for layer in layers)
        + 4 * sum(model.latent_sizes.values())
        + 2 * model.x_dim
    )
    shared = sum(
        (layer.n_in + 1) * layer.n_out
        for layer in layers
        if layer.random and layer.sampling is WeightSampling.SHARED
    )
    return batch * per_point + 2 * shared


def samples_per_chunk(
    model: ImportanceWeightedModel,
    n_samples: int,
    batch_size: int,
    memory_cap_bytes: int,
    max_rows: int | None = None,
) -> int:
    """Importance samples per forward pass: the most that fit ``memory_cap_bytes`` and, if
    given, ``max_rows`` (sample, point) rows."""
    bytes_per_sample = 4 * floats_per_sample(model, batch_size)
    chunk = min(n_samples, memory_cap_bytes // bytes_per_sample)
    if max_rows is not None:
        chunk = min(chunk, max_rows // batch_size)
    return max(1, chunk)


@torch.no_grad()
def estimate_log_likelihood(
    model: ImportanceWeightedModel,
    data: Tensor,
    n_samples: int = 2000,
    batch_size: int = 100,
    memory_cap_gib: float = 2.0,
    seed: int = 0,
    progress: bool = True,
    max_chunk_rows: int | None = 5000,
    compile: CompileMode = False,
) -> LogLikelihoodEstimate:
    """S-sample importance-sampling estimate of log p(x) for every row of ``data [N, D]``.

    ``max_chunk_rows`` caps the (sample, point) rows per forward pass (None: the memory cap
    alone). ``compile`` runs the random-free part of each pass (:meth:`log_weights_with_noise`)
    under ``torch.compile`` (:func:`benchmark.compilation.compile_pass`): the same noise, the
    same estimate up to float rounding.
    """
    if n_samples < 1:
        raise ValueError(f"eval n_samples must be >= 1, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"eval batch_size must be >= 1, got {batch_size}")
    if not memory_cap_gib > 0:
        raise ValueError(f"eval memory_cap_gib must be > 0, got {memory_cap_gib}")
    was_training = model.training
    model.eval()
    cap = int(memory_cap_gib * BYTES_PER_GIB)
    chunk = samples_per_chunk(model, n_samples, batch_size, cap, max_chunk_rows)
    log_weights = compile_pass(model.log_weights_with_noise, compile)
    per_point = []
    batches = range(0, data.shape[0], batch_size)
    for b, start in enumerate(tqdm(batches, desc=f"log p(x), S={n_samples}", disable=not progress)):
        x = data[start : start + batch_size]
        chunk_bounds = []  # log sum_j w_j per chunk, [B] each
        for c, first in enumerate(range(0, n_samples, chunk)):
            k = min(chunk, n_samples - first)
            generator = make_generator(x.device, seed, "eval", b, c)
            noise = model.draw_noise(x, k, generator)
            begin_graph_step(compile)
            chunk_bounds.append(torch.logsumexp(log_weights(x, noise), 0))
        per_point.append(torch.logsumexp(torch.stack(chunk_bounds), 0) - math.log(n_samples))
    model.train(was_training)
    values = torch.cat(per_point).double().cpu()
    se = values.std().item() / math.sqrt(values.numel()) if values.numel() > 1 else float("nan")
    return LogLikelihoodEstimate(values.mean().item(), se, values, n_samples)
