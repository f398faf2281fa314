"""Wall time per call, and the default training step of another checkout against this one's:
``python benchmark/speed/timing.py DEVICE THREADS CALLS [OVERRIDE ...]``, with a checkout on
``PYTHONPATH``, prints :func:`default_step_seconds` there as JSON (at module level this file
imports torch only, so it runs against any checkout)."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any, TypeVar

import torch

MODELS = ("iwae", "iwaer", "iwaerrec")
X_DIM = 784  # MNIST's pixels
REPO_ROOT = Path(__file__).resolve().parents[2]
K = TypeVar("K")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously to the host)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_each(
    fns: Mapping[K, Callable[[], object]],
    device: torch.device,
    calls: int,
    repeats: int,
    warmup: int = 0,
) -> dict[K, float]:
    """Seconds per call of every fn: the best over ``repeats`` rounds of the mean of ``calls``
    back-to-back calls, after ``warmup`` calls of each. Each round times every fn in turn, so
    a slow spell of the machine costs one round of several fns, not every round of one."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for key, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            best[key] = min(best[key], (time.perf_counter() - start) / calls)
    return best


def default_step(net: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The checkout's default training step with its runs' CPU settings and learning rate
    0 (:func:`~benchmark.speed.eta.group_step`): before issue 28, the ``kernels=auto`` eager
    step of its own harness; since, the module's step of one run."""
    try:  # a checkout from before issue 28: its own harness's step
        from benchmark.speed.steps import run_bound, train_step
        from benchmark.training.module import adam
    except ImportError:
        from benchmark.runs.resources import configure_cpu
        from benchmark.speed.eta import group_step

        configure_cpu()
        return group_step([net], x, False)
    importlib.import_module("benchmark.kernels").retain_freed_memory()
    params, frozen = list(net.parameters()), lambda params: adam(params, lr=0.0)
    return train_step(run_bound(net, False), params, x, net.k, frozen)


def default_step_seconds(
    device: str, threads: int, calls: int, overrides: Sequence[str]
) -> dict[str, float]:
    """Seconds per default training step of each model on 784 pixels, at the sizes of its
    config with ``overrides`` (the paper's by default), the best of 3 interleaved rounds."""
    from benchmark.runs.builders import build_model
    from benchmark.runs.config import compose_config

    torch.set_num_threads(threads)
    fns = {}
    for model in MODELS:
        cfg = compose_config([f"model={model}", *overrides])
        torch.manual_seed(0)
        net = build_model(cfg, X_DIM).to(device)
        x = torch.rand(cfg.optim.batch_size, X_DIM, device=device).bernoulli()
        fns[model] = default_step(net, x)
    return time_each(fns, torch.device(device), calls, repeats=3, warmup=2)


def compare_with_baseline(
    baseline: str, device: str, threads: int, calls: int, rounds: int, overrides: Sequence[str]
) -> dict[str, Any]:
    """The commit of the checkout at ``baseline`` (old) and per model the median seconds per
    default step (:func:`default_step_seconds`) of it and of this one (new), each timed in a
    fresh process, the two alternating (old, new; then new, old) for ``rounds`` rounds, and
    the median of each round's new / old."""
    trees = {"old": Path(baseline).resolve(), "new": REPO_ROOT}
    times: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(rounds):
        for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
            proc = subprocess.run(
                [sys.executable, __file__, device, str(threads), str(calls), *overrides],
                cwd=trees[side],
                env={**os.environ, "PYTHONPATH": str(trees[side])},
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise RuntimeError(f"timing the step in {trees[side]} failed:\n{proc.stderr}")
            times[side].append(json.loads(proc.stdout.splitlines()[-1]))
    git = ["git", "-C", baseline, "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    models = {
        model: {
            "old_s": median(t[model] for t in times["old"]),
            "new_s": median(t[model] for t in times["new"]),
            "new_over_old": median(
                n[model] / o[model] for o, n in zip(times["old"], times["new"], strict=True)
            ),
        }
        for model in MODELS
    }
    return {"path": baseline, "commit": commit, "models": models}


if __name__ == "__main__":
    device, threads, calls, *overrides = sys.argv[1:]
    print(json.dumps(default_step_seconds(device, int(threads), int(calls), overrides)))
