"""Lightning training of any model of :mod:`benchmark.models`: maximise the one-draw L_k
estimate with Adam, for R runs that differ only in their seeds at once (a single run is the
group of one).

Replica r is exactly the run of seed ``seeds[r]``: its own initialisation (built by the caller
from its seed), data order and binarization (its member of
:class:`~datamodules.replicas.ReplicaDataModule`), noise streams ``(seed_r, "train", step)``
and ``(seed_r, "test-bound", batch)``, and Adam per element. The loss is
``-sum_r mean_b L_k(x_rb)``: each replica's gradient is its own loss's, in its slice of the
stacked parameters (:class:`~benchmark.training.stacked.StackedReplicas`), so one fused Adam
step updates every replica as its own optimizer would. Each replica logs its own metrics,
under the same keys, to its own loggers (:attr:`ImportanceWeightedLitModule.replica_loggers`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from torch import Tensor

from benchmark.compilation import CompileMode, begin_graph_step
from benchmark.models.base import ImportanceWeightedModel
from benchmark.randomness.noise import draw_stacked_normal
from benchmark.randomness.seeding import derive_seed, make_generator
from benchmark.training.callbacks import LogLikelihoodMonitor, weight_std_stats
from benchmark.training.checkpointing import REPLICAS_KEY
from benchmark.training.stacked import StackedReplicas


class TrainingDivergedError(FloatingPointError):
    """The training bound became NaN or infinite."""


class ImportanceWeightedLitModule(pl.LightningModule):
    """Trains ``nets`` (one per seed of ``seeds``, one architecture, each with its own k =
    ``net.k``) as :class:`StackedReplicas`.

    Per replica, ``train/bound`` is the epoch's mean of ``mean_b L_k(x_b)`` on the binarized
    training minibatches (the bound itself, in nats), and ``test/bound`` (validation loop, on
    the first test points of a fixed random order) L_k with the same noise at every epoch. A
    replica whose training bound becomes NaN or infinite is marked in :attr:`diverged` (its
    message) and no longer logged or checkpointed; the others train on, and when all have
    diverged the fit stops with :class:`TrainingDivergedError`.
    """

    def __init__(
        self,
        nets: Sequence[ImportanceWeightedModel],
        seeds: Sequence[int],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        compile: CompileMode = False,
    ) -> None:
        super().__init__()
        if len(nets) != len(seeds):
            raise ValueError(f"{len(nets)} models for {len(seeds)} seeds")
        self.save_hyperparameters(ignore=["nets"])
        self.replicas = StackedReplicas(nets, compile)
        self.seeds = list(seeds)
        self.replica_loggers: list[list[Logger]] = [[] for _ in seeds]
        self.monitor: LogLikelihoodMonitor | None = None
        self.diverged: dict[int, str] = {}
        self.last_train_bounds: list[float | None] = [None] * len(seeds)
        self._generators: list[torch.Generator] = []
        self._train_sum: Tensor | None = None
        self._train_steps = 0
        self._test_sum: Tensor | None = None
        self._test_count = 0

    def replica(self, r: int) -> ImportanceWeightedModel:
        return self.replicas.replica(r)

    @torch.no_grad()
    def init_output_bias(self, pixel_mean: Tensor) -> None:
        """Every replica's output bias = logit of the mean training pixel (written through
        the replicas' views into the stacked parameters)."""
        for r in range(len(self.seeds)):
            self.replica(r).init_output_bias(pixel_mean)

    def step_generators(self, device: torch.device) -> list[torch.Generator]:
        """One generator per replica on ``device``, seeded for ``(seed_r, "train", step)``."""
        if not self._generators or self._generators[0].device != device:
            self._generators = [torch.Generator(device=device) for _ in self.seeds]
        for generator, seed in zip(self._generators, self.seeds, strict=True):
            generator.manual_seed(derive_seed(seed, "train", self.global_step))
        return self._generators

    def _bounds(self, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """``L_k [R, B]`` of every replica on ``x [R, B, D]``, replica r's noise from
        ``generators[r]``."""
        net = self.replicas.nets[0]  # noise shapes only: the same for every replica
        noise = draw_stacked_normal(net.noise_shapes(x.shape[1], net.k), generators, x)
        return self.replicas.bounds(x, noise)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        begin_graph_step(self.hparams.compile)
        bounds = self._bounds(torch.stack(batch), self.step_generators(batch[0].device))
        means = bounds.detach().mean(-1)  # [R]
        self._train_sum = means if self._train_sum is None else self._train_sum + means
        self._train_steps += 1
        return -bounds.mean(-1).sum()

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        """``test/bound`` of every replica on the common test points, each with its own noise."""
        begin_graph_step(self.hparams.compile)
        generators = [make_generator(x.device, s, "test-bound", batch_idx) for s in self.seeds]
        total = self._bounds(x.expand(len(self.seeds), *x.shape), generators).sum(-1)
        self._test_sum = total if self._test_sum is None else self._test_sum + total
        self._test_count += x.shape[0]

    def on_train_epoch_end(self) -> None:
        """Per replica: ``train/bound`` (the epoch's mean minibatch bound), ``test/bound`` if
        validated, the weight stds and ``test/ll_monitor``, to its loggers."""
        train = (self._train_sum / self._train_steps).tolist()
        test = None if self._test_sum is None else (self._test_sum / self._test_count).tolist()
        self._train_sum, self._train_steps = None, 0
        self._test_sum, self._test_count = None, 0
        for r in range(len(self.seeds)):
            if r in self.diverged:
                continue
            if not math.isfinite(train[r]):
                self.diverged[r] = (
                    f"seed {self.seeds[r]}: the training bound is {train[r]} in epoch "
                    f"{self.current_epoch}: training diverged. Lower optim.lr, or "
                    f"model.init_std for random-weight models."
                )
                continue
            self.last_train_bounds[r] = train[r]
            self._log_replica(r, train[r], None if test is None else test[r])
        if len(self.diverged) == len(self.seeds):
            raise TrainingDivergedError("; ".join(self.diverged.values()))

    def _log_replica(self, r: int, train_bound: float, test_bound: float | None) -> None:
        net = self.replica(r)
        metrics: dict[str, Any] = {"train/bound": train_bound, "epoch": self.current_epoch}
        metrics.update({key: value.item() for key, value in weight_std_stats(net).items()})
        if test_bound is not None:
            metrics["test/bound"] = test_bound
        if self.monitor is not None:
            value = self.monitor.value(self.trainer, net)
            if value is not None:
                metrics["test/ll_monitor"] = value
        for logger in self.replica_loggers[r]:
            logger.log_metrics(metrics, step=self.global_step - 1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What :class:`~benchmark.training.checkpointing.PerRunCheckpointIO` needs to write
        one checkpoint per replica."""
        checkpoint[REPLICAS_KEY] = {
            "names": list(self.replicas.names),
            "seeds": self.seeds,
            "skip": sorted(self.diverged),
            "last_train_bounds": self.last_train_bounds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The replicas' last ``train/bound``, for a run resumed after its last epoch."""
        self.last_train_bounds = list(checkpoint[REPLICAS_KEY]["last_train_bounds"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), self.hparams.lr, tuple(self.hparams.betas), self.hparams.eps)


def adam(
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Adam:
    """Adam as one fused kernel per step where torch has one (a capability check: CPU and
    CUDA), the same update as the per-tensor default."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=fused)
