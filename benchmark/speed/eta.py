"""Projected wall time of a sweep on this machine, printed before it starts
(``make reproduce-table1``; ``python -m benchmark.speed.eta OVERRIDE...``).

For every (model, data set) cell of the sweep, on the device a run would use: the time of a
training step (the best of a few after warm-up, on binary data of the cell's shape) x steps
per epoch x epochs, plus the S-sample evaluation and the ``test/ll_monitor`` evaluations at
the rate of one timed chunk of importance samples; times the seeds. Under
``hydra/launcher=replicas`` a cell's seeds train as one group: the timed step is the group's.
Lightning's overhead and ``test/bound`` add a few percent (``make bench``).
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from benchmark import kernels
from benchmark.evaluation.estimator import BYTES_PER_GIB, samples_per_chunk
from benchmark.runs.builders import build_datamodule, build_model
from benchmark.runs.cli import expand_seed_argument
from benchmark.runs.config import compose_config
from benchmark.speed.steps import group_train_step, run_bound, train_step
from benchmark.speed.timing import seconds_per_call

SWEPT = ("model", "dataset")
MAX_REPLICAS = 30  # conf/hydra/launcher/replicas.yaml


REPLICAS_LAUNCHER = "hydra/launcher=replicas"


@dataclass(frozen=True)
class CellTime:
    """Projected seconds of one run of a cell (training of its whole group when ``replicas``
    > 1), and how many seeds the sweep runs of it."""

    dataset: str
    model: str
    train_s: float
    eval_s: float
    seeds: int
    replicas: int = 1

    @property
    def run_s(self) -> float:
        return self.train_s + self.eval_s

    @property
    def total_s(self) -> float:
        """The cell's seeds: one after another, or in groups of ``replicas``."""
        groups = self.seeds if self.replicas == 1 else math.ceil(self.seeds / self.replicas)
        return groups * self.train_s + self.seeds * self.eval_s


