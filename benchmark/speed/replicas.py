"""Replica groups in the speed benchmark: R seeds trained as one stacked model against R
runs one after another, and the whole paper Table 1 projected from them.

Both sides are training steps as the runs take them (:mod:`benchmark.speed.steps`): a run's
step, and a group's step of R replicas (R draws of noise, the stacked loss, one fused Adam
step), eagerly and with ``compile=reduce-overhead`` (the pass replayed from CUDA graphs on
GPUs), timed with their repeats interleaved as every step of ``make bench`` is. Lightning's
work per step (data, binarization, the loop; :mod:`benchmark.speed.epochs`) is measured on a
run's epoch and on a group's, and the projection adds each to its steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmark import kernels
from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.config import compose_config
from benchmark.speed.steps import group_train_step, run_bound, train_step
from benchmark.speed.timing import seconds_per_call_each

TABLE1_SEEDS = 5  # seeds per (model, data set) cell of Table 1: one replica group each


def measure_replicas(
    build: dict[str, Callable[[], ImportanceWeightedModel]],
    x: torch.Tensor,
    k: int,
    counts: list[int],
    modes: Sequence[kernels.CompileMode],
    calls: int,
    warmup: int,
    repeats: int,
    rows: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """For every model variant (``build`` makes one model of it on the device) and every
    ``compile`` mode of ``modes``: a run's step and the step of groups of each R in
    ``counts``, all of a variant timed together; ``ratio`` = group step / (R x a run's step
    in the same mode), the group against its R runs one after another (target <= 1);
    ``cudagraph_skips``: the variant's graphed passes that ran without CUDA graphs. The rows
    are appended to ``rows`` (a new list if None) as each variant finishes."""
    rows = [] if rows is None else rows
    for variant, make in build.items():
        if any(modes):
            kernels.fresh_compile_caches()
        nets = [make() for _ in range(max(counts))]
        steps: dict[tuple[kernels.CompileMode, int], Callable[[], None]] = {}
        for mode in modes:
            bound = run_bound(nets[0], mode)
            steps[mode, 0] = train_step(bound, list(nets[0].parameters()), x, k, compile=mode)
            steps.update({(mode, n): group_train_step(nets[:n], x, k, mode) for n in counts})
        skips = kernels.cudagraph_skips()
        seconds = seconds_per_call_each(steps, x.device, calls, warmup, repeats)
        skipped = None if skips is None else kernels.cudagraph_skips() - skips
        rows += [
            {
                "model": variant,
                "compile": mode,
                "replicas": n,
                "ms": seconds[mode, n] * 1e3,
                "single_ms": seconds[mode, 0] * 1e3,
                "replica_steps_per_s": n / seconds[mode, n],
                "ratio": seconds[mode, n] / (n * seconds[mode, 0]),
                "cudagraph_skips": skipped if mode == "reduce-overhead" else None,
            }
            for mode in modes
            for n in counts
        ]
    return rows


def project_table1(
    rows: list[dict[str, Any]],
    epoch: dict[str, Any],
    group_epochs: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    datasets: dict[str, tuple[int, int]],
) -> dict[str, Any] | None:
    """Wall time of the whole ``experiment=paper`` Table 1 (every model x data set x
    :data:`TABLE1_SEEDS` seeds): each cell's seeds one after another (eager runs), and as one
    group of replicas in each measured ``compile`` mode (its step measured at R =
    :data:`TABLE1_SEEDS`). Every step adds the Lightning work per step measured on an epoch
    (at least 0): a run's for the runs, a group's (in that mode) for the groups; evaluation at
    the measured rate, one run after another. Modes whose group epoch was not measured are
    left out; None if R = 5 or the eager mode (of the groups and their epoch) is missing."""
    cfg = compose_config(["experiment=paper"])
    epochs, samples, batch = cfg.trainer.max_epochs, cfg.eval.n_samples, cfg.optim.batch_size
    group_overhead = {e["compile"]: max(0.0, e["overhead_ms"]) for e in group_epochs}
    run_overhead = max(0.0, epoch["overhead_ms"])
    groups = [r for r in rows if r["replicas"] == TABLE1_SEEDS and r["compile"] in group_overhead]
    single = {r["model"]: r["single_ms"] for r in groups if r["compile"] is False}
    rate = {row["model"]: row["samples_per_s"] for row in evals}
    if not groups or not single:
        return None
    modes = list(dict.fromkeys(r["compile"] for r in groups))
    cells = []
    for dataset, (n_train, n_test) in datasets.items():
        steps = epochs * (n_train // batch)
        for variant, single_ms in single.items():
            eval_h = TABLE1_SEEDS * n_test * samples / rate[variant] / 3600
            sequential = TABLE1_SEEDS * steps * (single_ms + run_overhead) / 3.6e6
            replicas_h = {
                kernels.compile_name(r["compile"]): steps
                * (r["ms"] + group_overhead[r["compile"]])
                / 3.6e6
                + eval_h
                for r in groups
                if r["model"] == variant
            }
            cells.append(
                {
                    "dataset": dataset,
                    "model": variant,
                    "sequential_h": sequential + eval_h,
                    "replicas_h": replicas_h,
                    "eval_h": eval_h,
                }
            )
    totals = {
        kernels.compile_name(m): sum(c["replicas_h"][kernels.compile_name(m)] for c in cells)
        for m in modes
    }
    best = min(totals, key=totals.__getitem__)
    return {
        "epochs": epochs,
        "eval_samples": samples,
        "seeds": TABLE1_SEEDS,
        "lightning_ms_per_step": run_overhead,
        "group_lightning_ms_per_step": {kernels.compile_name(m): group_overhead[m] for m in modes},
        "cells": cells,
        "sequential_h": sum(c["sequential_h"] for c in cells),
        "replicas_h_by_compile": totals,
        "best_compile": best,
        "replicas_h": totals[best],
    }
