"""The training steps the benchmark times: one run's, and a replica group's."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from benchmark.models.base import ImportanceWeightedModel
from benchmark.training.module import adam
from benchmark.training.stacked import StackedReplicas

BoundFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


def train_step(
    bound: BoundFn,
    params: Sequence[torch.nn.Parameter],
    x: torch.Tensor,
    k: int,
    make_optimizer: Callable[[Sequence[torch.nn.Parameter]], torch.optim.Optimizer] = adam,
) -> Callable[[], None]:
    """One Adam step on ``-mean_b bound(x)`` per call (``run.py``'s fused Adam unless
    given), noise seeded by a step counter."""
    optimizer = make_optimizer(params)
    generator = torch.Generator(device=x.device)
    step = iter(range(1 << 62))

    def run() -> None:
        generator.manual_seed(next(step))
        loss = -bound(x, k, generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def group_train_step(
    nets: Sequence[ImportanceWeightedModel], x: torch.Tensor, k: int
) -> Callable[[], None]:
    """One step of ``nets`` as a replica group per call, as ``ReplicaLitModule`` takes it:
    each replica's noise from its own generator, the stacked loss
    (:meth:`~benchmark.training.stacked.StackedReplicas.loss`), one fused Adam step."""
    group = StackedReplicas(nets).to(x.device)
    optimizer = adam(group.parameters())
    generators = [torch.Generator(device=x.device) for _ in nets]
    step = iter(range(1 << 62))

    def run() -> None:
        seed = next(step)
        for r, generator in enumerate(generators):
            generator.manual_seed(seed * len(generators) + r)
        noise = [nets[0].draw_noise(x, k, g) for g in generators]
        loss, _ = group.loss([x] * len(nets), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run
