"""Standard normal and uniform noise, drawn from a named stream into one buffer.

Every draw takes a generator (a stream of :mod:`benchmark.randomness.seeding`) and returns
values that depend only on its state and the buffer's size: torch's own ``normal_`` /
``uniform_`` on every device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

Shapes = Any  # a nest of dicts and lists whose leaves are shape tuples
Noise = Any  # the same nest with a standard normal tensor at every leaf


def standard_uniform(
    numel: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``numel`` i.i.d. U[0, 1) values from ``generator``'s stream."""
    return torch.empty(numel, device=device, dtype=dtype).uniform_(generator=generator)


def _leaves(shapes: Shapes) -> list[tuple[int, ...]]:
    if isinstance(shapes, dict):
        return [leaf for value in shapes.values() for leaf in _leaves(value)]
    if isinstance(shapes, list):
        return [leaf for value in shapes for leaf in _leaves(value)]
    return [shapes]


def _fill(shapes: Shapes, parts: list[Tensor]) -> Noise:
    """``shapes`` with each leaf replaced by the next of ``parts`` (taken from the end)."""
    if isinstance(shapes, dict):
        return {key: _fill(value, parts) for key, value in shapes.items()}
    if isinstance(shapes, list):
        return [_fill(value, parts) for value in shapes]
    return parts.pop()


def draw_stacked_normal(
    shapes: Shapes, generators: Sequence[torch.Generator | None], like: Tensor
) -> Noise:
    """Standard normal tensors ``[R, *shape]`` for ``shapes`` (dicts and lists of shape
    tuples, kept as they are) on ``like``'s device and dtype, R = ``len(generators)``: row r
    of one buffer, filled from ``generators[r]``'s stream and cut into the leaves in the order
    of the nest, is exactly :func:`draw_normal` of ``generators[r]``."""
    return _fill(shapes, _stacked_parts(shapes, generators, like)[::-1])


def _stacked_parts(
    shapes: Shapes, generators: Sequence[torch.Generator | None], like: Tensor
) -> list[Tensor]:
    """The leaves of ``shapes`` in order, ``[R, *shape]`` each: views of one ``[R, n]`` buffer
    whose row r is filled from ``generators[r]``."""
    leaves = _leaves(shapes)
    sizes = [math.prod(shape) for shape in leaves]
    flat = torch.empty(len(generators), sum(sizes), device=like.device, dtype=like.dtype)
    for row, generator in zip(flat, generators, strict=True):
        row.normal_(generator=generator)
    return [
        part.view(len(generators), *shape)
        for part, shape in zip(flat.split(sizes, dim=1), leaves, strict=True)
    ]


def draw_normal(shapes: Shapes, generator: torch.Generator | None, like: Tensor) -> Noise:
    """Standard normal tensors of ``shapes`` on ``like``'s device and dtype: consecutive views
    of one buffer, in the order of the nest, from ``generator``'s stream (the one replica of
    :func:`draw_stacked_normal`)."""
    return _fill(shapes, [part[0] for part in _stacked_parts(shapes, [generator], like)[::-1]])
