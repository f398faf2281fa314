"""Lightning epochs against as many bare steps: what the training loop adds per step (data,
dynamic binarization, the loop's hooks, logging), for a run and for a replica group."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from benchmark import kernels
from benchmark.runs.builders import (
    build_datamodule,
    build_module,
    build_replica_datamodule,
    build_replica_module,
    build_replica_trainer,
    build_trainer,
)
from benchmark.runs.config import compose_config
from benchmark.speed.steps import group_train_step, run_bound, train_step
from benchmark.speed.timing import seconds_per_call, synchronize


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


def epoch_overrides(device: torch.device, repeats: int, results_dir: str) -> list[str]:
    """``run.py``'s Trainer on ``device`` for ``repeats`` epochs, without the progress bar
    or the test bound."""
    gpu = device.type == "cuda"
    return [
        f"trainer.max_epochs={repeats}",
        f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
        f"trainer.devices={[device.index or 0] if gpu else 1}",
        "trainer.enable_progress_bar=false",
        "eval.test_bound_every_n_epochs=0",
        f"results_dir={results_dir}",
    ]


def _timed_fit(
    trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule
) -> tuple[float, int]:
    """The best epoch of ``trainer.fit`` in seconds, and the steps per epoch; compiled
    from empty caches, as a run is."""
    kernels.fresh_compile_caches()
    device = trainer.strategy.root_device
    timer = EpochTimer(device)
    trainer.callbacks.append(timer)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=datamodule)
    return min(timer.seconds), trainer.global_step // trainer.max_epochs


def _row(
    epoch_s: float, n_steps: int, step: Callable[[], None], device: torch.device, repeats: int
) -> dict[str, Any]:
    bare_s = seconds_per_call(step, device, calls=n_steps, warmup=1, repeats=repeats)
    return {
        "epochs": repeats,
        "steps": n_steps,
        "epoch_s": epoch_s,
        "steps_s": bare_s * n_steps,
        "ratio": epoch_s / (bare_s * n_steps),
        "overhead_ms": (epoch_s / n_steps - bare_s) * 1e3,
    }


def measure_lightning_epoch(
    overrides: Sequence[str], device: torch.device, repeats: int
) -> dict[str, Any]:
    """An epoch of ``run.py``'s Trainer for the config of ``overrides`` (real data, CSV
    logging, no checkpoints or test bound) against the same number of bare steps on one
    batch; the best of ``repeats`` epochs against the best of ``repeats`` rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([*overrides, *epoch_overrides(device, repeats, tmp)])
        datamodule = build_datamodule(cfg)
        module = build_module(cfg, datamodule.x_dim)
        epoch_s, n_steps = _timed_fit(build_trainer(cfg), module, datamodule)
    net = module.net.to(device)
    x = datamodule.train_data[: cfg.optim.batch_size]
    bound = run_bound(net, cfg.compile)
    step = train_step(bound, list(net.parameters()), x, net.k, compile=cfg.compile)
    return {"model": cfg.model.name, **_row(epoch_s, n_steps, step, device, repeats)}


def measure_group_epoch(
    overrides: Sequence[str], device: torch.device, repeats: int, seeds: int
) -> dict[str, Any]:
    """The same for a replica group of ``seeds`` seeds (``hydra/launcher=replicas``'s
    data module, stacked model and Trainer; no loggers), against bare group steps; with
    ``cudagraph_skips`` under ``compile=reduce-overhead``."""
    skips = kernels.cudagraph_skips()
    with tempfile.TemporaryDirectory() as tmp:
        base = [*overrides, *epoch_overrides(device, repeats, tmp)]
        cfgs = [compose_config([*base, f"seed={seed}"]) for seed in range(seeds)]
        datamodule = build_replica_datamodule(cfgs)
        module = build_replica_module(cfgs, datamodule.x_dim)
        run_dirs = [Path(tmp) / f"seed_{seed}" for seed in range(seeds)]
        trainer = build_replica_trainer(cfgs[0], run_dirs)
        epoch_s, n_steps = _timed_fit(trainer, module, datamodule)
    nets = [module.replica(r) for r in range(seeds)]
    x = datamodule.members[0].train_data[: cfgs[0].optim.batch_size]
    step = group_train_step(nets, x, nets[0].k, cfgs[0].compile)
    row = _row(epoch_s, n_steps, step, device, repeats)
    skipped = None if skips is None else kernels.cudagraph_skips() - skips
    return {
        "model": cfgs[0].model.name,
        "replicas": seeds,
        "compile": cfgs[0].compile,
        "cudagraph_skips": skipped if cfgs[0].compile == "reduce-overhead" else None,
        **row,
    }
