"""Multilayer perceptrons built from :class:`GaussianLinear` layers (random or deterministic)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.models.gaussian_layers import GaussianLinear, LayerNoise, WeightSampling
from benchmark.randomness.noise import draw_normal

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "softplus": F.softplus,
}


class GaussianMLP(nn.Module):
    """``sizes[0] -> ... -> sizes[-1]``: activation after every layer but the last.

    ``forward(h [s, B, sizes[0]], noise) -> [k or s, B, sizes[-1]]``, ``noise`` one
    :class:`~benchmark.models.gaussian_layers.LayerNoise` per layer; with random weights every
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
                f"network.activation must be one of {', '.join(sorted(ACTIVATIONS))}; "
                f"got {activation!r}"
            )
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(
            GaussianLinear(n_in, n_out, random=random, init_std=init_std, sampling=sampling)
            for n_in, n_out in itertools.pairwise(sizes)
        )

    def noise_shapes(self, batch: int, k: int) -> list[dict[str, tuple[int, ...]]]:
        """The noise of every layer, in order (:meth:`GaussianLinear.noise_shapes`)."""
        return [layer.noise_shapes(batch, k) for layer in self.layers]

    def forward(self, h: Tensor, noise: Sequence[LayerNoise]) -> Tensor:
        last = len(self.layers) - 1
        for i, (layer, layer_noise) in enumerate(zip(self.layers, noise, strict=True)):
            h = layer(h, layer_noise)
            if i < last:
                h = self.activation(h)
        return h

    def sampled(self, h: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """:meth:`forward` with k fresh weight draws from ``generator``."""
        return self(h, draw_normal(self.noise_shapes(h.shape[1], k), generator, h))
