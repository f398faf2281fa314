"""Straightforward implementations the speed benchmark compares against (never used to train).

- :class:`PlainIWAE`: an IWAE written the obvious way with ``nn.Linear``,
  ``torch.distributions.Normal`` and ``binary_cross_entropy_with_logits``.
- :class:`LoopIWAER`: an IWAER that loops over the k importance samples and, for each, draws a
  full weight matrix of every layer (one draw per forward call, shared by the minibatch), which
  is what wrapping a standard Bayesian-layer library such as bayesian-torch gives.

Both compute the same bound as :class:`benchmark.models.iwae.ImportanceWeightedAutoencoder`
(L_k and L_k^R with shared-per-sample weights), ``[B]`` per data point.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Normal
from torch.nn import functional as F

from benchmark.models.gaussian_layers import inverse_softplus
from benchmark.models.networks import ACTIVATIONS


class _MLP(nn.Module):
    """``layer`` between consecutive ``sizes``, ``activation`` after all but the last."""

    def __init__(
        self, sizes: Sequence[int], activation: str, layer: type[nn.Module], **kwargs: float
    ) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(layer(a, b, **kwargs) for a, b in itertools.pairwise(sizes))

    def forward(self, h: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        return h


def _log_weights(x: Tensor, logits: Tensor, z: Tensor, q: Normal) -> Tensor:
    """log p(x|z) + log p(z) - log q(z|x), ``[k, B]``."""
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )
    log_pz = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    return log_px + log_pz - q.log_prob(z).sum(-1)


class PlainIWAE(nn.Module):
    """IWAE: encoder run once on x, k reparameterized latents, decoder on all k B of them."""

    def __init__(
        self, x_dim: int, hidden: Sequence[int], latent: int, activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = _MLP([x_dim, *hidden, 2 * latent], activation, nn.Linear)
        self.decoder = _MLP([latent, *reversed(hidden), x_dim], activation, nn.Linear)

    def bound(self, x: Tensor, k: int) -> Tensor:
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        q = Normal(mean, torch.exp(0.5 * log_var))
        z = q.rsample((k,))
        log_w = _log_weights(x, self.decoder(z), z, q)
        return torch.logsumexp(log_w, dim=0) - math.log(k)


class BayesLinear(nn.Module):
    """``h W^T + b`` with ``W ~ N(M, softplus(rho)^2)`` drawn anew at every call."""

    def __init__(self, n_in: int, n_out: int, init_std: float = 0.05) -> None:
        super().__init__()
        rho = inverse_softplus(init_std)
        self.weight_mu = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_out, n_in)))
        self.weight_rho = nn.Parameter(torch.full((n_out, n_in), rho))
        self.bias_mu = nn.Parameter(torch.zeros(n_out))
        self.bias_rho = nn.Parameter(torch.full((n_out,), rho))

    def forward(self, h: Tensor) -> Tensor:
        weight = self.weight_mu + F.softplus(self.weight_rho) * torch.randn_like(self.weight_mu)
        bias = self.bias_mu + F.softplus(self.bias_rho) * torch.randn_like(self.bias_mu)
        return F.linear(h, weight, bias)


class LoopIWAER(nn.Module):
    """IWAER: for each of the k samples, fresh encoder and decoder weights, then one latent."""

    def __init__(
        self,
        x_dim: int,
        hidden: Sequence[int],
        latent: int,
        activation: str = "tanh",
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = _MLP(
            [x_dim, *hidden, 2 * latent], activation, BayesLinear, init_std=init_std
        )
        self.decoder = _MLP(
            [latent, *reversed(hidden), x_dim], activation, BayesLinear, init_std=init_std
        )

    def bound(self, x: Tensor, k: int) -> Tensor:
        log_ws = []
        for _ in range(k):
            mean, log_var = self.encoder(x).chunk(2, dim=-1)
            q = Normal(mean, torch.exp(0.5 * log_var))
            z = q.rsample()
            log_ws.append(_log_weights(x, self.decoder(z), z, q))
        return torch.logsumexp(torch.stack(log_ws), dim=0) - math.log(k)
