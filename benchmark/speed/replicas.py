"""Replica groups in the speed benchmark: R seeds trained as one stacked model against R
runs one after another, and the whole paper Table 1 projected from them.

Both sides are training steps as the runs take them (:mod:`benchmark.speed.steps`): a run's
step, and a group's step of R replicas (R draws of noise, the stacked loss, one fused Adam
step), timed with their repeats interleaved as every step of ``make bench`` is. Lightning's
work per step (data, binarization, the loop), measured on a run's epoch, is paid once per
step by a run and once per step by a whole group: the projection adds it per step to both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.config import compose_config
from benchmark.speed.steps import group_train_step, train_step
from benchmark.speed.timing import seconds_per_call_each

TABLE1_SEEDS = 5  # seeds per (model, data set) cell of Table 1: one replica group each


def measure_replicas(
    build: dict[str, Callable[[], ImportanceWeightedModel]],
    x: torch.Tensor,
    k: int,
    counts: list[int],
    calls: int,
    warmup: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """For every model variant (``build`` makes one model of it on the device): a run's step
    and the step of groups of each R in ``counts``, timed together; ``ratio`` = group step /
    (R x a run's step), the group against its R runs one after another (target <= 1)."""
    rows = []
    for variant, make in build.items():
        nets = [make() for _ in range(max(counts))]
        alone = train_step(nets[0].bound, list(nets[0].parameters()), x, k)
        steps = {0: alone, **{n: group_train_step(nets[:n], x, k) for n in counts}}
        seconds = seconds_per_call_each(steps, x.device, calls, warmup, repeats)
        rows += [
            {
                "model": variant,
                "replicas": n,
                "ms": seconds[n] * 1e3,
                "single_ms": seconds[0] * 1e3,
                "replica_steps_per_s": n / seconds[n],
                "ratio": seconds[n] / (n * seconds[0]),
            }
            for n in counts
        ]
    return rows


def project_table1(
    rows: list[dict[str, Any]],
    epoch: dict[str, Any],
    evals: list[dict[str, Any]],
    datasets: dict[str, tuple[int, int]],
) -> dict[str, Any] | None:
    """Wall time of the whole ``experiment=paper`` Table 1 (every model x data set x
    :data:`TABLE1_SEEDS` seeds): each cell's seeds one after another, and as one group of
    replicas (its step measured at R = :data:`TABLE1_SEEDS`). Every step adds Lightning's
    work per step (a run's epoch minus its bare steps, at least 0); evaluation at the measured
    rate, one run after another. None if R = 5 was not measured."""
    cfg = compose_config(["experiment=paper"])
    epochs, samples, batch = cfg.trainer.max_epochs, cfg.eval.n_samples, cfg.optim.batch_size
    overhead_ms = max(0.0, (epoch["epoch_s"] - epoch["steps_s"]) / epoch["steps"] * 1e3)
    group = {r["model"]: r for r in rows if r["replicas"] == TABLE1_SEEDS}
    rate = {row["model"]: row["samples_per_s"] for row in evals}
    if not group:
        return None
    cells = []
    for dataset, (n_train, n_test) in datasets.items():
        for variant, row in group.items():
            steps = epochs * (n_train // batch)
            eval_h = TABLE1_SEEDS * n_test * samples / rate[variant] / 3600
            sequential = TABLE1_SEEDS * steps * (row["single_ms"] + overhead_ms) / 3.6e6
            cells.append(
                {
                    "dataset": dataset,
                    "model": variant,
                    "sequential_h": sequential + eval_h,
                    "replicas_h": steps * (row["ms"] + overhead_ms) / 3.6e6 + eval_h,
                    "eval_h": eval_h,
                }
            )
    return {
        "epochs": epochs,
        "eval_samples": samples,
        "seeds": TABLE1_SEEDS,
        "lightning_ms_per_step": overhead_ms,
        "cells": cells,
        "sequential_h": sum(c["sequential_h"] for c in cells),
        "replicas_h": sum(c["replicas_h"] for c in cells),
    }
