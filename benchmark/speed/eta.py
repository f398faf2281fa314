"""Projected wall time of a sweep on this machine, printed before it starts
(``make reproduce-table1``; ``python -m benchmark.speed.eta OVERRIDE...``).

For every (model, data set) cell of the sweep, on the device a run would use and in its
``compile`` mode: the time of the Lightning module's training step (:func:`group_step`, the
best of a few after warm-up, on binary data of the cell's shape) x steps per epoch x epochs,
plus the S-sample evaluations (the final estimate, of the best epoch too with a validation
split, ``val/ll`` and ``test/ll_monitor``) at the rate of one chunk of the estimator
(:func:`eval_chunk`); times the seeds. Under ``hydra/launcher=replicas`` a cell's seeds train
as one group of up to 30: the timed step is the group's. Lightning's overhead, ``val/bound``
and ``test/bound`` add a few percent.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import Tensor

from benchmark.compilation import CompileMode, fresh_compile_caches
from benchmark.evaluation.estimator import BYTES_PER_GIB, estimate_log_likelihood, samples_per_chunk
from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.builders import build_datamodule, build_model
from benchmark.runs.cli import expand_seed_argument
from benchmark.runs.config import compose_config
from benchmark.runs.resources import configure_cpu
from benchmark.speed.timing import time_each
from benchmark.training.module import ImportanceWeightedLitModule

SWEPT = ("model", "dataset")
MAX_REPLICAS = 30  # conf/hydra/launcher/replicas.yaml
REPLICAS_LAUNCHER = "hydra/launcher=replicas"


def group_step(
    nets: Sequence[ImportanceWeightedModel], x: Tensor, compile: CompileMode
) -> Callable[[], None]:
    """One training step per call of the runs of ``nets`` (one per seed) as one group, as
    ``run.py`` takes it: ``ImportanceWeightedLitModule.training_step`` on ``x [B, D]`` for
    every replica, the backward pass and the runs' fused Adam step, with learning rate 0: every
    call repeats one batch and one noise draw, and training on them would change the step's
    time from call to call (on CPUs, as more of its numbers become subnormal)."""
    seeds = range(len(nets))
    module = ImportanceWeightedLitModule(nets, seeds, lr=0.0, compile=compile).to(x.device)
    optimizer = module.configure_optimizers()
    batch = [x] * len(nets)

    def step() -> None:
        loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def eval_chunk(
    net: ImportanceWeightedModel, x: Tensor, eval_cfg: DictConfig, compile: CompileMode
) -> tuple[Callable[[], object], int]:
    """One chunk of the S-sample estimator per call, on the points ``x`` (as many importance
    samples as it puts in one pass under ``eval_cfg``'s caps), and its (sample, point) rows."""
    cap = eval_cfg.memory_cap_gib
    chunk = samples_per_chunk(
        net, eval_cfg.n_samples, x.shape[0], int(cap * BYTES_PER_GIB), eval_cfg.max_chunk_rows
    )

    def run() -> object:
        return estimate_log_likelihood(
            net, x, chunk, x.shape[0], cap, 0, False, eval_cfg.max_chunk_rows, compile
        )

    return run, chunk * x.shape[0]


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
        return math.ceil(self.seeds / self.replicas) * self.train_s + self.seeds * self.eval_s


def projected_run_seconds(
    cfg: DictConfig, n_train: int, n_test: int, step_s: float, chunk_s: float, chunk_rows: int
) -> tuple[float, float]:
    """(training, evaluation) seconds of one run: ``epochs x (n_train // batch)`` steps, and
    every (point, sample) pair of the final estimate and of the monitored estimates at
    ``chunk_s / chunk_rows`` each."""
    epochs, ev, val_size = cfg.trainer.max_epochs, cfg.eval, cfg.dataset.get("val_size")
    steps = epochs * (n_train // cfg.optim.batch_size)
    pairs = (1 if val_size is None else 2) * n_test * ev.n_samples  # the last (and best)
    if val_size is not None:
        validations = epochs // ev.val_every_n_epochs
        pairs += validations * min(ev.val_ll_points, val_size) * ev.val_ll_samples
    if ev.test_ll_every_n_epochs:
        monitors = epochs // ev.test_ll_every_n_epochs
        pairs += monitors * min(ev.test_ll_points, n_test) * ev.test_ll_samples
    return steps * step_s, pairs * chunk_s / chunk_rows


def time_cell(cfg: DictConfig, replicas: int = 1) -> tuple[float, float]:
    """Projected (training, evaluation) seconds of one run of ``cfg`` on this machine in its
    ``compile`` mode; with ``replicas`` > 1 the training is that of a group of that many."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    n_train, n_test = datamodule.train_data.shape[0], datamodule.test_data.shape[0]
    gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("auto", "gpu", "cuda")
    device, dim = torch.device("cuda" if gpu else "cpu"), datamodule.x_dim  # as Lightning picks
    torch.manual_seed(0)
    net = build_model(cfg, dim).to(device)
    if cfg.compile:  # as each run compiles
        fresh_compile_caches()
    x = torch.rand(max(cfg.optim.batch_size, cfg.eval.batch_size), dim, device=device).bernoulli()
    step = group_step([net] * replicas, x[: cfg.optim.batch_size], cfg.compile)
    evaluate, rows = eval_chunk(net, x[: cfg.eval.batch_size], cfg.eval, cfg.compile)
    times = time_each({"step": step, "eval": evaluate}, device, calls=4, repeats=2, warmup=3)
    return projected_run_seconds(cfg, n_train, n_test, times["step"], times["eval"], rows)


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
    configure_cpu()  # as the runs do
    out = []
    for cell in cells:
        cfg = compose_config(cell)
        if cfg.get("num_threads"):
            torch.set_num_threads(cfg.num_threads)
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
