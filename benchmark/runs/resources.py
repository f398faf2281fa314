"""This process's settings for fast CPU arithmetic, and the machine divided among the jobs
of a parallel launcher.

Two process settings make the same ops fast on CPUs (:func:`configure_cpu`; other devices
ignore them):

- Subnormal floats flush to zero. The bound's gradient weights every importance sample by
  its normalized weight, and most are below float32's smallest normal number (1e-38): x86
  cores take microcode assists on each subnormal, which made an IWAER training step 3-10x
  slower as training went on. Flushed, such a sample contributes exactly 0 instead of less
  than 1e-38 of the largest one.
- glibc's malloc serves large blocks with fresh ``mmap`` pages and hands free memory at the
  top of its heap back to the OS. A training step frees and re-allocates the same tens of
  MiB of activations every step, so each step page-faulted them in again (10-15% of an IWAE
  step on a 2-core CPU). PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for this;
  two ``mallopt`` settings give glibc the same reuse (:func:`retain_freed_memory`).

Under Hydra's joblib launcher, ``n_jobs`` runs share the machine: unless the user sets
``num_threads``, each run gets ``cores / n_jobs`` torch threads (two 2-thread jobs on 2 cores
ran 7x slower than two 1-thread jobs), and on a machine with several GPUs job ``i`` trains on
GPU ``i mod (number of GPUs)``.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

JOBLIB = "JoblibLauncher"
_M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def configure_cpu() -> None:
    """Flush subnormal floats to zero and keep freed memory for reuse (see the module)."""
    torch.set_flush_denormal(True)
    retain_freed_memory()


def retain_freed_memory() -> bool:
    """Serve blocks up to 32 MiB (glibc's largest mmap threshold) from the heap and keep up to
    1 GiB of free heap in the process (glibc on Linux); True if applied, False where there is
    no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parallel_jobs() -> tuple[int, int] | None:
    """``(n_jobs, job number)`` when this run is a job of the joblib launcher, else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    launcher = hydra.get("launcher") or {}
    if JOBLIB not in str(launcher.get("_target_", "")):
        return None
    n_jobs = int(launcher.get("n_jobs") or 1)
    return (available_cores() if n_jobs < 1 else n_jobs), int(hydra.job.get("num") or 0)


def threads_per_job(num_threads: int | None, n_jobs: int, cores: int) -> int | None:
    """The user's ``num_threads`` if set, else ``cores // n_jobs`` (at least 1) for parallel
    jobs, else None (torch's default)."""
    if num_threads:
        return num_threads
    return max(1, cores // n_jobs) if n_jobs > 1 else None


def device_of_job(job_number: int, n_gpus: int) -> int | None:
    """The GPU index of job ``job_number`` on a machine with ``n_gpus`` GPUs (None: one or
    none, nothing to assign)."""
    return job_number % n_gpus if n_gpus > 1 else None


def apply_job_resources(cfg: DictConfig) -> None:
    """Set this run's torch threads and, under the joblib launcher on a multi-GPU machine,
    its GPU (``cfg.trainer.devices``, which the estimator follows)."""
    jobs = parallel_jobs()
    n_jobs, job_number = jobs if jobs else (1, 0)
    threads = threads_per_job(cfg.get("num_threads"), n_jobs, available_cores())
    if threads:
        torch.set_num_threads(threads)
    n_gpus = torch.cuda.device_count() if cfg.trainer.get("accelerator") in ("auto", "gpu") else 0
    device = device_of_job(job_number, n_gpus) if jobs else None
    if device is not None and cfg.trainer.get("devices") == 1:
        cfg.trainer.devices = [device]
