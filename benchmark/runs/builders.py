"""Building the parts of a group of runs (one or more, differing only in their seeds) from
their composed configs: data module, models (through the model config's ``_target_``),
Lightning module and trainer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger

from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.wandb_logging import wandb_wanted
from benchmark.training.callbacks import CudaGraphCheck, LogLikelihoodMonitor
from benchmark.training.checkpointing import PerRunCheckpointIO
from benchmark.training.module import ImportanceWeightedLitModule
from datamodules import BinaryImageDataModule
from datamodules.replicas import ReplicaDataModule

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def build_datamodule(cfg: DictConfig) -> BinaryImageDataModule:
    """The datamodule named by ``cfg.dataset`` (its ``name`` key only labels results)."""
    kwargs = {key: value for key, value in cfg.dataset.items() if key != "name"}
    return instantiate(OmegaConf.create(kwargs), _convert_="all")


def build_model(cfg: DictConfig, x_dim: int) -> ImportanceWeightedModel:
    """The model of ``cfg.model`` (its ``_target_`` class, called with the other keys) for
    data of ``x_dim`` pixels and the network of ``cfg.network``."""
    network = OmegaConf.to_container(cfg.network, resolve=True)
    return instantiate(cfg.model, x_dim=x_dim, network=network, _convert_="all")


def build_group_datamodule(cfgs: Sequence[DictConfig]) -> ReplicaDataModule:
    """The data of runs ``cfgs`` that differ only in their seeds, as one group."""
    return ReplicaDataModule([build_datamodule(cfg) for cfg in cfgs])


def build_module(cfgs: Sequence[DictConfig], x_dim: int) -> ImportanceWeightedLitModule:
    """The runs ``cfgs`` (differing only in their seeds) as replicas of one stacked model,
    each model initialised from its seed."""
    nets = []
    for cfg in cfgs:
        pl.seed_everything(cfg.seed, workers=False, verbose=False)
        nets.append(build_model(cfg, x_dim))
    cfg = cfgs[0]
    return ImportanceWeightedLitModule(
        nets,
        [c.seed for c in cfgs],
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        compile=cfg.compile,
    )


def estimator_options(cfg: DictConfig) -> dict[str, Any]:
    """The S-sample estimator's settings shared by the final evaluation and the monitor."""
    return {
        "batch_size": cfg.eval.batch_size,
        "memory_cap_gib": cfg.eval.memory_cap_gib,
        "max_chunk_rows": cfg.eval.max_chunk_rows,
        "seed": cfg.eval.seed,
    }


def logger_configs(cfg: DictConfig) -> list[dict[str, Any]]:
    """The resolved configs of the loggers to start: every entry of ``cfg.logger``, except
    those marked ``only_when_logged_in`` (``logger=auto``'s W&B) when W&B has no
    credentials here (:func:`~benchmark.runs.wandb_logging.wandb_wanted`)."""
    out = []
    for conf in (cfg.get("logger") or {}).values():
        resolved = OmegaConf.to_container(conf, resolve=True)
        if resolved.pop("only_when_logged_in", False) and not wandb_wanted():
            continue
        out.append(resolved)
    return out


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The run's loggers (:func:`logger_configs`), started."""
    return [instantiate(conf) for conf in logger_configs(cfg)]


def last_checkpoint(cfg: DictConfig, run_dir: Path) -> ModelCheckpoint:
    """One file, ``run_dir / LAST_CHECKPOINT``, overwritten (atomically) every n epochs: the
    latest state to resume."""
    return ModelCheckpoint(
        dirpath=run_dir / LAST_CHECKPOINT.parent,
        filename=LAST_CHECKPOINT.stem,
        save_top_k=1,
        every_n_epochs=cfg.checkpoint.every_n_epochs,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )


def test_ll_monitor(cfg: DictConfig) -> LogLikelihoodMonitor | None:
    """``test/ll_monitor`` during training, if ``eval.test_ll_every_n_epochs`` asks for it."""
    if not cfg.eval.test_ll_every_n_epochs:
        return None
    return LogLikelihoodMonitor(
        cfg.eval.test_ll_every_n_epochs,
        n_points=cfg.eval.test_ll_points,
        n_samples=cfg.eval.test_ll_samples,
        **estimator_options(cfg),
    )


def build_trainer(cfg: DictConfig, run_dirs: Sequence[Path]) -> pl.Trainer:
    """Trainer of a group: no loggers of its own (each run logs to its own), ``test/bound``
    every ``eval.test_bound_every_n_epochs`` epochs on its points, and the last checkpoint
    written as one checkpoint per run directory."""
    callbacks: list[pl.Callback] = [last_checkpoint(cfg, run_dirs[0])]
    if cfg.compile == "reduce-overhead":
        callbacks.append(CudaGraphCheck())
    every = cfg.eval.test_bound_every_n_epochs
    val_batches = math.ceil(cfg.eval.test_bound_points / cfg.optim.batch_size) if every else 0
    return instantiate(
        cfg.trainer,
        logger=False,
        callbacks=callbacks,
        plugins=[PerRunCheckpointIO([run_dir / LAST_CHECKPOINT for run_dir in run_dirs])],
        check_val_every_n_epoch=max(every, 1),
        limit_val_batches=val_batches,
    )
