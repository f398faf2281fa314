"""Replica groups in the speed benchmark: R seeds trained as one stacked model against R
runs one after another, and the whole paper Table 1 projected from them.

Both sides are Lightning epochs of ``run.py``'s trainers on real MNIST (dynamic binarization,
no loggers, checkpoints or test bound): a single run's ``ImportanceWeightedLitModule`` and a
group's ``ReplicaLitModule``, ``steps`` batches per epoch, so the per-step overheads of
Lightning, the optimizer and Python that a group shares are in both. Each measurement is the
second epoch of a fresh two-epoch fit (the first warms caches and allocator up); the fits of
all sides are interleaved round-robin ``repeats`` times and each side's best is kept, so a
slow spell of the machine costs one repeat of every side rather than every repeat of one.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from benchmark.runs.builders import (
    build_datamodule,
    build_module,
    build_replica_datamodule,
    build_replica_module,
)
from benchmark.runs.config import compose_config
from benchmark.speed.timing import synchronize

TABLE1_SEEDS = 5  # seeds per (model, data set) cell of Table 1: one replica group each
ALONE = -1  # the side of a run alone (one config, its own Lightning module), beside the groups


class EpochTimer(pl.Callback):
    """Wall time of every training epoch, start hook to end hook."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.start, self.seconds = device, 0.0, []

    def on_train_epoch_start(self, *args: object) -> None:
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, *args: object) -> None:
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self.start)


WARM_EPOCHS = 1  # epochs of each fit before the timed one


def _trainer(cfg: DictConfig, device: torch.device, steps: int) -> pl.Trainer:
    return instantiate(
        cfg.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        max_epochs=WARM_EPOCHS + 1,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[EpochTimer(device)],
    )


def seconds_per_step(cfgs: Sequence[DictConfig], device: torch.device, steps: int) -> float:
    """Time per step of the warm epoch of ``cfgs`` trained alone (one config) or as a replica
    group."""
    trainer = _trainer(cfgs[0], device, steps)
    if len(cfgs) == 1:
        datamodule = build_datamodule(cfgs[0])
        module = build_module(cfgs[0], datamodule.x_dim)
        bias_of = module.net.init_output_bias
    else:
        datamodule = build_replica_datamodule(cfgs)
        module = build_replica_module(cfgs, datamodule.x_dim)
        bias_of = module.init_output_bias
    datamodule.trainer = trainer
    datamodule.setup("fit")
    bias_of(datamodule.train_pixel_mean().cpu())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=datamodule)
    (timer,) = [c for c in trainer.callbacks if isinstance(c, EpochTimer)]
    return timer.seconds[-1] / steps


def measure_replicas(
    overrides: Sequence[str],
    variants: dict[str, list[str]],
    counts: Sequence[int],
    device: torch.device,
    steps: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """For every model variant: the step of one run alone and of groups of each R in
    ``counts``; ``ratio`` = group step / (R x single step), the group's time against its R
    runs one after another (target <= 1)."""
    sides = [(variant, count) for variant in variants for count in (ALONE, *counts)]
    best = dict.fromkeys(sides, math.inf)
    with tempfile.TemporaryDirectory() as tmp:

        def cfgs(variant: str, n: int) -> list[DictConfig]:
            return [
                compose_config([*overrides, *variants[variant], f"seed={s}", f"results_dir={tmp}"])
                for s in range(n)
            ]

        for _ in range(repeats):
            for variant, count in sides:
                seconds = seconds_per_step(cfgs(variant, abs(count)), device, steps)
                best[variant, count] = min(best[variant, count], seconds)
    return [
        {
            "model": variant,
            "replicas": count,
            "ms": best[variant, count] * 1e3,
            "single_ms": best[variant, ALONE] * 1e3,
            "replica_steps_per_s": count / best[variant, count],
            "ratio": best[variant, count] / (count * best[variant, ALONE]),
        }
        for variant, count in sides
        if count != ALONE
    ]


def project_table1(
    rows: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    datasets: dict[str, tuple[int, int]],
) -> dict[str, Any] | None:
    """Wall time of the whole ``experiment=paper`` Table 1 (every model x data set x
    :data:`TABLE1_SEEDS` seeds) from the measured steps: each cell's seeds one after another,
    and as one group of replicas (its step measured at R = :data:`TABLE1_SEEDS`); evaluation
    at the measured rate, one run after another. None if R = 5 was not measured."""
    cfg = compose_config(["experiment=paper"])
    epochs, samples, batch = cfg.trainer.max_epochs, cfg.eval.n_samples, cfg.optim.batch_size
    group = {r["model"]: r for r in rows if r["replicas"] == TABLE1_SEEDS}
    rate = {row["model"]: row["samples_per_s"] for row in evals}
    if not group:
        return None
    cells = []
    for dataset, (n_train, n_test) in datasets.items():
        for variant, row in group.items():
            steps = epochs * (n_train // batch)
            eval_h = TABLE1_SEEDS * n_test * samples / rate[variant] / 3600
            cells.append(
                {
                    "dataset": dataset,
                    "model": variant,
                    "sequential_h": TABLE1_SEEDS * steps * row["single_ms"] / 3.6e6 + eval_h,
                    "replicas_h": steps * row["ms"] / 3.6e6 + eval_h,
                    "eval_h": eval_h,
                }
            )
    return {
        "epochs": epochs,
        "eval_samples": samples,
        "seeds": TABLE1_SEEDS,
        "cells": cells,
        "sequential_h": sum(c["sequential_h"] for c in cells),
        "replicas_h": sum(c["replicas_h"] for c in cells),
    }
