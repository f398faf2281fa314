"""Noise buffers: Philox4x32-10 as published, i.i.d. N(0, 1), reproducible from the generator,
independent of threads, the same compiled and eager."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.kernels import compiled as cpu_kernels
from benchmark.kernels import philox as noise
from benchmark.kernels.philox import philox4x32_10, philox_normal, philox_uniform
from benchmark.randomness.noise import draw_normal, standard_normal, standard_uniform

N = 400_003  # not a multiple of 4: the last block of four is cut

# Random123's known-answer vectors (kat_vectors): 4 counter words, 2 key words, 4 output words.
PHILOX_KAT = """
00000000 00000000 00000000 00000000  00000000 00000000  6627e8d5 e169c58d bc57ac4c 9b00dbd8
ffffffff ffffffff ffffffff ffffffff  ffffffff ffffffff  408f276d 41c83b0e a20bc7c6 6d5451fd
243f6a88 85a308d3 13198a2e 03707344  a4093822 299f31d0  d16cfe09 94fdcceb 5001e420 24126ea1
"""
CPU = torch.device("cpu")


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def draw(seed: int, n: int = N) -> torch.Tensor:
    return standard_normal(n, torch.Generator().manual_seed(seed), CPU, torch.float32)


def words(columns: slice, repeat: int) -> list[torch.Tensor]:
    """Words ``columns`` of the vectors as int64 tensors, each vector repeated ``repeat``
    times (long enough that compiled kernels take their vectorised path)."""
    table = torch.tensor(
        [[int(w, 16) for w in line.split()] for line in PHILOX_KAT.split("\n") if line]
    )
    return list(table[:, columns].repeat_interleave(repeat, dim=0).T)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_philox_matches_the_published_known_answers(compiled: bool) -> None:
    bijection = torch.compile(philox4x32_10, fullgraph=True) if compiled else philox4x32_10
    got = torch.stack(bijection(words(slice(0, 4), 37), words(slice(4, 6), 37)))
    assert torch.equal(got, torch.stack(words(slice(6, 10), 37)))


def test_values_depend_on_the_generator_state_not_on_the_threads(restore_threads) -> None:
    torch.set_num_threads(1)
    serial = draw(0)
    torch.set_num_threads(2)
    assert torch.equal(draw(0), serial)
    assert not torch.equal(draw(1), serial)


def block_words(values: torch.Tensor) -> torch.Tensor:
    """``[8, nb - 1]``: the four values of every Philox block but the last (rows: its words)
    and of the block after it, from a buffer laid out as ``noise.philox_normal`` says."""
    words = values.view(4, -1)
    return torch.cat([words[:, :-1], words[:, 1:]])


def test_values_are_standard_normal_and_independent() -> None:
    x = draw(0).double()
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.var().item() - 1) < 5 * math.sqrt(2 / n)
    # Fourth moment 3 and tail mass P(|z| > 3) = 0.0027 of a standard normal.
    assert abs(x.pow(4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    tail = (x.abs() > 3).double().mean().item()
    assert abs(tail - 0.0027) < 5 * math.sqrt(0.0027 / n)
    # The four values of a Philox block (two Box-Muller pairs) and of the next block.
    key = torch.tensor([11, 12])
    blocks = block_words(noise._CPU_KERNELS["normal"](N, key, torch.float64))
    correlation = torch.corrcoef(torch.cat([blocks, blocks.square()]))
    off_diagonal = correlation[~torch.eye(16, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(blocks.shape[1])


def test_the_buffer_holds_the_box_muller_outputs_of_each_block_as_four_runs() -> None:
    n = 4 * 1_001 - 3
    key = torch.tensor([5, 6])
    u = [(w.double() + 0.5) * 2.0**-32 for w in noise._philox_blocks(n, key)]
    runs = philox_normal(n, key, torch.float64).view(4, -1)  # value j nb + b: run j, block b
    for first in (0, 2):  # Box-Muller pairs (r cos t, r sin t) from words (0, 1) and (2, 3)
        cos, sin = runs[first], runs[first + 1]
        torch.testing.assert_close(cos.square() + sin.square(), -2.0 * u[first].log())
        angle = torch.atan2(sin, cos).remainder(2.0 * math.pi)
        torch.testing.assert_close(angle, 2.0 * math.pi * u[first + 1])
    uniforms = philox_uniform(n, key, torch.float64).view(4, -1)
    torch.testing.assert_close(uniforms, torch.stack(u), rtol=0, atol=2.0**-24)


def test_keys_from_different_generator_states_give_uncorrelated_streams() -> None:
    streams = torch.stack([draw(seed, 100_000) for seed in range(4)]).double()
    off_diagonal = torch.corrcoef(streams)[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(100_000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_compiled_kernel_gives_the_eager_values(dtype: torch.dtype) -> None:
    key = torch.tensor([123_456_789, 4_000_000_000])
    eager = philox_normal(N, key, dtype)
    compiled = noise._CPU_KERNELS["normal"](N, key, dtype)
    assert compiled.dtype == dtype and compiled.shape == eager.shape == (4 * math.ceil(N / 4),)
    torch.testing.assert_close(compiled, eager)


def test_without_a_working_compiler_noise_comes_from_normal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpu_kernels, "_compile_failed", True)
    first, again, other = draw(3), draw(3), draw(4)
    assert torch.equal(first, again) and not torch.equal(first, other)
    key = torch.randint(1 << 32, (2,), generator=torch.Generator().manual_seed(3))
    assert not torch.equal(first, philox_normal(N, key, torch.float32)[:N])  # not Philox
    assert abs(first.mean().item()) < 5 / math.sqrt(N)
    assert abs(first.double().var().item() - 1) < 5 * math.sqrt(2 / N)


def test_draw_normal_gives_the_shapes_as_disjoint_parts_of_one_stream() -> None:
    shapes = [(3, 5, 2), (3, 5, 7), (1,)]
    parts = draw_normal(shapes, torch.Generator().manual_seed(4), torch.empty(0))
    assert [p.shape for p in parts] == [torch.Size(s) for s in shapes]
    flat = torch.cat([p.flatten() for p in parts])
    assert torch.equal(flat, draw(4, flat.numel()))
    assert flat.unique().numel() == flat.numel()


def test_default_generator_is_used_without_one() -> None:
    torch.manual_seed(5)
    first = standard_normal(10, None, CPU, torch.float32)
    torch.manual_seed(5)
    assert torch.equal(standard_normal(10, None, CPU, torch.float32), first)


def test_uniforms_are_uniform_independent_and_the_same_compiled() -> None:
    u = standard_uniform(N, torch.Generator().manual_seed(0), CPU, torch.float32).double()
    assert u.min().item() >= 0 and u.max().item() < 1
    counts = torch.histc(u, bins=20, min=0, max=1)
    expected = N / 20
    chi_square = ((counts - expected).square() / expected).sum().item()
    assert chi_square < 19 + 5 * math.sqrt(2 * 19)  # 19 degrees of freedom, 5 sigma
    key = torch.tensor([7, 8])
    blocks = block_words(noise._CPU_KERNELS["uniform"](N, key, torch.float64))
    off_diagonal = torch.corrcoef(blocks)[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(blocks.shape[1])
    torch.testing.assert_close(
        noise._CPU_KERNELS["uniform"](N, key, torch.float32),
        philox_uniform(N, key, torch.float32),
        rtol=0,
        atol=0,
    )
