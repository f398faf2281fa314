"""Log-densities and the importance-weighted bounds.

Shapes: ``x [B, D]``, latent samples ``z [k, B, Z]``, log-weights ``[k, B]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

LOG_2PI = math.log(2.0 * math.pi)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.square() + LOG_2PI).sum(-1)


def log_normal_diag(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mean, diag exp(log_var)), summed over the last dimension."""
    return -0.5 * ((z - mean).square() * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)


def log_normal_at_noise(eps: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mean, diag exp(log_var)) at its own reparameterized draw
    z = mean + exp(log_var / 2) eps: -(eps^2 + log_var + log 2 pi) / 2, summed over the last
    dimension."""
    return -0.5 * (eps.square() + log_var + LOG_2PI).sum(-1)


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """log prod_d Bernoulli(x_d; sigmoid(logits_d)) = sum_d x_d l_d - sum_d softplus(l_d).

    ``x [B, D]`` broadcasts against ``logits [k, B, D]``; result ``[k, B]``. Valid for grey
    ``x`` in [0, 1] too (then it is a cross-entropy, not a log-probability). ``x`` gets no
    gradient (it is data). Computed in the wider of the two dtypes: under bf16 autocast the
    logits are bf16, whose 8-bit mantissa would round a sum of 784 terms to about a nat.
    """
    logits = logits.to(torch.promote_types(logits.dtype, x.dtype))
    return torch.linalg.vecdot(logits, x) - F.softplus(logits).sum(-1)


def iwae_bound(log_weights: Tensor) -> Tensor:
    """L_k estimate per data point: log (1/k) sum_j exp(log w_j), ``[k, B] -> [B]`` (stable)."""
    k = log_weights.shape[0]
    return torch.logsumexp(log_weights, dim=0) - math.log(k)


def kl_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag exp(log_var)) || N(0, I)), summed over the last dimension."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)


def elbo_analytic_kl(x: Tensor, logits: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Textbook ELBO sample: log p(x | z) - KL(q(z | x) || p(z)), ``[k, B]``."""
    return bernoulli_log_likelihood(x, logits) - kl_standard_normal(mean, log_var)
