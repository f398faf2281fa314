"""Minimal matmul FLOP counts of a model's pass (a multiply-add counts 2).

Only matmuls are counted, each once, at the smallest row count the math allows:

- a layer whose input is the same for all k samples (the encoder's first layer on x, and
  deterministic layers before any randomness) runs on the B data points only (which
  inputs differ between samples: :meth:`~benchmark.models.base.ImportanceWeightedModel.
  networks`); with local sampling a random layer's mean ``h M`` and variance
  ``(h*h)(S*S)`` are per data point too, and only the noise is per sample;
- every other layer runs on the N = k B (sample, data point) rows;
- with local sampling a random layer costs two matmuls (mean and variance), with shared
  sampling one batched matmul per sample on all N rows (the weights differ per sample);
- backward: every matmul needs its weight gradient, and its input gradient except where the
  input is the data x.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.gaussian_layers import WeightSampling


@dataclass(frozen=True)
class LayerMatmuls:
    """One layer's matmuls in a forward pass: ``count`` products ``rows x n_in x n_out``."""

    name: str
    rows: int
    n_in: int
    n_out: int
    count: int
    input_is_data: bool

    @property
    def forward(self) -> int:
        return 2 * self.count * self.rows * self.n_in * self.n_out

    @property
    def backward(self) -> int:
        grads = 1 if self.input_is_data else 2
        return grads * self.forward


def layer_matmuls(model: ImportanceWeightedModel, batch: int, k: int) -> list[LayerMatmuls]:
    """The matmuls of one ``log_weights`` pass on ``batch`` points with ``k`` samples."""
    out = []
    for network in model.networks():
        per_sample = network.per_sample_input  # does the current activation differ between samples?
        for i, layer in enumerate(network.mlp.layers):
            shared = layer.random and layer.sampling is WeightSampling.SHARED
            rows = batch * k if (per_sample or shared) else batch
            count = 2 if layer.random and not shared else 1
            out.append(
                LayerMatmuls(
                    f"{network.name}.{i}",
                    rows,
                    layer.n_in,
                    layer.n_out,
                    count,
                    input_is_data=network.input_is_data and i == 0,
                )
            )
            per_sample = per_sample or layer.random
    return out


def forward_flops(model: ImportanceWeightedModel, batch: int, k: int) -> int:
    return sum(m.forward for m in layer_matmuls(model, batch, k))


def train_step_flops(model: ImportanceWeightedModel, batch: int, k: int) -> int:
    """Forward plus backward matmul FLOPs of one training step (Adam's update is not a matmul)."""
    return sum(m.forward + m.backward for m in layer_matmuls(model, batch, k))
