"""``torch.compile`` as the config key ``compile`` asks for it: false, true, or
reduce-overhead (CUDA graphs on GPUs). The model's pass is the same plain PyTorch in every
mode; the noise is drawn eagerly from the step's stream and passed in, so every mode draws the
same numbers (and rounds them its own way).

The default is false on every device. On GPUs it stays so until a GPU measurement says
otherwise. On the 2-core CPU of ``results/bench.md``, compile=true saves 5-10 ms of a 37-100 ms
training step (10-14%) for 2-8 s of compile time per pass shape, and a run compiles three
(training, ``test/bound``, evaluation): over a quick-preset run's 3,000 steps that is 15-30 s
saved against 12-15 s spent, 1% of the training for IWAE and 5-7% for IWAER and IWAERrec, and
the evaluation gains nothing. It pays on paper-length CPU runs, where ``compile=true`` is
worth passing; as the default it would gain too little to make the tests, which run on CPUs,
take another path than the one GPU users run by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

CompileMode = bool | str  # false, true or "reduce-overhead"
COMPILE_MODES: tuple[CompileMode, ...] = (False, True, "reduce-overhead")
try:  # dynamo's counters are a private API: None where a release moved them
    from torch._dynamo.utils import counters as _dynamo_counters
except ImportError:  # pragma: no cover - depends on the torch release
    _dynamo_counters = None


def compile_name(mode: CompileMode) -> str:
    """``mode`` as the config key ``compile`` spells it: false, true or reduce-overhead."""
    return str(mode).lower()


def compile_pass(fn: Callable[..., Any], mode: CompileMode) -> Callable[..., Any]:
    """``fn`` (a model's random-free pass) as the config key ``compile`` asks: itself for
    false; under ``torch.compile`` for true; for ``reduce-overhead`` compiled with its
    forward and backward captured in CUDA graphs on GPUs (on CPUs the same as true)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of false, true, reduce-overhead; got {mode!r}")
    if mode is False:
        return fn
    return torch.compile(fn, mode="reduce-overhead" if mode == "reduce-overhead" else None)


def fresh_compile_caches() -> None:
    """Forget every compiled graph of this process. Models share their pass's code object,
    and torch.compile runs a function eagerly after a few recompilations of one code object:
    so each run of a one-process sweep, and each measured model, compiles afresh (inductor's
    on-disk cache of generated code stays, and spares later compiles part of their time)."""
    torch.compiler.reset()


def cudagraph_skips() -> int | None:
    """How many graphs compiled for CUDA graphs so far run without them (inductor's counter
    ``cudagraph_skips``; on CPUs every ``reduce-overhead`` graph counts); None where this
    torch has no dynamo counters. ``TORCH_LOGS=perf_hints`` prints the reasons."""
    if _dynamo_counters is None:
        return None
    return int(_dynamo_counters["inductor"]["cudagraph_skips"])


def begin_graph_step(mode: CompileMode) -> None:
    """Tell CUDA-graph replay that a new training or evaluation step begins (the previous
    step's graph outputs may be overwritten), under ``compile=reduce-overhead``."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
