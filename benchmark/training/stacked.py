"""R replicas of one model as one stacked model: every parameter ``[R, ...]``.

Replica r is the model with parameters ``P[r]`` for every stacked parameter P. Its bound
``L_k(x_r) [B]`` for data ``x_r [B, D]`` and noise ``noise_r`` is the model's own
``iwae_bound(log_weights_with_noise(x_r, noise_r))``, evaluated through
:func:`torch.func.functional_call`: all replicas in one pass under :func:`torch.func.vmap`
(batched matmuls over the replica dimension; the plain-PyTorch path, used on GPUs), or with
the CPU fast paths on (:func:`benchmark.kernels.active`), one pass per replica over views of
the stacked parameters, where the fast kernels and not the launch overhead decide the time.
Both give each replica its own gradient only, in its slice of the stacked gradient. For the
training loss ``-sum_r mean_b L_k(x_rb)`` the CPU path also runs each replica's backward
right after its forward (:meth:`StackedReplicas.loss`), so one replica's activations are
alive at a time, as in a run alone, and still in cache when its backward reads them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from benchmark import kernels
from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.bounds import iwae_bound


class _Bound(nn.Module):
    """``forward(x, noise) = iwae_bound(net.log_weights_with_noise(x, noise))``, ``[B]``."""

    def __init__(self, net: ImportanceWeightedModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, noise: Sequence[Tensor]) -> Tensor:
        return iwae_bound(self.net.log_weights_with_noise(x, noise))


class StackedReplicas(nn.Module):
    """The parameters of ``nets`` (R models of one architecture) stacked, ``[R, ...]`` each,
    in the order of ``nets[0].named_parameters()``.

    :meth:`replica` gives model r with its parameters as views of the stacked ones, for
    everything but the training pass (evaluation, samples, checkpoints of one replica).
    """

    def __init__(
        self, nets: Sequence[ImportanceWeightedModel], compile: kernels.CompileMode = False
    ) -> None:
        super().__init__()
        if not nets:
            raise ValueError("a replica group needs at least one model")
        if any(True for _ in nets[0].buffers()):
            raise ValueError(
                f"replicas stack parameters only; {type(nets[0]).__name__} has buffers"
            )
        params, _ = stack_module_state(list(nets))
        self.names = list(params)
        self.stacked = nn.ParameterList(
            [nn.Parameter(params[name].detach()) for name in self.names]
        )
        # Neither is a submodule: the nets' parameters are views bound on use, and the
        # template (on the meta device) only lends its code to functional_call.
        object.__setattr__(self, "nets", list(nets))
        object.__setattr__(self, "_template", _Bound(copy.deepcopy(nets[0]).to("meta")))
        self._each = kernels.compile_pass(self._one, compile)
        self._all = kernels.compile_pass(vmap(self._one), compile)

    def _one(self, params: dict[str, Tensor], x: Tensor, noise: Sequence[Tensor]) -> Tensor:
        return functional_call(self._template, params, (x, noise))

    def bounds(self, x: Sequence[Tensor], noise: Sequence[Sequence[Tensor]]) -> Tensor:
        """``L_k [R, B]``: replica r's one-draw bound on ``x[r] [B, D]`` with ``noise[r]``
        (its noise of :meth:`~benchmark.models.base.ImportanceWeightedModel.noise_shapes`)."""
        if kernels.active(self.stacked[0].device):
            views = zip(*(p.unbind(0) for p in self.stacked), strict=True)
            return torch.stack(
                [
                    self._each(self._named(params), x_r, noise_r)
                    for params, x_r, noise_r in zip(views, x, noise, strict=True)
                ]
            )
        stacked_noise = [torch.stack(parts) for parts in zip(*noise, strict=True)]
        return self._all(self._named(self.stacked), torch.stack(list(x)), stacked_noise)

    def loss(self, x: Sequence[Tensor], noise: Sequence[Sequence[Tensor]]) -> tuple[Tensor, Tensor]:
        """The training loss ``-sum_r mean_b L_k(x_rb)`` (differentiable in the stacked
        parameters) and the bounds ``[R, B]`` (detached), as :meth:`bounds` gives them."""
        if kernels.active(self.stacked[0].device):
            return _ReplicaByReplica.apply(self, x, noise, *self.stacked)
        bounds = self.bounds(x, noise)
        return -bounds.mean(-1).sum(), bounds.detach()

    def _named(self, values: Sequence[Tensor]) -> dict[str, Tensor]:
        return {f"net.{name}": value for name, value in zip(self.names, values, strict=True)}

    def replica(self, r: int) -> ImportanceWeightedModel:
        """Model r, its parameters views of ``stacked[.][r]`` (no gradient; it follows the
        stacked values as they train, and moves with them between devices)."""
        net = self.nets[r]
        for name, stacked in zip(self.names, self.stacked, strict=True):
            owner, _, leaf = name.rpartition(".")
            module = net.get_submodule(owner)
            setattr(module, leaf, nn.Parameter(stacked.detach()[r], requires_grad=False))
        return net


class _ReplicaByReplica(torch.autograd.Function):
    """``loss = -sum_r mean_b L_k(x_rb)`` with each replica's gradient computed in the
    forward, right after its pass, into its slice of every stacked gradient; the backward
    scales them by the incoming gradient of the loss. The same numbers as autograd through
    :meth:`StackedReplicas.bounds`, with one replica's activations alive at a time."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        replicas: StackedReplicas,
        x: Sequence[Tensor],
        noise: Sequence[Sequence[Tensor]],
        *stacked: Tensor,
    ) -> tuple[Tensor, Tensor]:
        grads = [torch.empty_like(p) for p in stacked]
        losses, bounds = [], []
        for r, (x_r, noise_r) in enumerate(zip(x, noise, strict=True)):
            views = [p.detach()[r].requires_grad_() for p in stacked]
            with torch.enable_grad():
                bound = replicas._each(replicas._named(views), x_r, noise_r)
                loss = -bound.mean()
                for grad, part in zip(grads, torch.autograd.grad(loss, views), strict=True):
                    grad[r].copy_(part)
            losses.append(loss.detach())
            bounds.append(bound.detach())
        ctx.save_for_backward(*grads)
        all_bounds = torch.stack(bounds)
        ctx.mark_non_differentiable(all_bounds)
        return torch.stack(losses).sum(), all_bounds

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _: Tensor) -> tuple[Tensor | None, ...]:
        return (None, None, None, *(grad * grad_loss for grad in ctx.saved_tensors))
