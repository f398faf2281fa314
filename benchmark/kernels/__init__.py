"""The CPU fast paths, behind one switch: everything outside this package is plain,
device-agnostic PyTorch and asks :func:`active` whether to call in here.

- :mod:`~benchmark.kernels.philox`: normal and uniform noise from a compiled Philox kernel
  that runs on all cores (torch's CPU generator is one Mersenne-Twister stream on one core);
- :mod:`~benchmark.kernels.logistic`: tanh, log sigmoid and softplus without ``log1p``;
- :mod:`~benchmark.kernels.likelihood`: the Bernoulli log-likelihood as one compiled loop;
- :mod:`~benchmark.kernels.fused_gaussian`: the random layers with hand-fused backwards;
- :mod:`~benchmark.kernels.allocator`: glibc keeps freed activations for the next step;
- :mod:`~benchmark.kernels.compiled`: the ``torch.compile`` wrapper with eager fallbacks, and
  the config key ``compile`` (``torch.compile``, CUDA graphs) for a model's whole pass.

The switch is the config key ``kernels``: ``auto`` (default) uses them on CPUs and plain
PyTorch on other devices; ``reference`` uses plain PyTorch everywhere (on CPUs a different
noise stream: torch's generator instead of Philox).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from benchmark.kernels.allocator import retain_freed_memory
from benchmark.kernels.compiled import (
    COMPILE_MODES,
    PROFILER_LABELS,
    CompileMode,
    begin_graph_step,
    compile_name,
    compile_pass,
    cudagraph_skips,
    fresh_compile_caches,
)
from benchmark.kernels.fused_gaussian import local_reparameterization, shared_weights
from benchmark.kernels.likelihood import bernoulli_log_likelihood
from benchmark.kernels.logistic import log_sigmoid, softplus_power, tanh
from benchmark.kernels.philox import philox_draw

MODES = ("auto", "reference")
CPU_CHUNK_ROWS = 5000  # (sample, point) rows per evaluation chunk on CPUs: activations in cache

_mode = "auto"

__all__ = [
    "COMPILE_MODES",
    "CPU_CHUNK_ROWS",
    "MODES",
    "PROFILER_LABELS",
    "CompileMode",
    "active",
    "begin_graph_step",
    "bernoulli_log_likelihood",
    "compile_name",
    "compile_pass",
    "cudagraph_skips",
    "default_chunk_rows",
    "fresh_compile_caches",
    "get_mode",
    "local_reparameterization",
    "log_sigmoid",
    "philox_draw",
    "retain_freed_memory",
    "set_mode",
    "shared_weights",
    "softplus_power",
    "tanh",
    "using",
]


def set_mode(mode: str) -> None:
    """Select ``auto`` or ``reference`` for this process."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"kernels must be one of {', '.join(MODES)}; got {mode!r}")
    _mode = mode


def get_mode() -> str:
    return _mode


@contextlib.contextmanager
def using(mode: str) -> Iterator[None]:
    """:func:`set_mode` for the ``with`` block, restoring the previous mode after it."""
    previous = _mode
    set_mode(mode)
    try:
        yield
    finally:
        set_mode(previous)


def active(device: torch.device) -> bool:
    """Whether tensors on ``device`` take the fast paths: mode ``auto`` and a CPU."""
    return _mode == "auto" and device.type == "cpu"


def default_chunk_rows(device: torch.device) -> int | None:
    """The evaluation's default cap on (sample, point) rows per forward pass: on CPUs with
    the fast paths, :data:`CPU_CHUNK_ROWS` (larger activations run out of cache and were up to
    2x slower); elsewhere none (the memory cap alone decides)."""
    return CPU_CHUNK_ROWS if active(device) else None
