"""One run: build data and model from a composed config, train, evaluate, write result.json.

A run directory is locked while a process works in it; a finished run (``result.json`` of the
same protocol) is skipped; an interrupted one resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import Tensor

from benchmark import kernels
from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.builders import (
    LAST_CHECKPOINT,
    build_datamodule,
    build_module,
    build_trainer,
    estimator_options,
)
from benchmark.runs.provenance import (
    git_state,
    package_versions,
    protocol_choices,
    protocol_config,
    protocol_id,
)
from benchmark.runs.resources import apply_job_resources
from benchmark.runs.validation import validate
from benchmark.runs.wandb_logging import offline_sync_hint
from benchmark.training.checkpointing import check_readable
from benchmark.training.module import TrainingDivergedError

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
PER_POINT_FILE = "test_ll_per_point.pt"


class ResultMismatchError(RuntimeError):
    """A run directory holds a result of another protocol."""


def rerun_command() -> str | None:
    """The ``run.py`` command that reruns this job alone (its Hydra overrides, sweep values
    included), or None outside a Hydra job."""
    if not HydraConfig.initialized():
        return None
    return shlex.join(["python", "run.py", *HydraConfig.get().overrides.task])


def summary_line(result: dict[str, Any], run_dir: Path) -> str:
    """The one line a finished run prints."""
    return (
        f"{result['dataset']} {result['model']} seed {result['seed']}: test log-likelihood "
        f"{result['test_ll']:.3f} ± {result['test_ll_se']:.3f} nats "
        f"(S={result['eval_samples']}, n={result['n_test']}) -> {run_dir / RESULT_FILE}"
    )


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def finished_result(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run's ``result.json`` if it exists for this protocol; None if absent or unreadable."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s): running again", path, err)
        return None
    if result.get("protocol_config") != protocol_config(cfg):
        raise ResultMismatchError(
            f"{path} holds a result of a different protocol than this run's: move it away and "
            f"run again."
        )
    return result


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Train and evaluate unless finished (returns the stored result) or busy (returns None)."""
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    label = f"{cfg.dataset.name}/{cfg.model.name} seed {cfg.seed}"
    lock = FileLock(run_dir / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        log.warning("skip %s: another process is running it in %s", label, run_dir)
        return None
    try:
        result = finished_result(cfg, run_dir)
        if result is not None:
            log.info(
                "skip %s: finished, test_ll %.3f (%s)",
                label,
                result["test_ll"],
                run_dir / RESULT_FILE,
            )
            return result
        return train_and_evaluate(cfg, run_dir)
    finally:
        lock.release()


def train_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train the configured model (resuming a checkpoint), estimate its test log-likelihood,
    write ``result.json`` and ``test_ll_per_point.pt``; all under the run's ``kernels``
    mode, restored afterwards."""
    with kernels.using(cfg.kernels):
        return _train_and_evaluate(cfg, run_dir)


def prepare_process(cfg: DictConfig) -> None:
    """This process's settings for a run of ``cfg``: warnings, threads and device, the
    allocator of the fast paths, empty compile caches, and the global seed."""
    # Lightning's hints for DataLoader-based pipelines do not apply to device-resident data,
    # and metrics here are logged per epoch, not every n steps.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    apply_job_resources(cfg)
    if kernels.get_mode() == "auto":
        kernels.retain_freed_memory()
    if cfg.compile:  # a sweep's runs share one process (Hydra's basic launcher)
        kernels.fresh_compile_caches()
    pl.seed_everything(cfg.seed, workers=False, verbose=False)


def diverged_error(err: TrainingDivergedError, checkpoint: Path) -> TrainingDivergedError:
    """``err`` with where the run's last good checkpoint is."""
    kept = (
        f"its last good checkpoint stays in {checkpoint}"
        if checkpoint.is_file()
        else "no checkpoint was written"
    )
    return TrainingDivergedError(f"{err} ({kept})")


def _train_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / LAST_CHECKPOINT).is_file():
        check_readable(run_dir / LAST_CHECKPOINT)
    prepare_process(cfg)

    datamodule = build_datamodule(cfg)
    trainer = build_trainer(cfg, run_dir)
    module = build_module(cfg, datamodule.x_dim)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.net.init_output_bias(datamodule.train_pixel_mean().cpu())
    checkpoint = run_dir / LAST_CHECKPOINT
    resume = checkpoint.is_file()
    if resume:
        log.info("resuming from %s", checkpoint)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint if resume else None)
    except TrainingDivergedError as err:
        raise diverged_error(err, checkpoint) from None
    final_bound = trainer.callback_metrics.get("train/bound")
    return finish_run(
        cfg,
        run_dir,
        module.net,
        datamodule.test_data,
        trainer.loggers,
        TrainedState(
            trainer.global_step,
            trainer.current_epoch,
            None if final_bound is None else float(final_bound),
            time.perf_counter() - started,
        ),
        rerun_command(),
    )


class TrainedState(NamedTuple):
    """Where training ended: optimizer steps, epochs, the last epoch's ``train/bound`` and
    the wall time of training (of the whole group for replicas)."""

    global_step: int
    epochs: int
    final_bound: float | None
    train_seconds: float


def finish_run(
    cfg: DictConfig,
    run_dir: Path,
    net: ImportanceWeightedModel,
    test_data: Tensor,
    loggers: Sequence[Logger],
    trained: TrainedState,
    command: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimate the trained ``net``'s test log-likelihood; write ``test_ll_per_point.pt`` and
    ``result.json`` (with ``extra`` merged in) in ``run_dir``; log to and close ``loggers``."""
    started = time.perf_counter()
    estimate = estimate_log_likelihood(
        net.to(test_data.device),
        test_data,
        n_samples=cfg.eval.n_samples,
        progress=cfg.eval.progress,
        compile=cfg.compile,
        **estimator_options(cfg),
    )
    eval_seconds = time.perf_counter() - started
    torch.save(estimate.per_point, run_dir / PER_POINT_FILE)
    for logger in loggers:
        logger.log_metrics(
            {
                "test/log_likelihood": estimate.mean,
                "test/log_likelihood_se": estimate.standard_error,
            },
            step=trained.global_step,
        )

    result = {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "test_ll": estimate.mean,
        "test_ll_se": estimate.standard_error,
        "n_test": estimate.n_points,
        "eval_samples": estimate.n_samples,
        "epochs": trained.epochs,
        "train_bound_last_epoch": trained.final_bound,
        "protocol_id": protocol_id(cfg),
        "protocol": protocol_choices(cfg),
        "protocol_config": protocol_config(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "command": command,
        "versions": package_versions(),
        "git": git_state(),
        "machine": {
            "platform": platform.platform(),
            "device": str(test_data.device),
            "torch_threads": torch.get_num_threads(),
        },
        "wall_time_s": {
            "train": trained.train_seconds,
            "eval": eval_seconds,
            "total": trained.train_seconds + eval_seconds,
        },
        "per_point_file": PER_POINT_FILE,
        **(extra or {}),
    }
    write_json_atomic(run_dir / RESULT_FILE, result)
    close_loggers(loggers)
    return result


def close_loggers(loggers: Sequence[Logger]) -> None:
    """Flush ``loggers`` and finish their W&B runs (printing how to upload offline ones)."""
    for logger in loggers:
        logger.save()
        if isinstance(logger, WandbLogger):
            hint = offline_sync_hint(logger)
            logger.experiment.finish()
            if hint:
                log.info("W&B run logged offline; upload it with: %s", hint)
