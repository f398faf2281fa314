"""Runs that differ only in their seeds, trained together as replicas of one stacked model
(:class:`~benchmark.training.replicas.ReplicaLitModule`), then evaluated one by one.

Every replica keeps the run directory, lock, ``result.json``, CSV and W&B run, checkpoint and
image grids of the run it replaces (:func:`benchmark.runs.experiment.run`). A finished run is
skipped, a busy one left to its process, one with a corrupt checkpoint reported; the others
train together, grouped by the step their checkpoints stand at (a fresh run at step 0), so
an interrupted group resumes where it stopped and a replica resumed alone or in another group
continues from its own checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from benchmark import kernels
from benchmark.runs.builders import (
    LAST_CHECKPOINT,
    build_loggers,
    build_replica_datamodule,
    build_replica_module,
    build_replica_trainer,
    test_ll_monitor,
)
from benchmark.runs.experiment import (
    RESULT_FILE,
    TrainedState,
    close_loggers,
    diverged_error,
    finish_run,
    finished_result,
    prepare_process,
)
from benchmark.runs.validation import ConfigError, validate
from benchmark.training.callbacks import ImageGrids
from benchmark.training.checkpointing import CorruptCheckpointError, check_readable
from benchmark.training.module import TrainingDivergedError

log = logging.getLogger(__name__)

Outcome = dict[str, Any] | Exception | None  # result, failure, or None (busy elsewhere)


def group_key(cfg: DictConfig) -> str:
    """What runs of one replica group share: the whole config but ``seed``, interpolations
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


def run_replicas(cfgs: Sequence[DictConfig], commands: Sequence[str | None]) -> list[Outcome]:
    """Train and evaluate the runs ``cfgs`` (one group: they differ only in ``seed``) as
    replicas; ``commands`` rerun each alone. Returns each run's outcome."""
    for cfg in cfgs:
        validate(cfg)
    if len({group_key(cfg) for cfg in cfgs}) > 1:
        raise ConfigError("replicas must differ only in seed; group the runs by their other keys")
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
                log.info("skip %s: finished (%s)", label, run_dir / RESULT_FILE)
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
            outcomes.update(
                zip(
                    members,
                    train_group(
                        [cfgs[i] for i in members],
                        [run_dirs[i] for i in members],
                        [commands[i] for i in members],
                        resume=step > 0,
                    ),
                    strict=True,
                )
            )
    return [outcomes[i] for i in range(len(cfgs))]


def train_group(
    cfgs: Sequence[DictConfig],
    run_dirs: Sequence[Path],
    commands: Sequence[str | None],
    resume: bool,
) -> list[Outcome]:
    """Train ``cfgs`` as replicas from scratch or (``resume``) from their checkpoints, all
    at one step; evaluate and write each; under the group's ``kernels`` mode."""
    with kernels.using(cfgs[0].kernels):
        return _train_group(cfgs, run_dirs, commands, resume)


def _train_group(
    cfgs: Sequence[DictConfig],
    run_dirs: Sequence[Path],
    commands: Sequence[str | None],
    resume: bool,
) -> list[Outcome]:
    started = time.perf_counter()
    cfg = cfgs[0]
    seeds = [c.seed for c in cfgs]
    log.info(
        "%s/%s: training seeds %s as %d replicas%s",
        cfg.dataset.name,
        cfg.model.name,
        seeds,
        len(cfgs),
        " (resuming)" if resume else "",
    )
    prepare_process(cfg)
    datamodule = build_replica_datamodule(cfgs)
    module = build_replica_module(cfgs, datamodule.x_dim)
    trainer = build_replica_trainer(cfg, run_dirs)
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.init_output_bias(datamodule.train_pixel_mean().cpu())
    module.monitor = test_ll_monitor(cfg)
    module.replica_loggers = [build_loggers(c) for c in cfgs]
    for c, loggers in zip(cfgs, module.replica_loggers, strict=True):
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(c, resolve=True))
    checkpoints = [run_dir / LAST_CHECKPOINT for run_dir in run_dirs]
    with contextlib.suppress(TrainingDivergedError):  # every replica diverged: see below
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoints[0] if resume else None)
    train_seconds = time.perf_counter() - started
    outcomes: list[Outcome] = []
    for r, (c, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        if r in module.diverged:
            close_loggers(module.replica_loggers[r])
            outcomes.append(
                diverged_error(TrainingDivergedError(module.diverged[r]), checkpoints[r])
            )
            continue
        net, loggers = module.replica(r), module.replica_loggers[r]
        ImageGrids(run_dir, seed=c.eval.seed).save(net, datamodule.members[r], loggers)
        outcomes.append(
            finish_run(
                c,
                run_dir,
                net,
                datamodule.test_data,
                loggers,
                TrainedState(
                    trainer.global_step,
                    trainer.current_epoch,
                    module.last_train_bounds[r],
                    train_seconds,
                ),
                commands[r],
                extra={"replica_group": {"seeds": seeds, "index": r}},
            )
        )
    return outcomes
