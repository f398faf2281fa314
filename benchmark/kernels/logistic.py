"""tanh, log sigmoid and softplus for CPUs: stable, and fast there.

torch's CPU kernels for log sigmoid and softplus go through ``log1p``, which in torch 2.14 is
5-10x slower than ``log`` on CPUs with AVX-512 (Sleef's vector log1p; 10 ms for the
[25, 100, 784] decoder logits of a training step, where ``log`` takes 0.8 ms), and its
``tanh`` takes 4-8x the time of ``sigmoid``. On CPUs they are therefore built from
``sigmoid``, ``exp`` and ``log``. Callers use them where :func:`benchmark.kernels.active`
says so, and torch's own ``tanh``, ``softplus`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from benchmark.kernels.compiled import CompiledKernel

# Below this, log sigmoid(l) = l - log1p(e^l) equals l to float precision.
_LINEAR_BELOW = -80.0


def log_sigmoid(logits: Tensor) -> Tensor:
    """log sigmoid(l), no gradient: log(sigmoid(l)), and l itself where l < -80 (there the
    two agree to float precision, and sigmoid(l) would leave float32's normal range).

    Absolute error a few float ulps of 1 (it is a log of a number in (0, 1]), which is what
    a sum of per-pixel log-likelihoods needs. On CPUs the check for l < -80 reads the
    minimum on the host, which costs a sixth of a ``where`` over all logits; under
    ``torch.compile`` the ``where`` is fused and always applied."""
    out = torch.sigmoid(logits).log_()
    if torch.compiler.is_compiling() or logits.min() < _LINEAR_BELOW:
        out = torch.where(logits < _LINEAR_BELOW, logits, out)
    return out


class _Tanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1 (absolute error 2e-7 in float32, where torch's tanh has
    3e-8: noise for an activation); gradient 1 - tanh(x)^2 from the saved output."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        s = torch.sigmoid(2.0 * x)
        # Under torch.compile out of place (inductor fuses it either way): torch 2.11's dynamo
        # gives a zero gradient through an autograd Function whose output was written in place.
        y = s * 2.0 - 1.0 if torch.compiler.is_compiling() else s.mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: Tensor) -> Tensor:
    """tanh(x), differentiable (see :class:`_Tanh` for the formula)."""
    return _Tanh.apply(x)


def _softplus_power_values(rhos: Sequence[Tensor], power: int) -> list[Tensor]:
    """For every r: softplus(r)^power and its derivative, [v_0, d_0, v_1, d_1, ...].

    softplus(r) = max(r, 0) + log1p(t), t = exp(-|r|), with log1p(t) = log(u) t / (u - 1),
    u = 1 + t (exact to a few ulps, Goldberg 1991; t where u rounds to 1), and
    sigmoid(r) = (1 if r >= 0 else t) / u: d softplus^p / dr = p softplus^(p - 1) sigmoid.
    """
    out = []
    for r in rhos:
        t = torch.exp(-r.abs())
        u = t + 1.0
        u_minus_1 = u - 1.0
        log1p_t = torch.where(u_minus_1 == 0.0, t, torch.log(u) * t / u_minus_1)
        value = log1p_t + r.clamp(min=0.0)
        sigmoid = torch.where(r >= 0.0, 1.0, t) / u
        if power == 1:
            out += [value, sigmoid]
        else:
            out += [value.square(), 2.0 * value * sigmoid]
    return out


_SOFTPLUS_POWER_CPU = CompiledKernel(_softplus_power_values, "softplus (weight-scale kernel)")


class _SoftplusPower(torch.autograd.Function):
    """softplus(r)^p of every input in one kernel call, which also returns the derivatives;
    the backward is one product per input."""

    @staticmethod
    def forward(ctx, power: int, *rhos: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        # Detached: dynamo keeps the shapes of nn.Parameters static, one graph per layer size.
        values = _SOFTPLUS_POWER_CPU([r.detach() for r in rhos], power)
        ctx.save_for_backward(*values[1::2])
        return tuple(values[0::2])

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return None, *(grad * slope for grad, slope in zip(grads, ctx.saved_tensors, strict=True))


def softplus_power(rhos: Sequence[Tensor], power: int) -> tuple[Tensor, ...]:
    """softplus(r)^power (power 1 or 2: stds or variances from their rho) for every r of
    ``rhos``, differentiable, relative error a few float ulps.

    All tensors go through one compiled kernel (:func:`_softplus_power_values`):
    eager PyTorch took a dozen passes over each rho for the value and its gradient, 2 ms of
    an IWAER training step, and one kernel call per tensor paid its call overhead 8 times.
    """
    if power not in (1, 2):
        raise ValueError(f"softplus_power takes power 1 or 2, got {power}")
    if not rhos:
        return ()
    return _SoftplusPower.apply(power, *rhos)


def softplus(r: Tensor) -> Tensor:
    """softplus(r) = log(1 + e^r), relative error a few float ulps, differentiable."""
    return softplus_power([r], 1)[0]
