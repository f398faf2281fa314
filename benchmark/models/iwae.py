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

from typing import Any

import torch
from torch import Tensor

from benchmark.models.base import ImportanceWeightedModel, network_keys, positive_ints
from benchmark.models.bounds import (
    bernoulli_log_likelihood,
    log_normal_at_noise,
    log_standard_normal,
)
from benchmark.models.gaussian_layers import GaussianLinear, WeightSampling
from benchmark.models.networks import GaussianMLP
from benchmark.randomness.noise import Noise


class ImportanceWeightedAutoencoder(ImportanceWeightedModel):
    """Gaussian encoder q(z|x) (mean and log-variance) and Bernoulli decoder p(x|z):
    ``D -> hidden -> 2Z`` and ``Z -> reversed(hidden) -> D``. Noise: ``z``, ``encoder``,
    ``decoder``.

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
        super().__init__(name, k, x_dim, {"z": latent})
        common = {
            "activation": net["activation"],
            "init_std": init_std,
            "sampling": weight_sampling,
        }
        self.encoder = GaussianMLP([x_dim, *hidden, 2 * latent], random=random_encoder, **common)
        self.decoder = GaussianMLP(
            [latent, *reversed(hidden), x_dim], random=random_decoder, **common
        )

    def output_layer(self) -> GaussianLinear:
        return self.decoder.layers[-1]

    def log_weights_with_noise(self, x: Tensor, noise: Noise) -> Tensor:
        """``log w = log p(x|z) + log p(z) - log q(z|x)``, ``z = mean + exp(log_var / 2) eps``,
        the networks' random weights drawn through their noise."""
        eps = noise["z"]
        mean, log_var = self.encoder(x.unsqueeze(0), noise["encoder"]).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * log_var) * eps
        logits = self.decoder(z, noise["decoder"])
        log_q = log_normal_at_noise(eps, log_var)
        return bernoulli_log_likelihood(x, logits) + log_standard_normal(z) - log_q

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[n, D]`` of p(x | z), z ~ N(0, I), one weight draw per image."""
        weight = self.decoder.layers[0].weight
        z = torch.randn(
            (n, 1, self.latent_sizes["z"]),
            generator=generator,
            device=weight.device,
            dtype=weight.dtype,
        )
        return torch.sigmoid(self.decoder.sampled(z, n, generator)).squeeze(1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[B, D]`` of p(x | z), z one draw of q(z | x)."""
        mean, log_var = self.encoder.sampled(x.unsqueeze(0), 1, generator).chunk(2, dim=-1)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps
        return torch.sigmoid(self.decoder.sampled(z, 1, generator))[0]
