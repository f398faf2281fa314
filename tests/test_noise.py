"""Noise buffers: i.i.d. N(0, 1), reproducible from the generator, independent of threads."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.noise import CPU_BLOCK, draw_normal, fill_normal_

N = 4 * CPU_BLOCK + 123  # several blocks and a partial one


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def draw(seed: int, n: int = N) -> torch.Tensor:
    return fill_normal_(torch.empty(n), torch.Generator().manual_seed(seed))


def test_values_depend_on_the_generator_state_only(restore_threads) -> None:
    torch.set_num_threads(1)
    serial = draw(0)
    torch.set_num_threads(2)
    assert torch.equal(draw(0), serial)
    assert not torch.equal(draw(1), serial)


def test_values_are_standard_normal_and_blocks_are_independent() -> None:
    x = draw(0).double()
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.var().item() - 1) < 5 * math.sqrt(2 / n)
    # Fourth moment 3 and tail mass P(|z| > 3) = 0.0027 of a standard normal.
    assert abs(x.pow(4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    tail = (x.abs() > 3).double().mean().item()
    assert abs(tail - 0.0027) < 5 * math.sqrt(0.0027 / n)
    blocks = x[: 4 * CPU_BLOCK].view(4, CPU_BLOCK)
    correlation = torch.corrcoef(blocks)
    off_diagonal = correlation[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(CPU_BLOCK)


def test_draw_normal_gives_the_shapes_as_disjoint_parts_of_one_stream() -> None:
    shapes = [(3, 5, 2), (3, 5, 7), (1,)]
    parts = draw_normal(shapes, torch.Generator().manual_seed(4), torch.empty(0))
    assert [p.shape for p in parts] == [torch.Size(s) for s in shapes]
    flat = torch.cat([p.flatten() for p in parts])
    assert torch.equal(flat, draw(4, flat.numel()))
    assert flat.unique().numel() == flat.numel()


def test_default_generator_is_used_without_one() -> None:
    torch.manual_seed(5)
    first = fill_normal_(torch.empty(10), None)
    torch.manual_seed(5)
    assert torch.equal(fill_normal_(torch.empty(10), None), first)
