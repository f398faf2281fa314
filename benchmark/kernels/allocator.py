"""Keep freed CPU memory in the process, so the next training step reuses it.

glibc's malloc serves large blocks with fresh ``mmap`` pages (above a threshold that adapts
from 128 KiB) and hands free memory at the top of its heap back to the OS. A training step
frees and re-allocates the same tens of MiB of activations every step, so each step
page-faulted them in again: 2,000-9,000 faults per step, 10-15% of an IWAE step on the 2-core
CPU of ``make bench``. This is why PyTorch's CPU tuning guide recommends jemalloc or
tcmalloc; the two ``mallopt`` settings below give glibc the same reuse. Allocations above 32
MiB (glibc's largest mmap threshold) are still mapped afresh.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to 1 GiB of free heap in the
    process (glibc on Linux); True if applied, False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