def projected_run_seconds(
    cfg: DictConfig, n_train: int, n_test: int, step_s: float, chunk_s: float, chunk_rows: int
) -> tuple[float, float]:
    """(training, evaluation) seconds of one run: ``epochs x (n_train // batch)`` steps, and
    every (point, sample) pair of the final estimate and of the monitored estimates at
    ``chunk_s / chunk_rows`` each."""
    steps = cfg.trainer.max_epochs * (n_train // cfg.optim.batch_size)
    pairs = n_test * cfg.eval.n_samples
    if cfg.eval.test_ll_every_n_epochs:
        monitors = cfg.trainer.max_epochs // cfg.eval.test_ll_every_n_epochs
        pairs += monitors * min(cfg.eval.test_ll_points, n_test) * cfg.eval.test_ll_samples
    return steps * step_s, pairs * chunk_s / chunk_rows


def time_per_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds per call of ``fn``: the best of 2 repeats of 4 calls after 3 warm-up calls."""
    return seconds_per_call(fn, device, calls=4, warmup=3, repeats=2)


def run_device(cfg: DictConfig) -> torch.device:
    """The device a run of ``cfg`` trains on: the GPU where Lightning's accelerator would
    pick one, else the CPU."""
    gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("auto", "gpu", "cuda")
    return torch.device("cuda" if gpu else "cpu")


def time_cell(cfg: DictConfig, replicas: int = 1) -> tuple[float, float]:
    """Projected (training, evaluation) seconds of one run of ``cfg`` on this machine, its
    steps in its ``compile`` mode; with ``replicas`` > 1 the training is that of a group of
    that many seeds."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    n_train, n_test = datamodule.train_data.shape[0], datamodule.test_data.shape[0]
    device = run_device(cfg)
    torch.manual_seed(0)
    net = build_model(cfg, datamodule.x_dim).to(device)
    batch = cfg.optim.batch_size
    x = torch.rand(batch, datamodule.x_dim, device=device).bernoulli()
    generator = torch.Generator(device=device).manual_seed(0)
    if cfg.compile:  # as each run compiles
        kernels.fresh_compile_caches()
    step = (
        train_step(
            run_bound(net, cfg.compile), list(net.parameters()), x, net.k, compile=cfg.compile
        )
        if replicas == 1
        else group_train_step([net] * replicas, x, net.k, cfg.compile)
    )

    cap = int(cfg.eval.memory_cap_gib * BYTES_PER_GIB)
    rows = cfg.eval.max_chunk_rows or kernels.default_chunk_rows(device)
    points = cfg.eval.batch_size
    chunk = samples_per_chunk(net, cfg.eval.n_samples, points, cap, rows)
    x_eval = x[:1].expand(points, -1)

    @torch.no_grad()
    def evaluate() -> None:
        net.log_weights(x_eval, chunk, generator)

    return projected_run_seconds(
        cfg,
        n_train,
        n_test,
        time_per_call(step, device),
        time_per_call(evaluate, device),
        chunk * points,
    )


def sweep_cells(overrides: Sequence[str]) -> tuple[list[list[str]], int]:
    """The overrides of every (model, data set) cell of a ``run.py -m`` sweep, and its number
    of seeds (``seed=A-B``, a list or ``range(A,B)``)."""
    fixed, swept, seeds = [], [], 1
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.startswith(("hydra", "-")):  # launcher settings: not the runs' configs
            continue
        if key == "seed":
            value = expand_seed_argument(arg, multirun=True).partition("=")[2]
            bounds = value.removeprefix("range(").removesuffix(")").split(",")
            seeds = int(bounds[1]) - int(bounds[0]) if value.startswith("range(") else len(bounds)
        elif key in SWEPT:
            swept.append([f"{key}={v}" for v in value.split(",")])
        else:
            fixed.append(arg)
    return [[*fixed, *cell] for cell in itertools.product(*swept)], seeds


def project_sweep(overrides: Sequence[str]) -> list[CellTime]:
    cells, seeds = sweep_cells(overrides)
    replicas = min(seeds, MAX_REPLICAS) if REPLICAS_LAUNCHER in overrides else 1
    out = []
    for cell in cells:
        cfg = compose_config(cell)
        if cfg.get("num_threads"):
            torch.set_num_threads(cfg.num_threads)
        with kernels.using(cfg.kernels):
            if kernels.get_mode() == "auto":
                kernels.retain_freed_memory()  # as the runs do
            train_s, eval_s = time_cell(cfg, replicas)
        out.append(CellTime(cfg.dataset.name, cfg.model.name, train_s, eval_s, seeds, replicas))
    return out


def hours(seconds: float) -> str:
    """``1.5 h`` from 6 minutes up, ``4 min`` from a minute up, else ``20 s``."""
    if seconds >= 360:
        return f"{seconds / 3600:.1f} h"
    return f"{round(seconds / 60)} min" if seconds >= 60 else f"{math.ceil(seconds)} s"


def report(cells: list[CellTime], device: str, experiment: str | None) -> str:
    total = sum(c.total_s for c in cells)
    grouped = any(c.replicas > 1 for c in cells)
    how = "seeds as replicas" if grouped else "runs one after another"
    lines = [f"Projected wall time of this sweep on {device} (timed steps; {how}):"]
    lines += [
        f"  {c.dataset}/{c.model}: training {hours(c.train_s)} for {c.replicas} replicas, "
        f"evaluation {hours(c.eval_s)} per run x {c.seeds} seeds"
        if c.replicas > 1
        else f"  {c.dataset}/{c.model}: {hours(c.run_s)} per run "
        f"(training {hours(c.train_s)}, evaluation {hours(c.eval_s)}) x {c.seeds} seeds"
        for c in cells
    ]
    lines.append(f"  total: {hours(total)}; a parallel launcher divides it by its concurrency")
    if device.startswith("cpu (") and experiment == "paper":
        lines.append(
            "On a CPU the paper protocol takes this long; the reduced budget runs the same sweep "
            "in a fraction of it: make reproduce-table1 PRESET=quick"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    cells = project_sweep(argv)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)"
    experiment = next((a.partition("=")[2] for a in argv if a.startswith("experiment=")), None)
    print(report(cells, device, experiment), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
