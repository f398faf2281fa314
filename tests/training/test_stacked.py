"""Which path a replica group takes where: the GPU path (vmap) on every device but a CPU with
the fast paths, checked on the meta device (no memory, no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from benchmark import kernels
from benchmark.models.iwae import ImportanceWeightedAutoencoder
from benchmark.training.stacked import StackedReplicas
from tests.conftest import PAPER_NETWORK


def test_off_the_cpu_the_default_mode_trains_replicas_through_vmap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``kernels=auto`` on a non-CPU device (meta here, as on a GPU) bounds and loss go
    through the vmapped pass, never the per-replica CPU path, with the group's shapes."""
    with torch.device("meta"):
        nets = [
            ImportanceWeightedAutoencoder(784, PAPER_NETWORK, k=5, random_encoder=True)
            for _ in range(3)
        ]
        stacked = StackedReplicas(nets)
        xs = [torch.empty(7, 784) for _ in nets]
        noise = [[torch.empty(s) for s in nets[0].noise_shapes(7, 5)] for _ in nets]

    def cpu_path(*args: object) -> None:
        raise AssertionError("the per-replica CPU path must not run off the CPU")

    monkeypatch.setattr(stacked, "_each", cpu_path)
    with kernels.using("auto"):
        assert not kernels.active(torch.device("meta"))
        bounds = stacked.bounds(xs, noise)
        loss, detached = stacked.loss(xs, noise)
        grads = torch.autograd.grad(loss, list(stacked.stacked))
    assert bounds.shape == detached.shape == (3, 7) and loss.shape == ()
    assert [g.shape for g in grads] == [p.shape for p in stacked.stacked]
    assert all(p.shape[0] == 3 for p in stacked.stacked)
