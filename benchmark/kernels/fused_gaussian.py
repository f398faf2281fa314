"""Hand-fused forward and backward of the random layers of
:class:`benchmark.models.gaussian_layers.GaussianLinear`, for CPUs.

They compute the layer's formula (its plain autograd form is the reference they are tested
against) with one fewer pass over the ``[k, B, n]`` tensors in the backward; measured at 3-6%
of a CPU training step. Backward runs under the forward's autocast state.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from torch.nn import functional as F

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
        mean = F.linear(h, weight.t(), bias)
        std = F.linear(h_squared, weight_var.t(), bias_var).sqrt_()
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


local_reparameterization = _LocalReparameterization.apply
shared_weights = _SharedWeights.apply
