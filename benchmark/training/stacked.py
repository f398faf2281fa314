"""R models of one architecture as one stacked model: every parameter ``[R, ...]``.

Replica r is the model with parameters ``P[r]`` for every stacked parameter P. Its bound
``L_k(x_r) [B]`` for data ``x_r [B, D]`` and noise ``noise_r`` is the model's own
``iwae_bound(log_weights_with_noise(x_r, noise_r))``, evaluated for all replicas in one pass
through :func:`torch.func.functional_call` under :func:`torch.func.vmap` (batched matmuls over
the replica dimension), so each replica gets its own gradient only, in its slice of the
stacked gradient. A single run is the group of one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from benchmark.compilation import CompileMode, compile_pass
from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.bounds import iwae_bound
from benchmark.randomness.noise import Noise


class _Bound(nn.Module):
    """``forward(x, noise) = iwae_bound(net.log_weights_with_noise(x, noise))``, ``[B]``."""

    def __init__(self, net: ImportanceWeightedModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, noise: Noise) -> Tensor:
        return iwae_bound(self.net.log_weights_with_noise(x, noise))


class StackedReplicas(nn.Module):
    """The parameters of ``nets`` (R models of one architecture) stacked, ``[R, ...]`` each,
    in the order of ``nets[0].named_parameters()``.

    :meth:`replica` gives model r with its parameters as views of the stacked ones, for
    everything but the training pass (evaluation, samples, checkpoints of one replica).
    """

    def __init__(
        self, nets: Sequence[ImportanceWeightedModel], compile: CompileMode = False
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
        self._bounds = compile_pass(vmap(self._one), compile)

    def _one(self, params: dict[str, Tensor], x: Tensor, noise: Noise) -> Tensor:
        return functional_call(self._template, params, (x, noise))

    def bounds(self, x: Tensor, noise: Noise) -> Tensor:
        """``L_k [R, B]``: replica r's one-draw bound on ``x[r]`` (``x [R, B, D]``) with
        ``noise`` of :meth:`~benchmark.models.base.ImportanceWeightedModel.noise_shapes`, every
        tensor stacked ``[R, ...]`` (replica r's noise at index r)."""
        named = {f"net.{name}": p for name, p in zip(self.names, self.stacked, strict=True)}
        return self._bounds(named, x, noise)

    def replica(self, r: int) -> ImportanceWeightedModel:
        """Model r, its parameters views of ``stacked[.][r]`` as they are now (no gradient; it
        follows the stacked values as they train, on their device at the time of the call)."""
        net = self.nets[r]
        for name, stacked in zip(self.names, self.stacked, strict=True):
            owner, _, leaf = name.rpartition(".")
            module = net.get_submodule(owner)
            setattr(module, leaf, nn.Parameter(stacked.detach()[r], requires_grad=False))
        return net
