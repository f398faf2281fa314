"""Multilayer perceptrons built from :class:`GaussianLinear` layers (random or deterministic)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark import kernels
from benchmark.models.gaussian_layers import GaussianLinear, WeightSampling, weight_scales
from benchmark.randomness.noise import draw_normal


def tanh(h: Tensor) -> Tensor:
    """tanh, from the CPU kernels where they are active (:func:`benchmark.kernels.tanh`)."""
    return kernels.tanh(h) if kernels.active(h.device) else torch.tanh(h)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": tanh,
    "relu": F.relu,
    "softplus": F.softplus,
}


class SharedHead(NamedTuple):
    """The noise-free start of a pass (:meth:`GaussianMLP.shared_head`). Without ``std``:
    ``h`` is the input of layer ``start`` (after its predecessor's activation), or the MLP's
    output if ``start`` is the number of layers. With ``std``: ``h`` and ``std`` are the mean
    and std of layer ``start``'s pre-activations, ``[1, B, n_out]``, whose sample j is
    ``h + std * eps_j``."""

    start: int
    h: Tensor
    std: Tensor | None


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
                f"network.activation must be one of {', '.join(sorted(ACTIVATIONS))}; "
                f"got {activation!r}"
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
        head: SharedHead | None = None,
    ) -> Tensor:
        """:meth:`forward` given the standard normal noise of :meth:`noise_shapes`, the weight
        scales of :meth:`random_layers` (:func:`weight_scales`, one kernel call for all of
        them; computed here if None) and, if at hand, :meth:`shared_head` of ``h`` (for many
        passes over the same input; it does not speed up a single pass). With a head the pass
        starts from it rather than from ``h``; ``noise`` and ``scales`` still cover all layers
        (the head's layers have none)."""
        scales = list(weight_scales(self.random_layers()) if scales is None else scales)
        if head is None:  # the layers' own fused forward and backward take all of it
            head = SharedHead(0, h, None)
        elif head.h.shape[1] != h.shape[1]:
            raise ValueError(
                f"the shared head is for a batch of {head.h.shape[1]} rows, the input has "
                f"{h.shape[1]}: compute shared_head for this input"
            )
        h = head.h
        noise_start = scale_index = 0  # the head's layers are deterministic: no noise, no scales
        for i in range(head.start, len(self.layers)):
            layer = self.layers[i]
            count = len(layer.noise_shapes(1, 1))
            layer_noise = noise[noise_start : noise_start + count]
            if i == head.start and head.std is not None:
                h = torch.addcmul(h, head.std, layer_noise[0])
            else:
                h = layer.with_noise(h, layer_noise, scales[scale_index] if layer.random else None)
            noise_start += count
            scale_index += int(layer.random)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h

    def shared_head(
        self, h: Tensor, scales: Sequence[tuple[Tensor, Tensor]] | None = None
    ) -> SharedHead:
        """The part of a pass over ``h [s, B, n]`` that does not depend on the noise: the
        leading deterministic layers and, when their output is shared by all samples (s = 1)
        and the next layer is random with local sampling, that layer's pre-activation mean
        and std (one row per data point, which every pass would compute again). ``scales``
        as in :meth:`with_noise`."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if layer.random:
                if layer.sampling is WeightSampling.LOCAL and h.shape[0] == 1:
                    first_scales = None if scales is None else scales[0]  # the first random layer
                    return SharedHead(i, *layer.moments(h, first_scales))
                return SharedHead(i, h, None)
            h = layer.with_noise(h, [])
            if i < last:
                h = self.activation(h)
        return SharedHead(len(self.layers), h, None)
