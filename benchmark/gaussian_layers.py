"""Linear layers with deterministic or mean-field Gaussian weights.

All layers map ``h: [s, B, n_in] -> [k, B, n_out]`` where ``s`` is 1 (input shared by all
importance samples) or ``k`` (one input per sample). A leading sample dimension of 1 is
broadcast, so the encoder's first layer computes everything that does not depend on the
weight noise once per data point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.logistic import softplus
from benchmark.noise import draw_normal


class WeightSampling(str, Enum):
    """How the random weights of a :class:`GaussianLinear` layer are drawn.

    ``local``: independent weights for every (data point, importance sample) pair, drawn
    exactly and cheaply through the pre-activations (local reparameterization):
    ``a ~ N(h M + m, (h*h)(S*S) + s*s)`` independently per output unit.
    ``shared``: one weight draw per importance sample, shared across the minibatch,
    applied with a batched matmul ``h[j] @ W_j``.
    """

    LOCAL = "local"
    SHARED = "shared"


def inverse_softplus(y: float) -> float:
    """x such that softplus(x) = y, for y > 0 (stable for small and large y)."""
    if y <= 0:
        raise ValueError(f"inverse_softplus needs a positive value, got {y}")
    return y + math.log(-math.expm1(-y))


class GaussianLinear(nn.Module):
    """``a = h W + b`` with fixed ``W, b`` or with ``W ~ N(M, S^2)``, ``b ~ N(m, s^2)``.

    The standard deviations are ``softplus(rho)`` so they stay positive; ``rho`` starts at
    ``softplus^{-1}(init_std)``. Means use Glorot-uniform initialisation and zero biases.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        random: bool = False,
        init_std: float = 0.05,
        sampling: WeightSampling | str = WeightSampling.LOCAL,
    ) -> None:
        super().__init__()
        self.n_in, self.n_out, self.random = n_in, n_out, random
        self.sampling = WeightSampling(sampling)
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.xavier_uniform_(self.weight)
        if random:
            if not init_std > 0:
                raise ValueError(f"init_std must be positive, got {init_std}")
            rho = inverse_softplus(init_std)
            self.weight_rho = nn.Parameter(torch.full((n_in, n_out), rho))
            self.bias_rho = nn.Parameter(torch.full((n_out,), rho))

    def weight_std(self) -> Tensor:
        """S = softplus(rho_W), shape [n_in, n_out]."""
        return softplus(self.weight_rho)

    def bias_std(self) -> Tensor:
        """s = softplus(rho_b), shape [n_out]."""
        return softplus(self.bias_rho)

    def noise_shapes(self, batch: int, k: int) -> list[tuple[int, ...]]:
        """Shapes of the standard normal noise :meth:`with_noise` takes: none if
        deterministic; ``[k, B, n_out]`` with local sampling; ``[k, n_in, n_out]`` and
        ``[k, 1, n_out]`` (weights, biases) with shared sampling."""
        if not self.random:
            return []
        if self.sampling is WeightSampling.LOCAL:
            return [(k, batch, self.n_out)]
        return [(k, self.n_in, self.n_out), (k, 1, self.n_out)]

    def forward(self, h: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Pre-activations ``[k, B, n_out]`` (``[1, B, n_out]`` if deterministic and s = 1)."""
        return self.with_noise(h, draw_normal(self.noise_shapes(h.shape[1], k), generator, h))

    def with_noise(self, h: Tensor, noise: Sequence[Tensor]) -> Tensor:
        """:meth:`forward` given its standard normal ``noise`` (shapes of :meth:`noise_shapes`);
        no random draws, so it compiles into one graph."""
        if not self.random:
            return F.linear(h, self.weight.t(), self.bias)
        if self.sampling is WeightSampling.LOCAL:
            (eps,) = noise
            mean = F.linear(h, self.weight.t(), self.bias)
            var = F.linear(h * h, self.weight_std().square().t(), self.bias_std().square())
            return torch.addcmul(mean, var.sqrt(), eps)
        eps_w, eps_b = noise
        weights = torch.addcmul(self.weight, self.weight_std(), eps_w)
        biases = torch.addcmul(self.bias, self.bias_std(), eps_b)
        return torch.baddbmm(biases, h.expand(eps_w.shape[0], *h.shape[1:]), weights)

    def extra_repr(self) -> str:
        kind = f"random, sampling={self.sampling.value}" if self.random else "deterministic"
        return f"n_in={self.n_in}, n_out={self.n_out}, {kind}"
