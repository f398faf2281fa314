"""Lightning training of any model of :mod:`benchmark.models`: maximise the one-draw L_k
estimate with Adam, for R runs that differ only in their seeds at once (a single run is the
group of one).

Replica r is exactly the run of seed ``seeds[r]``: its own initialisation (built by the caller
from its seed), data order and binarization (its member of
:class:`~datamodules.replicas.ReplicaDataModule`), noise streams ``(seed_r, "train", step)``,
``(seed_r, "val-bound", batch)`` and ``(seed_r, "test-bound", batch)``, its own best epoch,
and Adam per element. The loss is
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
from benchmark.training.callbacks import BoundMonitor, LogLikelihoodMonitor, weight_std_stats
from benchmark.training.checkpointing import REPLICAS_KEY
from benchmark.training.stacked import StackedReplicas


class TrainingDivergedError(FloatingPointError):
    """The training bound became NaN or infinite."""


class ImportanceWeightedLitModule(pl.LightningModule):
    """Trains ``nets`` (one per seed of ``seeds``, one architecture, each with its own k =
    ``net.k``) as :class:`StackedReplicas`.

    Per replica, ``train/bound`` is the epoch's mean of ``mean_b L_k(x_b)`` on the binarized
    training minibatches (the bound itself, in nats). With a validation split, Lightning's
    validation loop gives ``val/bound`` (L_k on all of it, the same noise at every epoch) and
    then ``val/ll`` (:attr:`val_ll`); the epoch of the highest ``val/ll`` so far is the
    replica's :attr:`best` (``{"epoch", "val_ll"}``, epochs counted from 1; its weights are
    written by :class:`~benchmark.training.checkpointing.BestCheckpoints`), and with
    ``patience`` the fit stops once no replica has improved for that many epochs. The test
    trajectories ``test/bound`` and ``test/ll_monitor`` are optional (:attr:`test_bound`,
    :attr:`test_ll`). A replica whose training bound becomes NaN or infinite is marked in
    :attr:`diverged` (its message) and no longer logged or checkpointed; the others train on,
    and when all have diverged the fit stops with :class:`TrainingDivergedError`.
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
        self.val_ll: LogLikelihoodMonitor | None = None
        self.test_bound: BoundMonitor | None = None
        self.test_ll: LogLikelihoodMonitor | None = None
        self.patience: int | None = None
        self.diverged: dict[int, str] = {}
        self.last_train_bounds: list[float | None] = [None] * len(seeds)
        self.best: list[dict[str, Any] | None] = [None] * len(seeds)
        self.improved: list[int] = []  # the replicas whose best this validation made
        self._generators: list[torch.Generator] = []
        self._train_sum: Tensor | None = None
        self._train_steps = 0
        self._val_sum: Tensor | None = None
        self._val_count = 0
        self._val_metrics: list[dict[str, float]] = [{} for _ in seeds]

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

    def fixed_noise_bounds(self, x: Tensor, stream: str, batch_idx: int) -> Tensor:
        """``sum_b L_k(x_b)`` of every replica ``[R]`` on the common points ``x [B, D]``,
        replica r's noise from ``(seed_r, stream, batch_idx)``: the same at every epoch."""
        begin_graph_step(self.hparams.compile)
        generators = [make_generator(x.device, s, stream, batch_idx) for s in self.seeds]
        return self._bounds(x.expand(len(self.seeds), *x.shape), generators).sum(-1)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        begin_graph_step(self.hparams.compile)
        bounds = self._bounds(torch.stack(batch), self.step_generators(batch[0].device))
        means = bounds.detach().mean(-1)  # [R]
        self._train_sum = means if self._train_sum is None else self._train_sum + means
        self._train_steps += 1
        return -bounds.mean(-1).sum()

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        """Accumulates ``val/bound`` of every replica on the validation split."""
        total = self.fixed_noise_bounds(x, "val-bound", batch_idx)
        self._val_sum = total if self._val_sum is None else self._val_sum + total
        self._val_count += x.shape[0]

    def on_validation_epoch_end(self) -> None:
        """Per live replica: ``val/bound``, ``val/ll``, and its best epoch; the fit stops
        when no replica has improved for ``patience`` epochs."""
        bounds = (self._val_sum / self._val_count).tolist()
        self._val_sum, self._val_count = None, 0
        self.improved = []
        for r in self.live():
            ll = self.val_ll.value(self.trainer, self.replica(r))
            self._val_metrics[r] = {"val/bound": bounds[r], "val/ll": ll}
            if math.isfinite(ll) and (self.best[r] is None or ll > self.best[r]["val_ll"]):
                self.best[r] = {"epoch": self.current_epoch + 1, "val_ll": ll}
                self.improved.append(r)
        self.stop_if_patience_ran_out(self.current_epoch + 1)

    def live(self) -> list[int]:
        """The replicas that have not diverged."""
        return [r for r in range(len(self.seeds)) if r not in self.diverged]

    def stop_if_patience_ran_out(self, epochs: int) -> None:
        """Early stopping: after ``epochs`` epochs, stop the fit if every live replica's best
        epoch lies ``patience`` or more epochs back."""
        if self.patience is None or any(self.best[r] is None for r in self.live()):
            return
        if all(epochs - self.best[r]["epoch"] >= self.patience for r in self.live()):
            self.trainer.should_stop = True

    def on_train_start(self) -> None:
        """A run resumed after its early stop stays stopped."""
        self.stop_if_patience_ran_out(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        """Per replica: ``train/bound`` (the epoch's mean minibatch bound), the validation
        metrics of this epoch, the weight stds and the test trajectories, to its loggers."""
        train = (self._train_sum / self._train_steps).tolist()
        self._train_sum, self._train_steps = None, 0
        test = None if self.test_bound is None else self.test_bound.value(self.trainer, self)
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
        metrics.update(self._val_metrics[r])
        self._val_metrics[r] = {}
        metrics.update({key: value.item() for key, value in weight_std_stats(net).items()})
        if test_bound is not None:
            metrics["test/bound"] = test_bound
        if self.test_ll is not None:
            value = self.test_ll.value(self.trainer, net)
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
            "best": self.best,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The replicas' last ``train/bound`` (for a run resumed after its last epoch) and
        best epochs."""
        group = checkpoint[REPLICAS_KEY]
        self.last_train_bounds = list(group["last_train_bounds"])
        self.best = list(group["best"])

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
