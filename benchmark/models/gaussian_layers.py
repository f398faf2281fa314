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

from benchmark import kernels
from benchmark.randomness.noise import draw_normal


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


def _moments(
    h: Tensor, h_squared: Tensor, weight: Tensor, bias: Tensor, weight_var: Tensor, bias_var: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean ``h M + m`` and std ``sqrt((h*h)(S*S) + s*s)`` of the pre-activations ``[s, B, n_out]``
    under local sampling."""
    return F.linear(h, weight.t(), bias), F.linear(h_squared, weight_var.t(), bias_var).sqrt()


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

    @property
    def scale_power(self) -> int:
        """The power p of the stds that :meth:`with_noise` takes: 2 (variances) with local
        sampling, 1 with shared sampling."""
        return 2 if self.sampling is WeightSampling.LOCAL else 1

    def weight_std(self) -> Tensor:
        """S = softplus(rho_W), shape [n_in, n_out]."""
        return weight_scales([self], power=1)[0][0]

    def bias_std(self) -> Tensor:
        """s = softplus(rho_b), shape [n_out]."""
        return weight_scales([self], power=1)[0][1]

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

    def with_noise(
        self,
        h: Tensor,
        noise: Sequence[Tensor],
        scales: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """:meth:`forward` given its standard normal ``noise`` (shapes of :meth:`noise_shapes`)
        and, if at hand, the layer's ``(S^p, s^p)`` from :func:`weight_scales`; no random
        draws, so it compiles into one graph.

        Local sampling: ``a = h M + m + sqrt((h*h)(S*S) + s*s) * eps``. Shared sampling:
        ``a_j = h_j W_j + b_j`` with ``W_j = M + S * eps_j``, ``b_j = m + s * e_j``. Written
        here in plain autograd form; with the CPU fast paths on
        (:func:`benchmark.kernels.active`) the same formula runs with a hand-fused backward.
        """
        if not self.random:
            return F.linear(h, self.weight.t(), self.bias)
        weight_scale, bias_scale = scales if scales is not None else weight_scales([self])[0]
        fused = kernels.active(h.device)
        if self.sampling is WeightSampling.LOCAL:
            (eps,) = noise
            if fused:
                return kernels.local_reparameterization(
                    h, self.weight, self.bias, weight_scale, bias_scale, eps
                )
            mean, std = _moments(h, h * h, self.weight, self.bias, weight_scale, bias_scale)
            return mean + std * eps
        eps_weight, eps_bias = noise
        if fused:
            return kernels.shared_weights(
                h, self.weight, self.bias, weight_scale, bias_scale, eps_weight, eps_bias
            )
        weights = self.weight + weight_scale * eps_weight
        biases = self.bias + bias_scale * eps_bias
        return torch.baddbmm(biases, h.expand(eps_weight.shape[0], *h.shape[1:]), weights)

    def moments(
        self, h: Tensor, scales: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and std ``[s, B, n_out]`` of the pre-activations of a random layer with local
        sampling (``a = mean + std * eps``), given ``(S^2, s^2)`` if at hand; differentiable
        by autograd."""
        if not (self.random and self.sampling is WeightSampling.LOCAL):
            raise ValueError(f"moments needs a random layer with local sampling, got {self}")
        weight_var, bias_var = scales if scales is not None else weight_scales([self])[0]
        return _moments(h, h * h, self.weight, self.bias, weight_var, bias_var)

    def extra_repr(self) -> str:
        kind = f"random, sampling={self.sampling.value}" if self.random else "deterministic"
        return f"n_in={self.n_in}, n_out={self.n_out}, {kind}"


def weight_scales(
    layers: Sequence[GaussianLinear], power: int | None = None
) -> list[tuple[Tensor, Tensor]]:
    """``(S^p, s^p)`` of every layer of ``layers`` (random ones only), S = softplus(rho_W),
    s = softplus(rho_b); p is ``power`` or else each layer's ``scale_power`` (2 with local
    sampling, 1 with shared). With the CPU fast paths on, all of one p come from one
    ``softplus_power`` kernel call."""
    deterministic = [layer for layer in layers if not layer.random]
    if deterministic:
        raise ValueError(f"weight_scales takes random layers only, got {deterministic[0]}")
    powers = [power or layer.scale_power for layer in layers]
    scales: dict[int, tuple[Tensor, Tensor]] = {}
    for p in sorted(set(powers)):
        group = [layer for layer, q in zip(layers, powers, strict=True) if q == p]
        rhos = [r for layer in group for r in (layer.weight_rho, layer.bias_rho)]
        if kernels.active(rhos[0].device):
            values = kernels.softplus_power(rhos, p)
        else:
            values = [F.softplus(r).pow(p) for r in rhos]
        for i, layer in enumerate(group):
            scales[id(layer)] = values[2 * i], values[2 * i + 1]
    return [scales[id(layer)] for layer in layers]
