"""Building the parts of a group of runs (one or more, differing only in their seeds) from
their composed configs: data module, models (through the model config's ``_target_``),
Lightning module and trainer."""

from __future__ import annotations

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
from benchmark.training.callbacks import BoundMonitor, CudaGraphCheck, LogLikelihoodMonitor
from benchmark.training.checkpointing import BestCheckpoints, PerRunCheckpointIO
from benchmark.training.module import ImportanceWeightedLitModule
from datamodules import BinaryImageDataModule
from datamodules.replicas import ReplicaDataModule

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"


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
    module = ImportanceWeightedLitModule(
        nets,
        [c.seed for c in cfgs],
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        compile=cfg.compile,
    )
    module.val_ll, module.test_bound, module.test_ll = monitors(cfg)
    module.patience = cfg.eval.early_stopping_patience
    return module


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


def monitors(
    cfg: DictConfig,
) -> tuple[LogLikelihoodMonitor | None, BoundMonitor | None, LogLikelihoodMonitor | None]:
    """What is estimated during training besides the training bound: ``val/ll`` (with a
    validation split), and the test trajectories ``test/bound`` and ``test/ll_monitor`` where
    ``eval.test_*_every_n_epochs`` asks for them; None where off."""
    ev, options = cfg.eval, estimator_options(cfg)
    val_ll = test_bound = test_ll = None
    if cfg.dataset.get("val_size") is not None:
        val_ll = LogLikelihoodMonitor(
            ev.val_every_n_epochs, ev.val_ll_points, ev.val_ll_samples, "val", **options
        )
    if ev.test_bound_every_n_epochs:
        test_bound = BoundMonitor(ev.test_bound_every_n_epochs, ev.test_bound_points, ev.batch_size)
    if ev.test_ll_every_n_epochs:
        test_ll = LogLikelihoodMonitor(
            ev.test_ll_every_n_epochs, ev.test_ll_points, ev.test_ll_samples, "test", **options
        )
    return val_ll, test_bound, test_ll


def build_trainer(cfg: DictConfig, run_dirs: Sequence[Path]) -> pl.Trainer:
    """Trainer of a group: no loggers of its own (each run logs to its own), the validation
    loop every ``eval.val_every_n_epochs`` epochs on the validation split if there is one
    (each run's best weights in its ``BEST_CHECKPOINT``), and the last checkpoint written as
    one checkpoint per run directory."""
    callbacks: list[pl.Callback] = [last_checkpoint(cfg, run_dirs[0])]
    if cfg.compile == "reduce-overhead":
        callbacks.append(CudaGraphCheck())
    validated = cfg.dataset.get("val_size") is not None
    if validated:
        callbacks.append(BestCheckpoints([run_dir / BEST_CHECKPOINT for run_dir in run_dirs]))
    return instantiate(
        cfg.trainer,
        logger=False,
        callbacks=callbacks,
        plugins=[PerRunCheckpointIO([run_dir / LAST_CHECKPOINT for run_dir in run_dirs])],
        check_val_every_n_epoch=cfg.eval.val_every_n_epochs if validated else 1,
        limit_val_batches=1.0 if validated else 0,
    )
