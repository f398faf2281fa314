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
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from benchmark.bounds import LOG_2PI, bernoulli_log_likelihood, iwae_bound, log_standard_normal
from benchmark.gaussian_layers import GaussianLinear, WeightSampling, weight_scales
from benchmark.networks import GaussianMLP, SharedHead
from benchmark.noise import draw_normal


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture: ``D -> hidden -> 2Z`` encoder, ``Z -> reversed(hidden) -> D`` decoder."""

    hidden: Sequence[int] = (400,)
    latent: int = 20
    activation: str = "tanh"


@dataclass(frozen=True)
class ModelSpec:
    """Which weights are random, the number of importance samples k, and q(weights)'s init."""

    name: str = "iwae"
    k: int = 25
    random_encoder: bool = False
    random_decoder: bool = False
    init_std: float = 0.05
    weight_sampling: str = WeightSampling.LOCAL.value
    network: NetworkSpec = field(default_factory=NetworkSpec)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"model.k must be >= 1, got {self.k}")
        if not self.init_std > 0:
            raise ValueError(f"model.init_std must be > 0, got {self.init_std}")
        WeightSampling(self.weight_sampling)


class ImportanceWeightedAutoencoder(nn.Module):
    """Gaussian encoder q(z|x) (mean and log-variance) and Bernoulli decoder p(x|z)."""

    def __init__(self, x_dim: int, spec: ModelSpec) -> None:
        super().__init__()
        net = spec.network
        self.spec, self.x_dim, self.latent = spec, x_dim, net.latent
        common = {
            "activation": net.activation,
            "init_std": spec.init_std,
            "sampling": spec.weight_sampling,
        }
        self.encoder = GaussianMLP(
            [x_dim, *net.hidden, 2 * net.latent], random=spec.random_encoder, **common
        )
        self.decoder = GaussianMLP(
            [net.latent, *reversed(net.hidden), x_dim], random=spec.random_decoder, **common
        )

    def random_layers(self) -> list[GaussianLinear]:
        """The random layers, encoder's first (the order :meth:`log_weights_with_noise` takes
        their scales in)."""
        return [*self.encoder.random_layers(), *self.decoder.random_layers()]

    @torch.no_grad()
    def init_output_bias(self, pixel_mean: Tensor) -> None:
        """Decoder output bias = logit of the mean training pixel (Burda et al.)."""
        p = pixel_mean.clamp(1e-3, 1.0 - 1e-3)
        self.decoder.layers[-1].bias.copy_(torch.log(p) - torch.log1p(-p))

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
        """Shapes of all noise of a ``log_weights`` pass: the latent ``[k, B, Z]`` first, then
        the encoder's and the decoder's weight noise."""
        return [
            (k, batch, self.latent),
            *self.encoder.noise_shapes(batch, k),
            *self.decoder.noise_shapes(batch, k),
        ]

    def draw_noise(
        self, x: Tensor, k: int, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """The standard normal noise of ``log_weights(x, k)`` (shapes of :meth:`noise_shapes`)."""
        return draw_normal(self.noise_shapes(x.shape[0], k), generator, x)

    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``log w [k, B]`` for ``x [B, D]``, all noise drawn from ``generator``."""
        return self.log_weights_with_noise(x, self.draw_noise(x, k, generator))

    def log_weights_with_noise(
        self,
        x: Tensor,
        noise: Sequence[Tensor],
        scales: Sequence[tuple[Tensor, Tensor]] | None = None,
        head: SharedHead | None = None,
    ) -> Tensor:
        """:meth:`log_weights` given :meth:`draw_noise`'s tensors and, if at hand, the weight
        scales of :meth:`random_layers` (:func:`weight_scales`; computed here, in one kernel
        call, if None) and :meth:`shared_head` of ``x``: no random draws, static shapes, so
        ``torch.compile`` (and CUDA graphs) can take it whole."""
        if scales is None:
            scales = weight_scales(self.random_layers())
        eps, weight_noise = noise[0], noise[1:]
        n_encoder = len(self.encoder.noise_shapes(1, 1))
        n_random = len(self.encoder.random_layers())
        out = self.encoder.with_noise(
            x.unsqueeze(0), weight_noise[:n_encoder], scales[:n_random], head
        )
        mean, log_var = out[..., : self.latent], out[..., self.latent :]
        z = mean + torch.exp(0.5 * log_var) * eps
        log_q = -0.5 * (eps.square() + log_var + LOG_2PI).sum(-1)
        logits = self.decoder.with_noise(z, weight_noise[n_encoder:], scales[n_random:])
        return bernoulli_log_likelihood(x, logits) + log_standard_normal(z) - log_q

    def shared_head(
        self, x: Tensor, scales: Sequence[tuple[Tensor, Tensor]] | None = None
    ) -> SharedHead:
        """The encoder's work on ``x [B, D]`` that all importance samples share: the whole
        encoder's output ``[1, B, 2Z]`` if deterministic; with random weights and local
        sampling, its first layer's pre-activation mean and std ``[1, B, H]``; nothing (``x``
        itself) with shared sampling. Compute it once for many :meth:`log_weights_with_noise`
        passes over the same ``x``; ``scales`` as there."""
        n_random = len(self.encoder.random_layers())
        return self.encoder.shared_head(
            x.unsqueeze(0), None if scales is None else scales[:n_random]
        )

    def bound(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """One-draw estimate of L_k (or L_k^R) per data point, ``[B]``."""
        return iwae_bound(self.log_weights(x, k, generator))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel means ``[n, D]`` of p(x | z), z ~ N(0, I), one weight draw per image."""
        device = self.decoder.layers[0].weight.device
        z = torch.randn((n, 1, self.latent), generator=generator, device=device)
        return torch.sigmoid(self.decoder(z, n, generator)).squeeze(1)

    def forward_floats(self, k: int, batch: int) -> int:
        """Floats alive at once in a no-grad ``log_weights`` pass of k samples x batch (estimate).

        Per (sample, data point): mean, variance, noise and output of every layer plus the
        likelihood terms; per sample: one weight draw of every shared-sampling random layer.
        """
        layers = [layer for mlp in (self.encoder, self.decoder) for layer in mlp.layers]
        per_pair = 3 * sum(layer.n_out for layer in layers) + 4 * self.latent + 2 * self.x_dim
        per_sample = sum(
            (layer.n_in + 1) * layer.n_out
            for layer in layers
            if layer.random and layer.sampling is WeightSampling.SHARED
        )
        return k * (batch * per_pair + 2 * per_sample)
