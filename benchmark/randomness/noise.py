"""Standard normal and uniform noise for a whole pass, drawn into one buffer.

Every draw takes a generator (a stream of :mod:`benchmark.randomness.seeding`) and returns
values that depend only on its state and the buffer's size. With the CPU fast paths on
(:func:`benchmark.kernels.active`) the buffer comes from the Philox kernel
(:mod:`benchmark.kernels.philox`); elsewhere from torch's ``normal_`` / ``uniform_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from benchmark import kernels


def _draw(
    kind: str,
    numel: int,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """``numel`` i.i.d. values of ``kind`` (``normal``, ``uniform``) from ``generator``'s
    stream (the default generator if None)."""
    if kernels.active(device):
        return kernels.philox_draw(kind, numel, generator, dtype)
    out = torch.empty(numel, device=device, dtype=dtype)
    return (
        out.normal_(generator=generator) if kind == "normal" else out.uniform_(generator=generator)
    )


def standard_normal(
    numel: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``numel`` i.i.d. N(0, 1) values from ``generator``'s stream."""
    return _draw("normal", numel, generator, device, dtype)


def standard_uniform(
    numel: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``numel`` i.i.d. U[0, 1) values from ``generator``'s stream."""
    return _draw("uniform", numel, generator, device, dtype)


def draw_normal(
    shapes: Sequence[tuple[int, ...]], generator: torch.Generator | None, like: Tensor
) -> list[Tensor]:
    """Standard normal tensors of ``shapes`` on ``like``'s device and dtype: consecutive
    views of one buffer drawn by :func:`standard_normal`."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = standard_normal(sum(sizes), generator, like.device, like.dtype)
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes, strict=True)]
