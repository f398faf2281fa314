"""Train and evaluate one configuration, or sweep with -m. See README.md.

python run.py model=iwaer dataset=mnist
python run.py -m model=iwaer,iwae seed=0-4
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmark.runs.cli import expand_seed_ranges
from benchmark.runs.config import configure_hydra, one_line_hydra_errors
from benchmark.runs.experiment import run, summary_line
from benchmark.runs.validation import ConfigError
from benchmark.training.checkpointing import CorruptCheckpointError
from benchmark.training.module import TrainingDivergedError
from datamodules import DataError

configure_hydra()
FAILED_RUNS: list[str] = []  # runs of this process's sweep (basic launcher) that failed


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(cfg.run_dir)
    try:
        result = run(cfg)
    except (ConfigError, DataError) as err:  # the same for every run of a sweep: stop
        sys.exit(f"error: {err}")
    except (CorruptCheckpointError, TrainingDivergedError) as err:  # this run only
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            sys.exit(f"error: {err}")
        print(f"error: {err}; the sweep goes on with its other runs", file=sys.stderr)
        FAILED_RUNS.append(str(run_dir))
        return None
    if result is None:
        return None
    print(summary_line(result, run_dir))
    return result["test_ll"]


if __name__ == "__main__":
    try:
        sys.argv[1:] = expand_seed_ranges(sys.argv[1:])
        with one_line_hydra_errors():
            main()
    except ConfigError as err:
        sys.exit(f"error: {err}")
    if FAILED_RUNS:
        sys.exit(f"error: {len(FAILED_RUNS)} run(s) of the sweep failed (see above): {FAILED_RUNS}")
