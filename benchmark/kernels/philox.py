"""Normal and uniform noise on CPUs from the counter-based generator Philox4x32-10.

PyTorch fills a CPU tensor with normals from one Mersenne-Twister stream on one core (2.5
ns/value here), which made noise 14% of an IWAER training step and 30% of its evaluation
on 2 cores, and would dominate on many-core machines where the matmuls scale and the draw
does not. On CPUs the buffer therefore comes from the counter-based generator Philox4x32-10
(Salmon et al., SC 2011; the generator behind cuRAND and PyTorch's CUDA RNG): value i of
a buffer of n is a pure function of (key, n, i), so one elementwise kernel, compiled by
``torch.compile``, fills the buffer on all of torch's CPU threads (0.5 ns/value on 2 cores,
inside a training step too), and the values do not depend on the thread count. The 64-bit
key is drawn from the caller's generator, once per buffer; uniforms become normals by the
Box-Muller transform. The buffer holds its nb = ceil(n / 4) Philox blocks of four words as
four contiguous runs (word j of block b at j nb + b), so the kernel stores whole vectors;
interleaving the words (at 4 b + j) took 20% longer. The same kernel draws the uniforms of
the training minibatches' binarization. Elsewhere (other devices, or
``kernels=reference``) torch's own ``normal_`` / ``uniform_`` fill the buffer
(:mod:`benchmark.randomness.noise`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from benchmark.kernels.compiled import CompiledKernel

PROFILER_LABEL = "noise (Philox kernel)"

_MASK = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_KEY_INCREMENTS = (0x9E3779B9, 0xBB67AE85)


def philox4x32_10(
    counter: Sequence[Tensor], key: Sequence[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The Philox4x32-10 bijection of Random123: four 32-bit counter words and two 32-bit key
    words (int64 tensors holding values in [0, 2^32), broadcastable) -> four 32-bit words.

    Each round multiplies words 0 and 2 by fixed odd constants into 64-bit products, whose
    high halves are xored with words 1 and 3 and the key; the key grows by the Weyl
    increments between rounds. Products wrap modulo 2^64 in int64, which keeps their bits.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(10):
        if round_index:
            k0 = (k0 + _KEY_INCREMENTS[0]) & _MASK
            k1 = (k1 + _KEY_INCREMENTS[1]) & _MASK
        p0 = c0 * _MULTIPLIERS[0]
        p1 = c2 * _MULTIPLIERS[1]
        c0, c1, c2, c3 = (
            ((p1 >> 32) & _MASK) ^ c1 ^ k0,
            p1 & _MASK,
            ((p0 >> 32) & _MASK) ^ c3 ^ k1,
            p0 & _MASK,
        )
    return c0, c1, c2, c3


def _philox_blocks(numel: int, key: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four Philox words of blocks b = 0 .. ceil(numel / 4) - 1, counter
    (b mod 2^32, b div 2^32, 0, 0); ``key``: int64 ``[2]``."""
    blocks = torch.arange((numel + 3) // 4, device=key.device)
    return philox4x32_10(
        (blocks & _MASK, blocks >> 32, torch.zeros_like(blocks), torch.zeros_like(blocks)),
        (key[0], key[1]),
    )


def philox_normal(numel: int, key: Tensor, dtype: torch.dtype) -> Tensor:
    """``4 nb`` i.i.d. N(0, 1) values of ``dtype``, nb = ceil(numel / 4): value j nb + b is
    the j-th Box-Muller output of block b.

    The four values of block b are Box-Muller of its Philox words: uniforms
    u = (word + 1/2) 2^-32 in (0, 1], and (r cos t, r sin t) with r = sqrt(-2 log u_0),
    t = 2 pi u_1 (then u_2, u_3).
    """
    work = torch.promote_types(dtype, torch.float32)
    u = [(w.to(work) + 0.5) * 2.0**-32 for w in _philox_blocks(numel, key)]
    radius = [torch.sqrt(-2.0 * torch.log(u[i])) for i in (0, 2)]
    angle = [(2.0 * math.pi) * u[i] for i in (1, 3)]
    values = [
        radius[0] * torch.cos(angle[0]),
        radius[0] * torch.sin(angle[0]),
        radius[1] * torch.cos(angle[1]),
        radius[1] * torch.sin(angle[1]),
    ]
    return torch.cat(values).to(dtype)


def philox_uniform(numel: int, key: Tensor, dtype: torch.dtype) -> Tensor:
    """``4 ceil(numel / 4)`` i.i.d. U[0, 1) values of ``dtype``, laid out as in
    :func:`philox_normal`: the top 24 bits of each Philox word times 2^-24 (exact in
    float32)."""
    words = [(w >> 8).to(torch.float32) * 2.0**-24 for w in _philox_blocks(numel, key)]
    return torch.cat(words).to(dtype)


def _torch_draw(kind: str) -> Callable[[int, Tensor, torch.dtype], Tensor]:
    """Fallback where the Philox kernel cannot be compiled: torch's one-core ``normal_`` /
    ``uniform_`` seeded by the key. Slower, and a different stream, but still a function of
    the key only (eager Philox would be 30x slower still)."""

    def draw(numel: int, key: Tensor, dtype: torch.dtype) -> Tensor:
        generator = torch.Generator().manual_seed((int(key[0]) << 32) | int(key[1]))
        out = torch.empty(numel, dtype=dtype)
        return (
            out.normal_(generator=generator)
            if kind == "normal"
            else out.uniform_(generator=generator)
        )

    return draw


_CPU_KERNELS = {
    kind: CompiledKernel(draw, PROFILER_LABEL, fallback=_torch_draw(kind))
    for kind, draw in (("normal", philox_normal), ("uniform", philox_uniform))
}


def philox_draw(
    kind: str, numel: int, generator: torch.Generator | None, dtype: torch.dtype
) -> Tensor:
    """``numel`` i.i.d. values of ``kind`` (``normal`` or ``uniform``) on the CPU: the Philox
    kernel keyed by two 32-bit integers drawn from ``generator`` (the default generator if
    None), so the values depend only on its state and ``numel``."""
    key = torch.randint(1 << 32, (2,), generator=generator)
    return _CPU_KERNELS[kind](numel, key, dtype)[:numel]
