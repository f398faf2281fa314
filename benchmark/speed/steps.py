"""The training steps the benchmark times: one run's, and a replica group's."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from benchmark import kernels
from benchmark.models.base import ImportanceWeightedModel
from benchmark.models.bounds import iwae_bound
from benchmark.training.module import adam
from benchmark.training.stacked import StackedReplicas

BoundFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def run_bound(net: ImportanceWeightedModel, compile: kernels.CompileMode) -> BoundFn:
    """``L_k [B]`` as a run's training step computes it (``ImportanceWeightedLitModule``):
    the noise drawn eagerly, the random-free pass as the config key ``compile`` asks."""
    log_weights = kernels.compile_pass(net.log_weights_with_noise, compile)

    def bound(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        return iwae_bound(log_weights(x, net.draw_noise(x, k, generator)))

    return bound


def train_step(
    bound: BoundFn,
    params: Sequence[torch.nn.Parameter],
    x: torch.Tensor,
    k: int,
    make_optimizer: Callable[[Sequence[torch.nn.Parameter]], torch.optim.Optimizer] = adam,
    compile: kernels.CompileMode = False,
) -> Callable[[], None]:
    """One Adam step on ``-mean_b bound(x)`` per call (``run.py``'s fused Adam unless
    given), noise seeded by a step counter; ``compile`` as the ``bound`` was built with
    (under ``reduce-overhead`` each call begins a CUDA-graph step)."""
    optimizer = make_optimizer(params)
    generator = torch.Generator(device=x.device)
    step = iter(range(1 << 62))

    def run() -> None:
        kernels.begin_graph_step(compile)
        generator.manual_seed(next(step))
        loss = -bound(x, k, generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def group_train_step(
    nets: Sequence[ImportanceWeightedModel],
    x: torch.Tensor,
    k: int,
    compile: kernels.CompileMode = False,
) -> Callable[[], None]:
    """One step of ``nets`` as a replica group per call, as ``ReplicaLitModule`` takes it:
    each replica's noise from its own generator, the stacked loss
    (:meth:`~benchmark.training.stacked.StackedReplicas.loss`) with its pass as ``compile``
    asks, one fused Adam step."""
    group = StackedReplicas(nets, compile).to(x.device)
    optimizer = adam(group.parameters())
    generators = [torch.Generator(device=x.device) for _ in nets]
    step = iter(range(1 << 62))

    def run() -> None:
        kernels.begin_graph_step(compile)
        seed = next(step)
        for r, generator in enumerate(generators):
            generator.manual_seed(seed * len(generators) + r)
        noise = [nets[0].draw_noise(x, k, g) for g in generators]
        loss, _ = group.loss([x] * len(nets), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run
