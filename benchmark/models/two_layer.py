"""IWAE with two stochastic layers (Burda et al., 2015, section 5), with the same flags for
random encoder / random decoder weights as the one-layer family.

Generative model p(z2) p(z1|z2) p(x|z1), recognition model q(z1|x) q(z2|z1), all Gaussian
but p(x|z1) (Bernoulli). Burda et al.'s architecture: x -> 2 x 200 tanh -> z1 (100) ->
2 x 100 tanh -> z2 (50), the decoder mirrored. For importance sample j:

    log w_j = log p(x|z1_j) + log p(z1_j|z2_j) + log p(z2_j) - log q(z1_j|x) - log q(z2_j|z1_j)

with z1_j ~ q(z1|x), z2_j ~ q(z2|z1_j) and, with random weights, every network's weights
drawn afresh for sample j, as in :mod:`benchmark.models.iwae`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from benchmark.models.base import ImportanceWeightedModel, network_keys, positive_ints
from benchmark.models.bounds import (
    bernoulli_log_likelihood,
    log_normal_at_noise,
    log_normal_diag,
    log_standard_normal,
)
from benchmark.models.gaussian_layers import GaussianLinear, WeightSampling
from benchmark.models.networks import GaussianMLP
from benchmark.randomness.noise import Noise


def _halves(out: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and log-variance: the two halves of a Gaussian network's last dimension."""
    return out.chunk(2, dim=-1)


class TwoStochasticLayerIWAE(ImportanceWeightedModel):
    """``network``: ``hidden`` = [widths below z1, widths between z1 and z2], ``latent`` =
    [Z1, Z2], ``activation``. Networks (in pass order): ``encoder1`` x -> 2 Z1,
    ``encoder2`` z1 -> 2 Z2, ``decoder2`` z2 -> 2 Z1 (mean and log-variance of p(z1|z2)),
    ``decoder1`` z1 -> x (Bernoulli logits). The encoders are random with
    ``random_encoder``, the decoders with ``random_decoder``. Noise: ``z1``, ``z2`` and the
    four networks'."""

    def __init__(
        self,
        x_dim: int,
        network: dict[str, Any],
        name: str = "iwae_2l",
        k: int = 25,
        random_encoder: bool = False,
        random_decoder: bool = False,
        init_std: float = 0.05,
        weight_sampling: str = WeightSampling.LOCAL.value,
    ) -> None:
        net = network_keys(dict(network), ("hidden", "latent", "activation"))
        stages = net["hidden"]
        if (
            not isinstance(stages, Sequence)
            or len(stages) != 2
            or not all(isinstance(stage, Sequence) for stage in stages)
        ):
            raise ValueError(
                "network.hidden must be two lists of widths (below z1, between z1 and z2) for "
                f"two stochastic layers, got {stages!r}: use network=burda_two_layer"
            )
        h1, h2 = (positive_ints(f"network.hidden[{i}]", stage) for i, stage in enumerate(stages))
        latent = positive_ints("network.latent", net["latent"])
        if len(latent) != 2:
            raise ValueError(f"network.latent must be [Z1, Z2], got {net['latent']!r}")
        z1, z2 = latent
        super().__init__(name, k, x_dim, {"z1": z1, "z2": z2})
        common = {
            "activation": net["activation"],
            "init_std": init_std,
            "sampling": weight_sampling,
        }
        self.encoder1 = GaussianMLP([x_dim, *h1, 2 * z1], random=random_encoder, **common)
        self.encoder2 = GaussianMLP([z1, *h2, 2 * z2], random=random_encoder, **common)
        self.decoder2 = GaussianMLP([z2, *reversed(h2), 2 * z1], random=random_decoder, **common)
        self.decoder1 = GaussianMLP([z1, *reversed(h1), x_dim], random=random_decoder, **common)

    def output_layer(self) -> GaussianLinear:
        return self.decoder1.layers[-1]

    def log_weights_with_noise(self, x: Tensor, noise: Noise) -> Tensor:
        eps1, eps2 = noise["z1"], noise["z2"]
        mean1, log_var1 = _halves(self.encoder1(x.unsqueeze(0), noise["encoder1"]))
        z1 = mean1 + torch.exp(0.5 * log_var1) * eps1
        mean2, log_var2 = _halves(self.encoder2(z1, noise["encoder2"]))
        z2 = mean2 + torch.exp(0.5 * log_var2) * eps2
        prior_mean1, prior_log_var1 = _halves(self.decoder2(z2, noise["decoder2"]))
        logits = self.decoder1(z1, noise["decoder1"])
        log_p = (
            bernoulli_log_likelihood(x, logits)
            + log_normal_diag(z1, prior_mean1, prior_log_var1)
            + log_standard_normal(z2)
        )
        return log_p - log_normal_at_noise(eps1, log_var1) - log_normal_at_noise(eps2, log_var2)

    def _decode_from_z1(self, z1: Tensor, generator: torch.Generator | None) -> Tensor:
        """Pixel means ``[B, D]`` of p(x | z1) for ``z1 [n, 1, Z1]`` or ``[1, B, Z1]``."""
        return torch.sigmoid(self.decoder1.sampled(z1, z1.shape[0], generator))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[n, D]`` of p(x | z1), z1 ~ p(z1 | z2), z2 ~ N(0, I)."""
        weight = self.decoder2.layers[0].weight
        like = {"device": weight.device, "dtype": weight.dtype}
        z2 = torch.randn((n, 1, self.latent_sizes["z2"]), generator=generator, **like)
        mean1, log_var1 = _halves(self.decoder2.sampled(z2, n, generator))
        eps = torch.randn(mean1.shape, generator=generator, **like)
        return self._decode_from_z1(mean1 + torch.exp(0.5 * log_var1) * eps, generator).squeeze(1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[B, D]`` of p(x | z1), z1 one draw of q(z1 | x)."""
        mean1, log_var1 = _halves(self.encoder1.sampled(x.unsqueeze(0), 1, generator))
        eps = torch.randn(mean1.shape, generator=generator, device=mean1.device, dtype=mean1.dtype)
        return self._decode_from_z1(mean1 + torch.exp(0.5 * log_var1) * eps, generator)[0]
