"""Building a run's parts from its composed config: data module, model (through the model
config's ``_target_``), Lightning module and trainer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.wandb_logging import wandb_wanted
from benchmark.training.callbacks import ImageGrids, TestLogLikelihoodMonitor, WeightStdMonitor
from benchmark.training.checkpointing import AtomicCheckpointIO
from benchmark.training.module import ImportanceWeightedLitModule
from datamodules import BinaryImageDataModule

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


def build_module(cfg: DictConfig, x_dim: int) -> ImportanceWeightedLitModule:
    return ImportanceWeightedLitModule(
        build_model(cfg, x_dim),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        seed=cfg.seed,
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


def build_trainer(cfg: DictConfig, run_dir: Path | None = None) -> pl.Trainer:
    """Trainer with the configured loggers; with ``run_dir``, also checkpoints and image grids."""
    loggers = [instantiate(conf) for conf in logger_configs(cfg)]
    callbacks: list[pl.Callback] = [WeightStdMonitor()]
    if cfg.eval.test_ll_every_n_epochs:
        callbacks.append(
            TestLogLikelihoodMonitor(
                cfg.eval.test_ll_every_n_epochs,
                n_points=cfg.eval.test_ll_points,
                n_samples=cfg.eval.test_ll_samples,
                **estimator_options(cfg),
            )
        )
    if run_dir is not None:
        callbacks += [
            # One file, overwritten (atomically) every n epochs: the latest state to resume.
            ModelCheckpoint(
                dirpath=run_dir / LAST_CHECKPOINT.parent,
                filename=LAST_CHECKPOINT.stem,
                save_top_k=1,
                every_n_epochs=cfg.checkpoint.every_n_epochs,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            ),
            ImageGrids(run_dir, seed=cfg.eval.seed),
        ]
    every = cfg.eval.test_bound_every_n_epochs
    val_batches = math.ceil(cfg.eval.test_bound_points / cfg.optim.batch_size) if every else 0
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        enable_checkpointing=run_dir is not None,
        plugins=[AtomicCheckpointIO()],
        check_val_every_n_epoch=max(every, 1),
        limit_val_batches=val_batches,
    )
