"""tanh, log sigmoid and softplus: stable, and fast on CPUs.

torch's CPU kernels for log sigmoid and softplus go through ``log1p``, which in torch 2.14 is
5-10x slower than ``log`` on CPUs with AVX-512 (Sleef's vector log1p; 10 ms for the
[25, 100, 784] decoder logits of a training step, where ``log`` takes 0.8 ms), and its
``tanh`` takes 4-8x the time of ``sigmoid``. On CPUs they are therefore built from
``sigmoid``, ``exp`` and ``log``; on other devices torch's own kernels are used.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

# Below this, log sigmoid(l) = l - log1p(e^l) equals l to float precision.
_LINEAR_BELOW = -80.0


def log_sigmoid(logits: Tensor) -> Tensor:
    """log sigmoid(l), no gradient: log(sigmoid(l)), and l itself where l < -80 (there the
    two agree to float precision, and sigmoid(l) would leave float32's normal range).

    Absolute error a few float ulps of 1 (it is a log of a number in (0, 1]), which is what
    a sum of per-pixel log-likelihoods needs. On CPUs the check for l < -80 reads the
    minimum on the host, which costs a sixth of a ``where`` over all logits; under
    ``torch.compile`` the ``where`` is fused and always applied."""
    if logits.device.type != "cpu":
        return F.logsigmoid(logits)
    out = torch.sigmoid(logits).log_()
    if torch.compiler.is_compiling() or logits.min() < _LINEAR_BELOW:
        out = torch.where(logits < _LINEAR_BELOW, logits, out)
    return out


class _Tanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1 (absolute error 2e-7 in float32, where torch's tanh has
    3e-8: noise for an activation); gradient 1 - tanh(x)^2 from the saved output."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        y = torch.sigmoid(2.0 * x).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: Tensor) -> Tensor:
    """tanh(x), differentiable (see :class:`_Tanh` for the CPU formula)."""
    if x.device.type != "cpu":
        return torch.tanh(x)
    return _Tanh.apply(x)


class _Softplus(torch.autograd.Function):
    """softplus(r) = max(r, 0) + log1p(t), t = exp(-|r|), with log1p(t) = log(u) t / (u - 1),
    u = 1 + t (exact to a few ulps, Goldberg 1991; t where u rounds to 1). Gradient sigmoid(r).
    """

    @staticmethod
    def forward(ctx, r: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(r)
        t = r.abs().neg_().exp_()
        u = t + 1.0
        u_minus_1 = u - 1.0
        log1p_t = torch.where(u_minus_1 == 0.0, t, u.log_().mul_(t).div_(u_minus_1))
        return log1p_t.add_(r.clamp(min=0.0))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (r,) = ctx.saved_tensors
        return grad * torch.sigmoid(r)


def softplus(r: Tensor) -> Tensor:
    """softplus(r) = log(1 + e^r), relative error a few float ulps, differentiable."""
    if r.device.type != "cpu":
        return F.softplus(r)
    return _Softplus.apply(r)
