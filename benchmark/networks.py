"""Multilayer perceptrons built from :class:`GaussianLinear` layers (random or deterministic)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.gaussian_layers import GaussianLinear, WeightSampling

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
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

    def forward(self, h: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h, k, generator)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h
