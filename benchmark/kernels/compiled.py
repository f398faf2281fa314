"""Elementwise kernels that ``torch.compile`` builds for CPUs, with an eager fallback.

Eager PyTorch runs a chain of elementwise ops as one pass over memory per op; compiled, the
chain is one loop that reads its inputs once and keeps the intermediates in registers. On
the 2-core CPU of ``make bench`` that decides the cost of the noise and of the likelihood
over the decoder's [k, B, D] logits (see :mod:`benchmark.kernels.philox`,
:mod:`benchmark.kernels.likelihood`).
Where ``torch.compile`` cannot build kernels (no C++ compiler or Python headers), the
fallbacks run instead, and one warning says how to get the fast path; a call that dynamo
declines (past its recompile limit, say) runs its fallback alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import record_function

log = logging.getLogger(__name__)


class _NeverRaised(Exception):
    """Stands in for an exception class this torch release does not have."""


# torch's compile errors, dispatch-mode check and counters are private APIs: where a release
# moved or renamed one, compile failures are caught as RuntimeError (the base of dynamo's
# errors) one call at a time, no dispatch mode is assumed active, and no count is reported.
try:
    from torch._dynamo import exc as _dynamo_errors
except ImportError:  # pragma: no cover - depends on the torch release
    _dynamo_errors = None
BackendCompilerFailed = getattr(_dynamo_errors, "BackendCompilerFailed", _NeverRaised)
TorchDynamoException = getattr(_dynamo_errors, "TorchDynamoException", RuntimeError)
FailOnRecompileLimitHit = getattr(
    _dynamo_errors,
    "FailOnRecompileLimitHit",
    getattr(_dynamo_errors, "FailOnCacheLimitHit", _NeverRaised),  # its earlier name
)
try:
    from torch._dynamo import utils as _dynamo_utils
except ImportError:  # pragma: no cover - depends on the torch release
    _dynamo_utils = None
try:
    from torch.utils._python_dispatch import is_in_torch_dispatch_mode as _in_dispatch_mode
except ImportError:  # pragma: no cover - depends on the torch release
    _in_dispatch_mode = None


def in_dispatch_mode() -> bool:
    """Whether a user ``TorchDispatchMode`` (a FLOP counter, say) is active, which dynamo does
    not compile under; False where this torch cannot tell."""
    if _in_dispatch_mode is None:
        return False
    try:
        return _in_dispatch_mode(include_infra_modes=False)
    except TypeError:  # releases before the keyword
        return _in_dispatch_mode()


_compile_failed = False
PROFILER_LABELS: set[str] = set()  # profiler ranges of the kernels, for benchmark.speed


class CompiledKernel:
    """``fn`` compiled once per dtype (and number of tensor arguments) into one graph with
    dynamic shapes for plain tensors (dynamo keeps the shapes of ``nn.Parameter``s static, so
    callers pass them detached); ``fallback`` (by default ``fn`` itself) where that fails;
    profiled as the range ``label``. Values only, no
    gradient: an autograd Function around the call supplies the backward. Inside an outer
    ``torch.compile`` region ``fn`` is traced into the caller's graph instead, so it fuses
    with its neighbours there; under a ``TorchDispatchMode`` (FLOP counters, for one), which
    dynamo does not compile, ``fn`` runs eagerly."""

    def __init__(
        self, fn: Callable[..., Any], label: str, fallback: Callable[..., Any] | None = None
    ) -> None:
        self.fn, self.label = fn, label
        self.fallback = fallback or fn
        self.compiled = torch.compile(fn, dynamic=True, fullgraph=True)
        PROFILER_LABELS.add(label)

    def __call__(self, *args: object) -> Any:
        if torch.compiler.is_compiling() or in_dispatch_mode():
            return self.fn(*args)
        # Autocast changes nothing in these elementwise kernels, but dynamo guards on
        # its state and would compile every kernel again under bf16 autocast.
        with torch.no_grad(), torch.autocast("cpu", enabled=False), record_function(self.label):
            return self._run(*args)

    def _run(self, *args: object) -> Any:
        global _compile_failed
        if _compile_failed:
            return self.fallback(*args)
        try:
            return self.compiled(*args)
        except BackendCompilerFailed as error:  # no compiler, no headers: for every kernel
            result = self.fallback(*args)
            _compile_failed = True
            log.warning(
                "torch.compile could not build a CPU kernel (%s); running the eager fallback "
                "instead, which is slower. Install a C++ compiler and the Python headers to "
                "make it fast.",
                error,
            )
            return result
        except (TorchDynamoException, FailOnRecompileLimitHit):  # this call only
            return self.fallback(*args)  # (and if the arguments are wrong, it says how)


CompileMode = bool | str  # the config key ``compile``: false, true or "reduce-overhead"
COMPILE_MODES: tuple[CompileMode, ...] = (False, True, "reduce-overhead")


def compile_name(mode: CompileMode) -> str:
    """``mode`` as the config key ``compile`` spells it: false, true or reduce-overhead."""
    return str(mode).lower()


def compile_pass(fn: Callable[..., Any], mode: CompileMode) -> Callable[..., Any]:
    """``fn`` (a model's random-free pass) as the config key ``compile`` asks: itself for
    false; under ``torch.compile`` for true; for ``reduce-overhead`` compiled with its
    forward and backward captured in CUDA graphs on GPUs (replayed with one launch each; on
    CPUs the same as true). The noise stays an input drawn eagerly from the step's stream, so
    every mode draws the same numbers."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of false, true, reduce-overhead; got {mode!r}")
    if mode is False:
        return fn
    return torch.compile(fn, mode="reduce-overhead" if mode == "reduce-overhead" else None)


def fresh_compile_caches() -> None:
    """Forget every compiled graph. Models share their pass's code object, and torch.compile
    runs a function eagerly after a few recompilations of one code object: so each run of a
    one-process sweep, and each measured model, compiles from empty caches."""
    torch.compiler.reset()


def cudagraph_skips() -> int | None:
    """How many graphs compiled for CUDA graphs so far run without them (inductor's counter
    ``cudagraph_skips``; on CPUs every ``reduce-overhead`` graph counts); None where this
    torch has no dynamo counters (a release that kept them but no longer counts skips would
    read 0). ``TORCH_LOGS=perf_hints`` prints the reasons."""
    counters = getattr(_dynamo_utils, "counters", None)
    if counters is None:
        return None
    return int(counters["inductor"]["cudagraph_skips"])


def begin_graph_step(mode: CompileMode) -> None:
    """Tell CUDA-graph replay that a new training or evaluation step begins (the previous
    step's graph outputs may be overwritten), under ``compile=reduce-overhead``."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
