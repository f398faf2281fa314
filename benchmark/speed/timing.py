"""Measuring tools of the speed benchmark: wall time per call, peak memory, op profiles.

All timings synchronise the device before reading the clock, so GPU work is included.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import TracebackType

import torch
from torch.profiler import ProfilerActivity, profile

# Kineto, the profiler's backend, logs every profiler start and stop to stderr, and on a
# machine without a GPU an "ERROR ... gpuGetDeviceCount failed" that is not one; level 6
# silences it (read when the profiler first starts; a value set by the user wins).
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call_each(
    fns: Mapping[str, Callable[[], object]],
    device: torch.device,
    calls: int,
    warmup: int = 1,
    repeats: int = 3,
) -> dict[str, float]:
    """For every fn: the best over ``repeats`` of the mean wall time of ``calls`` back-to-back
    calls, after ``warmup`` untimed calls. The repeats of several fns are interleaved
    round-robin, each after one untimed call of its fn to bring its data back into cache, so
    interference from other processes that lasts a while costs one repeat of several fns,
    not every repeat of one; the minimum then filters it out."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            if len(fns) > 1:
                fn()
                synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def seconds_per_call(
    fn: Callable[[], object], device: torch.device, calls: int, warmup: int = 1, repeats: int = 3
) -> float:
    """:func:`seconds_per_call_each` of one fn."""
    return seconds_per_call_each({"fn": fn}, device, calls, warmup, repeats)["fn"]


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so the resident set counts
    live memory only; a no-op without glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return


class PeakMemory:
    """Peak memory a block adds: the CUDA allocator's peak on GPUs; on Linux CPUs the peak
    resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) above the resident set
    at entry, after freed heap pages are returned to the OS (otherwise the block could reuse
    them unseen). ``peak_bytes`` is None where neither is available."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None
        self._base: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        _release_free_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return self
        rss = _proc_status_kib("VmRSS")
        self._base = None if rss is None else rss * 1024
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._base is None:
            return
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        hwm = _proc_status_kib("VmHWM")
        if hwm is not None:
            self.peak_bytes = max(0, hwm * 1024 - self._base)


def profile_ops(
    fn: Callable[[], object],
    device: torch.device,
    calls: int,
    top: int = 8,
    ranges: Collection[str] = (),
) -> dict[str, object]:
    """Self time per call of the ``top`` most expensive ops of ``fn`` (after one warm-up call),
    and the share of all op time spent in matrix products. Ops inside a ``record_function``
    range named in ``ranges`` count as that range, so a compiled kernel called there is not
    lumped with the model's compiled graphs."""
    fn()
    synchronize(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)

    def self_us(event: object) -> float:
        if device.type == "cuda":
            return event.self_device_time_total
        return event.self_cpu_time_total

    per_op: dict[str, float] = {}
    for event in prof.events():
        name = _enclosing_range(event, ranges) or op_name(event.name)
        per_op[name] = per_op.get(name, 0.0) + self_us(event)
    total = sum(per_op.values())
    gemm = sum(us for name, us in per_op.items() if name in GEMM_OPS)
    ranked = sorted(((us, name) for name, us in per_op.items() if us > 0), reverse=True)
    return {
        "total_ms_per_call": total / 1e3 / calls,
        "gemm_share": gemm / total if total else math.nan,
        "top_ops": [
            {
                "op": name,
                "ms_per_call": us / 1e3 / calls,
                "share": us / total,
                "gemm": name in GEMM_OPS,
            }
            for us, name in ranked[:top]
        ],
    }


def _enclosing_range(event: object, ranges: Collection[str]) -> str | None:
    """The outermost of ``event`` and its ancestors whose name is in ``ranges``, if any."""
    found = None
    while event is not None:
        if event.name in ranges:
            found = event.name
        event = event.cpu_parent
    return found


def op_name(key: str) -> str:
    """A profiler event's name, with torch.compile's per-graph hashes and indices dropped so
    that all graphs of one kind add up: ``## Call CompiledFxGraph f4jv... ##`` becomes
    ``compiled graph (fused ops)``, ``Torch-Compiled Region: 0/7`` ``Torch-Compiled Region``."""
    if key.startswith("## Call CompiledFxGraph"):
        return "compiled graph (fused ops)"
    if key.startswith("Torch-Compiled Region"):
        return "Torch-Compiled Region"
    return key
