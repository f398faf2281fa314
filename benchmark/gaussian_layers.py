"""Linear layers with deterministic or mean-field Gaussian weights.

All layers map ``h: [s, B, n_in] -> [k, B, n_out]`` where ``s`` is 1 (input shared by all
importance samples) or ``k`` (one input per sample). A leading sample dimension of 1 is
broadcast, so the encoder's first layer computes everything that does not depend on the
weight noise once per data point.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmark.logistic import softplus, softplus_power
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


AutocastState = tuple[str, torch.dtype] | None


def _autocast_state(device: str) -> AutocastState:
    """The autocast (device type, dtype) active in a forward, for its backward to replay."""
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return device, torch.get_autocast_dtype(device)
    return None


def _replay_autocast(state: AutocastState) -> contextlib.AbstractContextManager:
    """Autocast as in the forward (autograd runs the backward of autocast ops in their
    forward dtype; hand-written backwards must do the same to keep bf16's speed)."""
    return torch.autocast(state[0], dtype=state[1]) if state else contextlib.nullcontext()


def _moments(
    h: Tensor, h_squared: Tensor, weight: Tensor, bias: Tensor, weight_var: Tensor, bias_var: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean ``h M + m`` and std ``sqrt((h*h)(S*S) + s*s)`` of the pre-activations ``[s, B, n_out]``
    under local sampling."""
    return F.linear(h, weight.t(), bias), F.linear(h_squared, weight_var.t(), bias_var).sqrt_()


class _LocalReparameterization(torch.autograd.Function):
    """``a = h M + m + sqrt((h*h)(S*S) + s*s) * eps`` with a hand-fused backward.

    ``h [s, B, n_in]`` (s = 1: shared by all samples), ``eps [k, B, n_out]``, ``a [k, B, n_out]``;
    the weight variances come in as ``S*S``, ``s*s``. With ``u = g eps / std`` (g = dL/da):
    dL/dvar = u / 2, so dL/dh = g M^T + h * (u (S*S)^T) (one addmm into the second term),
    dL/dM = h^T g, dL/d(S*S) = (h*h)^T u / 2, and the bias gradients are the sums of g and u / 2.
    Autograd's chain for the same formula allocates and passes over [k, B, n] tensors about
    twice as often. Backward runs under the forward's autocast state, as autograd's would.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        h: Tensor,
        weight: Tensor,
        bias: Tensor,
        weight_var: Tensor,
        bias_var: Tensor,
        eps: Tensor,
    ) -> Tensor:
        h_squared = h * h
        mean, std = _moments(h, h_squared, weight, bias, weight_var, bias_var)
        out = torch.addcmul(mean, std, eps)
        ctx.save_for_backward(h, h_squared, weight, weight_var, std, eps)
        ctx.autocast = _autocast_state(h.device.type)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h, h_squared, weight, weight_var, std, eps = ctx.saved_tensors
        with _replay_autocast(ctx.autocast):
            if h.shape[0] != grad.shape[0]:  # the input (and mean, std) broadcast over samples:
                u = (grad * eps).sum(0, keepdim=True).div_(std)  # divide once per data point
                grad = grad.sum(0, keepdim=True)
            else:
                u = (grad * eps).div_(std)
            g2d, u2d = grad.reshape(-1, grad.shape[-1]), u.reshape(-1, u.shape[-1])
            h2d, h_squared2d = h.reshape(-1, h.shape[-1]), h_squared.reshape(-1, h.shape[-1])
            grad_h = None
            if ctx.needs_input_grad[0]:
                via_var = F.linear(u2d, weight_var).mul_(h2d)
                grad_h = torch.addmm(via_var, g2d, weight.t()).view(h.shape)
            grad_weight = h2d.t().mm(g2d) if ctx.needs_input_grad[1] else None
            grad_bias = g2d.sum(0) if ctx.needs_input_grad[2] else None
            grad_weight_var = h_squared2d.t().mm(u2d).mul_(0.5) if ctx.needs_input_grad[3] else None
            grad_bias_var = u2d.sum(0).mul_(0.5) if ctx.needs_input_grad[4] else None
        return grad_h, grad_weight, grad_bias, grad_weight_var, grad_bias_var, None


class _SharedWeights(torch.autograd.Function):
    """``a_j = h_j W_j + b_j`` with ``W_j = M + S * eps_j``, ``b_j = m + s * e_j`` for every
    importance sample j, with a hand-fused backward.

    ``h [s, B, n_in]`` (s = 1: shared by all samples), ``eps [k, n_in, n_out]``,
    ``e [k, 1, n_out]``, ``a [k, B, n_out]``. With G_j = h_j^T g_j (g = dL/da): dL/dM = sum_j G_j
    and dL/dS = sum_j G_j * eps_j, taken in place on the one [k, n_in, n_out] buffer of the
    G_j (autograd's addcmul backward allocates the product and sums it separately);
    dL/dh_j = g_j W_j^T. Backward runs under the forward's autocast state.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        h: Tensor,
        weight: Tensor,
        bias: Tensor,
        weight_std: Tensor,
        bias_std: Tensor,
        eps_weight: Tensor,
        eps_bias: Tensor,
    ) -> Tensor:
        weights = torch.addcmul(weight, weight_std, eps_weight)
        inputs = h.expand(eps_weight.shape[0], *h.shape[1:])
        out = torch.baddbmm(torch.addcmul(bias, bias_std, eps_bias), inputs, weights)
        ctx.save_for_backward(h, weights, eps_weight, eps_bias)
        ctx.autocast = _autocast_state(h.device.type)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h, weights, eps_weight, eps_bias = ctx.saved_tensors
        k = grad.shape[0]
        with _replay_autocast(ctx.autocast):
            grad_h = None
            if ctx.needs_input_grad[0]:
                grad_h = torch.bmm(grad, weights.transpose(1, 2))
                if h.shape[0] != k:  # the input broadcast over samples
                    grad_h = grad_h.sum(0, keepdim=True)
            per_sample = torch.bmm(h.expand(k, *h.shape[1:]).transpose(1, 2), grad)
            grad_weight = per_sample.sum(0)
            grad_weight_std = per_sample.mul_(eps_weight).sum(0)
            grad_bias_per_sample = grad.sum(1, keepdim=True)
            grad_bias = grad_bias_per_sample.sum((0, 1))
            grad_bias_std = (grad_bias_per_sample * eps_bias).sum((0, 1))
        return grad_h, grad_weight, grad_bias, grad_weight_std, grad_bias_std, None, None


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

    def with_noise(
        self,
        h: Tensor,
        noise: Sequence[Tensor],
        scales: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """:meth:`forward` given its standard normal ``noise`` (shapes of :meth:`noise_shapes`)
        and, if at hand, the layer's ``(S^p, s^p)`` from :func:`weight_scales`; no random
        draws, so it compiles into one graph."""
        if not self.random:
            return F.linear(h, self.weight.t(), self.bias)
        weight_scale, bias_scale = scales if scales is not None else weight_scales([self])[0]
        if self.sampling is WeightSampling.LOCAL:
            (eps,) = noise
            return _LocalReparameterization.apply(
                h, self.weight, self.bias, weight_scale, bias_scale, eps
            )
        eps_weight, eps_bias = noise
        return _SharedWeights.apply(
            h, self.weight, self.bias, weight_scale, bias_scale, eps_weight, eps_bias
        )

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


def weight_scales(layers: Sequence[GaussianLinear]) -> list[tuple[Tensor, Tensor]]:
    """``(S^p, s^p)`` of every layer of ``layers`` (random ones only), p its ``scale_power`` (2
    with local sampling, 1 with shared): all of one p from one ``softplus_power`` kernel call."""
    deterministic = [layer for layer in layers if not layer.random]
    if deterministic:
        raise ValueError(f"weight_scales takes random layers only, got {deterministic[0]}")
    scales: dict[int, tuple[Tensor, Tensor]] = {}
    for power in sorted({layer.scale_power for layer in layers}):
        group = [layer for layer in layers if layer.scale_power == power]
        values = softplus_power(
            [r for layer in group for r in (layer.weight_rho, layer.bias_rho)], power
        )
        for i, layer in enumerate(group):
            scales[id(layer)] = values[2 * i], values[2 * i + 1]
    return [scales[id(layer)] for layer in layers]
