"""The IWAE model family: one class, flags for random encoder / random decoder weights.

=========  ==============  ==============  ======
model      random encoder  random decoder  k
=========  ==============  ==============  ======
vae        no              no              1
iwae       no              no              25
iwaer      yes             yes             25
iwaerrec   yes             no              25
=========  ==============  ==============  ======

With random weights, ``log w_j = log p(x|z_j,theta_j) + log p(z_j) - log q(z_j|x,phi_j)`` with
``theta_j ~ q(theta)``, ``phi_j ~ q(phi)`` drawn afresh for every importance sample j, so
``E[w_j] = p_Omega(x)`` and ``log (1/k) sum_j w_j`` is the IWAER bound L_k^R.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from benchmark.models.base import ImportanceWeightedModel, Network, network_keys, positive_ints
from benchmark.models.bounds import (
    bernoulli_log_likelihood,
    log_normal_at_noise,
    log_standard_normal,
)
from benchmark.models.gaussian_layers import GaussianLinear, WeightSampling, weight_scales
from benchmark.models.networks import GaussianMLP, SharedHead


class SharedWork(NamedTuple):
    """What passes over the same ``x`` share: the weight scales of the random layers and the
    encoder's noise-free head (:meth:`ImportanceWeightedAutoencoder.shared_head`)."""

    scales: list[tuple[Tensor, Tensor]]
    head: SharedHead


class ImportanceWeightedAutoencoder(ImportanceWeightedModel):
    """Gaussian encoder q(z|x) (mean and log-variance) and Bernoulli decoder p(x|z):
    ``D -> hidden -> 2Z`` and ``Z -> reversed(hidden) -> D``.

    ``network``: ``hidden`` (list of layer widths), ``latent`` (Z), ``activation``.
    ``init_std``: initial std softplus(rho) of q(weights); ``weight_sampling``: ``local`` or
    ``shared`` (:class:`~benchmark.models.gaussian_layers.WeightSampling`).
    """

    def __init__(
        self,
        x_dim: int,
        network: dict[str, Any],
        name: str = "iwae",
        k: int = 25,
        random_encoder: bool = False,
        random_decoder: bool = False,
        init_std: float = 0.05,
        weight_sampling: str = WeightSampling.LOCAL.value,
    ) -> None:
        net = network_keys(dict(network), ("hidden", "latent", "activation"))
        hidden = positive_ints("network.hidden", net["hidden"])
        (latent,) = positive_ints("network.latent", [net["latent"]])
        super().__init__(name, k, x_dim, (latent,))
        self.latent = latent
        common = {
            "activation": net["activation"],
            "init_std": init_std,
            "sampling": weight_sampling,
        }
        self.encoder = GaussianMLP([x_dim, *hidden, 2 * latent], random=random_encoder, **common)
        self.decoder = GaussianMLP(
            [latent, *reversed(hidden), x_dim], random=random_decoder, **common
        )

    def networks(self) -> list[Network]:
        return [
            Network("encoder", self.encoder, input_is_data=True, per_sample_input=False),
            Network("decoder", self.decoder, input_is_data=False, per_sample_input=True),
        ]

    def output_layer(self) -> GaussianLinear:
        return self.decoder.layers[-1]

    def encode(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """q(z|x): mean and log-variance, ``[s, B, Z]`` (s = 1 for a deterministic encoder)."""
        out = self.encoder(x.unsqueeze(0), k, generator)
        return out[..., : self.latent], out[..., self.latent :]

    def decode(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bernoulli logits ``[k, B, D]`` of p(x|z) for ``z [k, B, Z]``."""
        return self.decoder(z, z.shape[0], generator)

    def noise_shapes(self, batch: int, k: int) -> list[tuple[int, ...]]:
        """The latent ``[k, B, Z]`` first, then the encoder's and the decoder's weight noise."""
        return [
            (k, batch, self.latent),
            *self.encoder.noise_shapes(batch, k),
            *self.decoder.noise_shapes(batch, k),
        ]

    def log_weights_with_noise(
        self, x: Tensor, noise: Sequence[Tensor], shared: SharedWork | None = None
    ) -> Tensor:
        """``log w = log p(x|z) + log p(z) - log q(z|x)``, ``z = mean + exp(log_var / 2) eps``,
        with random weights drawn through ``noise`` as the layers do. ``shared``: the
        :meth:`shared_work` of ``x``, for many passes over it; computed here if None."""
        scales = weight_scales(self.random_layers()) if shared is None else shared.scales
        head = None if shared is None else shared.head
        eps, weight_noise = noise[0], noise[1:]
        n_encoder = len(self.encoder.noise_shapes(1, 1))
        n_random = len(self.encoder.random_layers())
        out = self.encoder.with_noise(
            x.unsqueeze(0), weight_noise[:n_encoder], scales[:n_random], head
        )
        mean, log_var = out[..., : self.latent], out[..., self.latent :]
        z = mean + torch.exp(0.5 * log_var) * eps
        logits = self.decoder.with_noise(z, weight_noise[n_encoder:], scales[n_random:])
        log_q = log_normal_at_noise(eps, log_var)
        return bernoulli_log_likelihood(x, logits) + log_standard_normal(z) - log_q

    def shared_work(self, x: Tensor) -> SharedWork:
        """The weight scales and the encoder's work on ``x [B, D]`` that all importance
        samples share: the whole encoder's output ``[1, B, 2Z]`` if deterministic; with
        random weights and local sampling, its first layer's pre-activation mean and std
        ``[1, B, H]``; nothing (``x`` itself) with shared sampling."""
        scales = weight_scales(self.random_layers())
        n_random = len(self.encoder.random_layers())
        return SharedWork(scales, self.encoder.shared_head(x.unsqueeze(0), scales[:n_random]))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[n, D]`` of p(x | z), z ~ N(0, I), one weight draw per image."""
        weight = self.decoder.layers[0].weight
        z = torch.randn(
            (n, 1, self.latent), generator=generator, device=weight.device, dtype=weight.dtype
        )
        return torch.sigmoid(self.decoder(z, n, generator)).squeeze(1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[B, D]`` of p(x | z), z one draw of q(z | x)."""
        mean, log_var = self.encode(x, 1, generator)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.sigmoid(self.decode(mean + torch.exp(0.5 * log_var) * eps, generator))[0]
