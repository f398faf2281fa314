"""Runs: build data and models from composed configs, train, evaluate, write result.json.

Runs that differ only in their seeds train together as one group (the replicas launcher
makes groups; ``run.py`` alone runs the group of one), then are evaluated one by one. Every
run keeps its own directory, lock, ``result.json``, CSV and W&B run, checkpoint and image
grids. A run directory is locked while a process works in it; a finished run
(``result.json`` of the same protocol) is skipped, a busy one left to its process, one with a
corrupt checkpoint reported; the others train, grouped by the step their checkpoints stand at
(a fresh run at step 0), so an interrupted group resumes where it stopped and a run resumed
alone or in another group continues from its own ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import platform
import shlex
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import Tensor

from benchmark.compilation import fresh_compile_caches
from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.builders import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    build_group_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    estimator_options,
)
from benchmark.runs.provenance import (
    device_name,
    git_state,
    package_versions,
    protocol_choices,
    protocol_config,
    protocol_id,
)
from benchmark.runs.resources import apply_job_resources, configure_cpu
from benchmark.runs.validation import ConfigError, validate
from benchmark.runs.wandb_logging import offline_sync_hint
from benchmark.training.callbacks import save_image_grids
from benchmark.training.checkpointing import (
    CorruptCheckpointError,
    check_readable,
    load_weights,
    saved_best,
)
from benchmark.training.module import TrainingDivergedError
from datamodules import BinaryImageDataModule

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
PER_POINT_FILES = {"last": "test_ll_per_point.pt", "best": "test_ll_per_point_best.pt"}

Outcome = dict[str, Any] | Exception | None  # result, failure, or None (busy elsewhere)


class ResultMismatchError(RuntimeError):
    """A run directory holds a result of another protocol."""


def rerun_command() -> str | None:
    """The ``run.py`` command that reruns this job alone (its Hydra overrides, sweep values
    included), or None outside a Hydra job."""
    if not HydraConfig.initialized():
        return None
    return shlex.join(["python", "run.py", *HydraConfig.get().overrides.task])


def summary_line(result: dict[str, Any], run_dir: Path) -> str:
    """The one line a finished run prints (with a validation split: at which epoch, and the
    other checkpoint's estimate)."""
    checkpoints = result.get("checkpoints", {})
    where = ""
    if "best" in checkpoints:
        chosen = result["checkpoint"]
        other = "last" if chosen == "best" else "best"
        where = (
            f"; {chosen} epoch {checkpoints[chosen]['epoch']}, {other} epoch "
            f"{checkpoints[other]['epoch']}: {checkpoints[other]['test_ll']:.3f}"
        )
    return (
        f"{result['dataset']} {result['model']} seed {result['seed']}: test log-likelihood "
        f"{result['test_ll']:.3f} ± {result['test_ll_se']:.3f} nats "
        f"(S={result['eval_samples']}, n={result['n_test']}{where}) -> {run_dir / RESULT_FILE}"
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
    if result.get("checkpoint", "last") != cfg.eval.checkpoint:  # both are scored
        result = with_headline(result, cfg.eval.checkpoint)
        write_json_atomic(path, result)
        log.info("%s: test_ll is now the %s checkpoint's", path, cfg.eval.checkpoint)
    return result


def at_checkpoint(result: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """``result`` scored at its ``checkpoint`` ("best" or "last", from its ``checkpoints``):
    its ``checkpoint``, ``test_ll``, ``test_ll_se`` and ``per_point_file`` that checkpoint's."""
    chosen = result["checkpoints"][checkpoint]
    scored = {k: chosen[k] for k in ("test_ll", "test_ll_se", "per_point_file")}
    return {**result, **scored, "checkpoint": checkpoint}


def with_headline(result: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """``result`` whose ``test_ll``, ``test_ll_se`` and ``per_point_file`` (what the table
    reads) are those of ``checkpoint`` ("last" or "best") among its ``checkpoints``."""
    result = at_checkpoint(result, checkpoint)
    result["config"]["eval"]["checkpoint"] = checkpoint
    return result


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and evaluate the run ``cfg`` in its ``run_dir`` (the group of one) unless
    finished (returns the stored result) or busy (returns None); its failure is raised."""
    (outcome,) = run_group([cfg], [rerun_command()])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def group_key(cfg: DictConfig) -> str:
    """What runs of one group share: the whole config but ``seed``, interpolations
    unresolved (the run directory, logger names and ids follow the seed)."""
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("seed")
    return OmegaConf.to_yaml(OmegaConf.create(config), sort_keys=True)


def checkpoint_step(run_dir: Path) -> int:
    """The optimizer step the run's last checkpoint stands at; 0 without one."""
    path = run_dir / LAST_CHECKPOINT
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


def run_group(cfgs: Sequence[DictConfig], commands: Sequence[str | None]) -> list[Outcome]:
    """Train and evaluate the runs ``cfgs`` (one group: they differ only in ``seed``) together;
    ``commands`` rerun each alone. Returns each run's outcome."""
    for cfg in cfgs:
        validate(cfg)
    if len({group_key(cfg) for cfg in cfgs}) > 1:
        raise ConfigError("replicas must differ only in seed; group the runs by their other keys")
    if len(cfgs) > 1 and cfgs[0].eval.early_stopping_patience is not None:
        raise ConfigError(
            "eval.early_stopping_patience stops each run at its own epoch, which runs sharing "
            "a group cannot: run them without hydra/launcher=replicas"
        )
    run_dirs = [Path(cfg.run_dir) for cfg in cfgs]
    outcomes: dict[int, Outcome] = {}
    with ExitStack() as locks:
        waiting: dict[int, list[int]] = defaultdict(list)
        for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
            label = f"{cfg.dataset.name}/{cfg.model.name} seed {cfg.seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(run_dir / ".lock", timeout=0)
            try:
                lock.acquire()
            except Timeout:
                log.warning("skip %s: another process is running it in %s", label, run_dir)
                outcomes[i] = None
                continue
            locks.callback(lock.release)
            result = finished_result(cfg, run_dir)
            if result is not None:
                log.info(
                    "skip %s: finished, test_ll %.3f (%s)",
                    label,
                    result["test_ll"],
                    run_dir / RESULT_FILE,
                )
                outcomes[i] = result
                continue
            try:
                if (run_dir / LAST_CHECKPOINT).is_file():
                    check_readable(run_dir / LAST_CHECKPOINT)
            except CorruptCheckpointError as err:
                outcomes[i] = err
                continue
            waiting[checkpoint_step(run_dir)].append(i)
        for step, members in sorted(waiting.items()):
            trained = train_group(
                [cfgs[i] for i in members],
                [run_dirs[i] for i in members],
                [commands[i] for i in members],
                resume=step > 0,
            )
            outcomes.update(zip(members, trained, strict=True))
    return [outcomes[i] for i in range(len(cfgs))]


def prepare_process(cfg: DictConfig) -> None:
    """This process's settings for a run of ``cfg``: warnings, threads and device, fast CPU
    arithmetic, empty compile caches, and the global seed."""
    # Lightning's hints for DataLoader-based pipelines do not apply to device-resident data,
    # and metrics here are logged per epoch, not every n steps.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    apply_job_resources(cfg)
    configure_cpu()
    if cfg.compile:  # a sweep's runs share one process (Hydra's basic launcher)
        fresh_compile_caches()
    pl.seed_everything(cfg.seed, workers=False, verbose=False)


def diverged_error(err: TrainingDivergedError, checkpoint: Path) -> TrainingDivergedError:
    """``err`` with where the run's last good checkpoint is."""
    kept = (
        f"its last good checkpoint stays in {checkpoint}"
        if checkpoint.is_file()
        else "no checkpoint was written"
    )
    return TrainingDivergedError(f"{err} ({kept})")


def train_group(
    cfgs: Sequence[DictConfig],
    run_dirs: Sequence[Path],
    commands: Sequence[str | None],
    resume: bool,
) -> list[Outcome]:
    """Train ``cfgs`` together from scratch or (``resume``) from their checkpoints, all at
    one step; evaluate and write each."""
    started = time.perf_counter()
    cfg = cfgs[0]
    seeds = [c.seed for c in cfgs]
    plural = "s" if len(seeds) > 1 else ""
    log.info("%s/%s: training seed%s %s", cfg.dataset.name, cfg.model.name, plural, seeds)
    checkpoints = [run_dir / LAST_CHECKPOINT for run_dir in run_dirs]
    if resume:
        log.info("resuming from %s", ", ".join(map(str, checkpoints)))
    prepare_process(cfg)
    datamodule = build_group_datamodule(cfgs)
    module = build_module(cfgs, datamodule.x_dim)
    trainer = build_trainer(cfg, run_dirs)
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.init_output_bias(datamodule.train_pixel_mean().cpu())
    module.replica_loggers = [build_loggers(c) for c in cfgs]
    for c, loggers in zip(cfgs, module.replica_loggers, strict=True):
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(c, resolve=True))
    with contextlib.suppress(TrainingDivergedError):  # every replica diverged: see below
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoints[0] if resume else None)
    module.to(datamodule.test_data.device)  # Lightning's teardown moved it to the CPU
    train_seconds = time.perf_counter() - started
    outcomes: list[Outcome] = []
    for r, (c, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        loggers = module.replica_loggers[r]
        if r in module.diverged:
            close_loggers(loggers)
            error = TrainingDivergedError(module.diverged[r])
            outcomes.append(diverged_error(error, checkpoints[r]))
            continue
        net = module.replica(r)
        save_image_grids(run_dir, net, datamodule.members[r], loggers, seed=c.eval.seed)
        trained = TrainedState(
            trainer.global_step, trainer.current_epoch, module.last_train_bounds[r], train_seconds
        )
        group = {"replica_group": {"seeds": seeds, "index": r}} if len(cfgs) > 1 else None
        outcomes.append(
            finish_run(
                c,
                run_dir,
                net,
                datamodule.members[r],
                loggers,
                trained,
                commands[r],
                group,
                module.best[r],
            )
        )
    return outcomes


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
    data: BinaryImageDataModule,
    loggers: Sequence[Logger],
    trained: TrainedState,
    command: str | None,
    extra: dict[str, Any] | None = None,
    best: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimate the test log-likelihood (on the test split of ``data``, the run's data module)
    of the trained ``net`` (the last checkpoint) and, with a validation split, of its ``best``
    epoch (``{"epoch", "val_ll"}``; weights in ``BEST_CHECKPOINT``); write each one's
    per-point file and ``result.json`` (with ``extra`` merged in, ``test_ll`` of
    ``eval.checkpoint``) in ``run_dir``; log to and close ``loggers``."""
    started = time.perf_counter()
    test_data = data.test_data
    net = net.to(test_data.device)
    scored = {"last": score(cfg, run_dir, net, test_data, "last", {"epoch": trained.epochs})}
    if best is not None and best["epoch"] == trained.epochs:  # the same weights
        scored["best"] = {**scored["last"], **best}
    elif best is not None:  # as best.ckpt records it: a crash may leave a retrained epoch's
        best_net = load_weights(copy.deepcopy(net), run_dir / BEST_CHECKPOINT)
        saved = saved_best(run_dir / BEST_CHECKPOINT)
        scored["best"] = score(cfg, run_dir, best_net, test_data, "best", saved)
    eval_seconds = time.perf_counter() - started
    for logger in loggers:
        for name, record in scored.items():
            suffix = "" if name == "last" else f"_{name}"
            logger.log_metrics(
                {
                    f"test/log_likelihood{suffix}": record["test_ll"],
                    f"test/log_likelihood_se{suffix}": record["test_ll_se"],
                },
                step=trained.global_step,
            )

    result = {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "test_ll": None,  # with_headline: the checkpoint of eval.checkpoint
        "test_ll_se": None,
        "n_train": data.train_data.shape[0],
        "n_test": test_data.shape[0],
        "eval_samples": cfg.eval.n_samples,
        "epochs": trained.epochs,
        "train_bound_last_epoch": trained.final_bound,
        "checkpoints": scored,
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
            "device_name": device_name(test_data.device),
            "torch_threads": torch.get_num_threads(),
        },
        "wall_time_s": {
            "train": trained.train_seconds,
            "eval": eval_seconds,
            "total": trained.train_seconds + eval_seconds,
        },
        "per_point_file": None,
        **(extra or {}),
    }
    result = with_headline(result, cfg.eval.checkpoint)
    write_json_atomic(run_dir / RESULT_FILE, result)
    close_loggers(loggers)
    return result


def score(
    cfg: DictConfig,
    run_dir: Path,
    net: ImportanceWeightedModel,
    test_data: Tensor,
    checkpoint: str,
    record: dict[str, Any],
) -> dict[str, Any]:
    """``record`` with the S-sample test log-likelihood of ``net`` (the ``checkpoint`` of
    the run in ``run_dir``), its standard error over test points, and the file of its
    per-point estimates (written)."""
    estimate = estimate_log_likelihood(
        net,
        test_data,
        n_samples=cfg.eval.n_samples,
        progress=cfg.eval.progress,
        compile=cfg.compile,
        **estimator_options(cfg),
    )
    torch.save(estimate.per_point, run_dir / PER_POINT_FILES[checkpoint])
    return {
        **record,
        "test_ll": estimate.mean,
        "test_ll_se": estimate.standard_error,
        "per_point_file": PER_POINT_FILES[checkpoint],
    }


def close_loggers(loggers: Sequence[Logger]) -> None:
    """Flush ``loggers`` and finish their W&B runs (printing how to upload offline ones)."""
    for logger in loggers:
        logger.save()
        if isinstance(logger, WandbLogger):
            hint = offline_sync_hint(logger)
            logger.experiment.finish()
            if hint:
                log.info("W&B run logged offline; upload it with: %s", hint)
