"""``python run.py -m model=iwaer,iwae seed=0-4 hydra/launcher=replicas``.

The sweep's jobs are grouped by everything but ``seed``; each group (at most
``max_replicas`` runs at a time) trains in this process as one stacked model
(:func:`benchmark.runs.experiment.run_group`), every run keeping its own directory,
``.hydra/`` configs, results, checkpoint and loggers. A config or data error stops the sweep;
a corrupt checkpoint or a diverged run fails that run only, and the sweep exits non-zero
naming the failed runs at the end.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from benchmark.runs.experiment import group_key, rerun_command, run_group, summary_line
from benchmark.runs.validation import ConfigError
from datamodules import DataError

log = logging.getLogger(__name__)


class ReplicasLauncher(Launcher):
    """Runs the sweep's seeds of each configuration as replicas, ``max_replicas`` at most
    per group (one process, one device)."""

    def __init__(self, max_replicas: int = 30) -> None:
        super().__init__()
        if max_replicas < 1:
            raise ConfigError(f"hydra.launcher.max_replicas must be >= 1, got {max_replicas}")
        self.max_replicas = max_replicas
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        groups: dict[str, list[tuple[DictConfig, DictConfig]]] = defaultdict(list)
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            task_config = copy.deepcopy(sweep_config)
            with open_dict(task_config):
                del task_config["hydra"]
            groups[group_key(task_config)].append((sweep_config, task_config))
        log.info("Launching %d jobs as %d replica group(s)", len(job_overrides), len(groups))
        returns: list[JobReturn] = []
        failed: list[str] = []
        for members in groups.values():
            for first in range(0, len(members), self.max_replicas):
                chunk = members[first : first + self.max_replicas]
                returns += self._launch_group(chunk, failed)
        if failed:
            sys.exit(f"error: {len(failed)} run(s) of the sweep failed (see above): {failed}")
        return returns

    def _launch_group(
        self, members: list[tuple[DictConfig, DictConfig]], failed: list[str]
    ) -> list[JobReturn]:
        commands = []
        for sweep_config, task_config in members:
            log.info(
                "\t#%d : %s",
                sweep_config.hydra.job.num,
                " ".join(filter_overrides(sweep_config.hydra.overrides.task)),
            )
            HydraConfig.instance().set_config(sweep_config)
            commands.append(rerun_command())
            _save_hydra_configs(sweep_config, task_config)
        HydraConfig.instance().set_config(members[0][0])  # the group's launcher settings
        try:
            outcomes = run_group([task for _, task in members], commands)
        except (ConfigError, DataError) as err:  # the same for every run of the sweep: stop
            sys.exit(f"error: {err}")
        returns = []
        for (sweep_config, task_config), outcome in zip(members, outcomes, strict=True):
            run_dir = str(task_config.run_dir)
            ret = JobReturn(
                overrides=list(sweep_config.hydra.overrides.task),
                cfg=task_config,
                hydra_cfg=sweep_config,
                working_dir=run_dir,
                task_name=sweep_config.hydra.job.name,
            )
            if isinstance(outcome, Exception):
                print(f"error: {outcome}; the sweep goes on with its other runs", file=sys.stderr)
                failed.append(run_dir)
                ret.status, ret.return_value = JobStatus.FAILED, outcome
            else:
                if outcome is not None:
                    print(summary_line(outcome, Path(run_dir)))
                ret.status = JobStatus.COMPLETED
                ret.return_value = None if outcome is None else outcome["test_ll"]
            returns.append(ret)
        return returns


def _save_hydra_configs(sweep_config: DictConfig, task_config: DictConfig) -> None:
    """``<run_dir>/.hydra/{config,hydra,overrides}.yaml``, as Hydra's own launchers write."""
    subdir = sweep_config.hydra.output_subdir
    if subdir is None:
        return
    out = Path(str(task_config.run_dir)) / str(subdir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task_config, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": sweep_config.hydra}), out / "hydra.yaml")
    OmegaConf.save(
        OmegaConf.create(list(sweep_config.hydra.overrides.task)), out / "overrides.yaml"
    )
