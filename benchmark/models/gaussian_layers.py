"""Linear layers with deterministic or mean-field Gaussian weights.

A layer maps ``h: [s, B, n_in] -> [k, B, n_out]`` where ``s`` is 1 (input shared by all
importance samples, broadcast) or ``k`` (one input per sample), given its standard normal
noise, a dict named by what it perturbs (:meth:`GaussianLinear.noise_shapes`).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LayerNoise = dict[str, Tensor]


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

    The standard deviations are ``S = softplus(rho_W)``, ``s = softplus(rho_b)`` so they stay
    positive; ``rho`` starts at ``softplus^{-1}(init_std)``. Means use Glorot-uniform
    initialisation and zero biases.
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
        """S = softplus(rho_W), ``[n_in, n_out]``."""
        return F.softplus(self.weight_rho)

    def bias_std(self) -> Tensor:
        """s = softplus(rho_b), ``[n_out]``."""
        return F.softplus(self.bias_rho)

    def noise_shapes(self, batch: int, k: int) -> dict[str, tuple[int, ...]]:
        """The standard normal noise :meth:`forward` takes: none if deterministic; the
        ``pre_activation`` noise ``[k, B, n_out]`` with local sampling; the ``weight``
        ``[k, n_in, n_out]`` and ``bias`` ``[k, 1, n_out]`` noise with shared sampling."""
        if not self.random:
            return {}
        if self.sampling is WeightSampling.LOCAL:
            return {"pre_activation": (k, batch, self.n_out)}
        return {"weight": (k, self.n_in, self.n_out), "bias": (k, 1, self.n_out)}

    def moments(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The local reparameterization: mean ``h M + m`` and std
        ``sqrt((h*h)(S*S) + s*s)`` of the pre-activations ``[s, B, n_out]`` of a random layer,
        which are Gaussian and independent per output unit."""
        mean = torch.matmul(h, self.weight) + self.bias
        variance = torch.matmul(h * h, self.weight_std().square()) + self.bias_std().square()
        return mean, variance.sqrt()

    def forward(self, h: Tensor, noise: LayerNoise) -> Tensor:
        """Pre-activations ``[k, B, n_out]`` (``[s, B, n_out]`` if deterministic) given the
        noise of :meth:`noise_shapes`; no random draws, so the pass compiles whole.

        Local sampling: ``a = h M + m + sqrt((h*h)(S*S) + s*s) * eps``. Shared sampling:
        ``a_j = h_j W_j + b_j`` with ``W_j = M + S * eps_j``, ``b_j = m + s * e_j``.
        """
        if not self.random:
            return torch.matmul(h, self.weight) + self.bias
        if self.sampling is WeightSampling.LOCAL:
            mean, std = self.moments(h)
            return mean + std * noise["pre_activation"]
        weights = self.weight + self.weight_std() * noise["weight"]
        biases = self.bias + self.bias_std() * noise["bias"]
        return torch.baddbmm(biases, h.expand(weights.shape[0], *h.shape[1:]), weights)

    def extra_repr(self) -> str:
        kind = f"random, sampling={self.sampling.value}" if self.random else "deterministic"
        return f"n_in={self.n_in}, n_out={self.n_out}, {kind}"
