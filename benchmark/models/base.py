"""The interface that training, evaluation, callbacks and the speed harness use.

A model of this suite is defined by its log importance weights: for data ``x [B, D]`` and k
importance samples, ``log w_j = log p(x, h_j) - log q(h_j | x)`` ``[k, B]``, where ``h_j`` is
sample j's latents (and, for random-weight models, its weights). Then
``iwae_bound(log w)`` is the one-draw estimate of L_k (L_k^R with random weights) that
training maximises, and with S samples the same weights give the S-sample log-likelihood
estimate. All randomness of a pass is standard normal noise, a dict named like the model:
``noise[latent]`` ``[k, B, Z]`` for every stochastic layer of :attr:`latent_sizes`, and
``noise[network][i]`` for layer i of every network of :meth:`networks` (its
:meth:`~benchmark.models.gaussian_layers.GaussianLinear.noise_shapes`). It is drawn in one
buffer, so a pass given its noise is deterministic and compiles whole.

A new model subclasses :class:`ImportanceWeightedModel`, builds its networks from
:class:`~benchmark.models.networks.GaussianMLP` as attributes, and is named in a config of
``conf/model/`` by ``_target_``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.models.bounds import iwae_bound
from benchmark.models.gaussian_layers import GaussianLinear
from benchmark.models.networks import GaussianMLP
from benchmark.randomness.noise import Noise, draw_normal


class ImportanceWeightedModel(nn.Module, ABC):
    """Base class of the models: ``log_weights(x, k) -> [k, B]``, sampling and reconstruction.

    ``name`` labels results, ``k`` is the number of importance samples in training, ``x_dim``
    the pixels, ``latent_sizes`` the width of each stochastic layer by its noise's name;
    subclasses implement the abstract methods.
    """

    def __init__(self, name: str, k: int, x_dim: int, latent_sizes: Mapping[str, int]) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"model.k must be >= 1, got {k}")
        self.name, self.k, self.x_dim = name, k, x_dim
        self.latent_sizes = dict(latent_sizes)

    @abstractmethod
    def log_weights_with_noise(self, x: Tensor, noise: Noise) -> Tensor:
        """``log w [k, B]`` for ``x [B, D]`` given the noise of :meth:`noise_shapes`; no
        random draws."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[n, D]`` of p(x | latents), latents drawn from the prior (and one
        weight draw per image for random weights)."""

    @abstractmethod
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[B, D]`` of p(x | h), h one draw of q(h | x)."""

    @abstractmethod
    def output_layer(self) -> GaussianLinear:
        """The layer whose outputs are the Bernoulli logits of the pixels."""

    def networks(self) -> dict[str, GaussianMLP]:
        """The model's networks by attribute name, in the order they were built."""
        return {name: m for name, m in self.named_children() if isinstance(m, GaussianMLP)}

    def noise_shapes(self, batch: int, k: int) -> dict[str, Any]:
        """Shapes of all standard normal noise of a pass of k samples over ``batch`` points:
        the latents' ``[k, B, Z]``, then each network's layers'."""
        latents = {name: (k, batch, size) for name, size in self.latent_sizes.items()}
        networks = {name: mlp.noise_shapes(batch, k) for name, mlp in self.networks().items()}
        return {**latents, **networks}

    @torch.no_grad()
    def init_output_bias(self, pixel_mean: Tensor) -> None:
        """Output bias = logit of the mean training pixel ``[D]`` (Burda et al.)."""
        p = pixel_mean.clamp(1e-3, 1.0 - 1e-3)
        self.output_layer().bias.copy_(torch.log(p) - torch.log1p(-p))

    def gaussian_layers(self) -> list[tuple[str, GaussianLinear]]:
        """Every :class:`GaussianLinear` with a short name (``encoder.0``, ...)."""
        return [
            (name.replace(".layers.", "."), module)
            for name, module in self.named_modules()
            if isinstance(module, GaussianLinear)
        ]

    def draw_noise(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Noise:
        """The standard normal noise of a pass over ``x`` (shapes of :meth:`noise_shapes`)."""
        return draw_normal(self.noise_shapes(x.shape[0], k), generator, x)

    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``log w [k, B]`` for ``x [B, D]``, all noise drawn from ``generator``."""
        return self.log_weights_with_noise(x, self.draw_noise(x, k, generator))

    def bound(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """One-draw estimate of L_k (L_k^R with random weights) per data point, ``[B]``."""
        return iwae_bound(self.log_weights(x, k, generator))


def network_keys(network: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    """``network`` checked to hold exactly the keys ``required``; the error names the others."""
    missing = [key for key in required if key not in network]
    unknown = [key for key in network if key not in required]
    if missing or unknown:
        raise ValueError(
            f"network needs the keys {', '.join(required)}"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return network


def positive_ints(key: str, value: Any) -> list[int]:
    """``value`` as a list of positive integers; the error names ``key``."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if values is None or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(f"{key} must be a list of positive integers, got {value!r}")
    return values
