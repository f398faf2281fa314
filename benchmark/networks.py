"""Multilayer perceptrons built from :class:`GaussianLinear` layers (random or deterministic)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark import logistic
from benchmark.gaussian_layers import GaussianLinear, WeightSampling, weight_scales
from benchmark.noise import draw_normal

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": logistic.tanh,
    "relu": F.relu,
    "softplus": F.softplus,
}


class GaussianMLP(nn.Module):
    """``sizes[0] -> ... -> sizes[-1]``: activation after every layer but the last.

    ``forward(h [s, B, sizes[0]], k) -> [k or s, B, sizes[-1]]``; with random weights every
    importance sample j (and, with local sampling, every data point) gets its own weights.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "tanh",
        random: bool = False,
        init_std: float = 0.05,
        sampling: WeightSampling | str = WeightSampling.LOCAL,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}: choose from {sorted(ACTIVATIONS)}"
            )
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(
            GaussianLinear(n_in, n_out, random=random, init_std=init_std, sampling=sampling)
            for n_in, n_out in itertools.pairwise(sizes)
        )

    def noise_shapes(self, batch: int, k: int) -> list[tuple[int, ...]]:
        """Shapes of the noise of every layer, in order (see GaussianLinear.noise_shapes)."""
        return [shape for layer in self.layers for shape in layer.noise_shapes(batch, k)]

    def forward(self, h: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        return self.with_noise(h, draw_normal(self.noise_shapes(h.shape[1], k), generator, h))

    def random_layers(self) -> list[GaussianLinear]:
        return [layer for layer in self.layers if layer.random]

    def with_noise(
        self,
        h: Tensor,
        noise: Sequence[Tensor],
        scales: Sequence[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """:meth:`forward` given the standard normal noise of :meth:`noise_shapes` and the
        weight scales of :meth:`random_layers` (:func:`weight_scales`, one kernel call for
        all of them; computed here if None)."""
        scales = iter(weight_scales(self.random_layers()) if scales is None else scales)
        start = 0
        for i, layer in enumerate(self.layers):
            count = len(layer.noise_shapes(1, 1))
            layer_scales = next(scales) if layer.random else None
            h = layer.with_noise(h, noise[start : start + count], layer_scales)
            start += count
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h
