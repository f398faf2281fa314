"""What a run reports besides its training bound: weight-std statistics, the log-likelihood
and bound monitored during training, image grids of samples and reconstructions, and a
callback that checks that CUDA graphs are replayed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, WandbLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from benchmark.compilation import cudagraph_skips
from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.base import ImportanceWeightedModel
from benchmark.randomness.seeding import make_generator

log = logging.getLogger(__name__)


def weight_std_stats(net: ImportanceWeightedModel) -> dict[str, Tensor]:
    """``weight_std/<layer>/{mean,min,max}`` of the weight stds softplus(rho) of every random
    layer of ``net``."""
    stats = {}
    for name, layer in net.gaussian_layers():
        if layer.random:
            std = layer.weight_std().detach()
            key = f"weight_std/{name}"
            stats.update(
                {f"{key}/mean": std.mean(), f"{key}/min": std.min(), f"{key}/max": std.max()}
            )
    return stats


class LogLikelihoodMonitor:
    """``val/ll`` or ``test/ll_monitor`` every ``every_n_epochs`` epochs: the S-sample
    estimate of mean log p(x) (:func:`~benchmark.evaluation.estimator.estimate_log_likelihood`,
    S = ``n_samples``) on the first ``n_points`` of the fixed monitor order of ``split``
    (:meth:`~datamodules.base.BinaryImageDataModule.monitor_points`), with the same evaluation
    noise at every epoch, so that its trajectory shows the model's change and not the noise's.
    It draws from its own streams: training is the same with or without it."""

    def __init__(
        self,
        every_n_epochs: int,
        n_points: int,
        n_samples: int,
        split: str = "test",
        **estimator_options: Any,
    ) -> None:
        """``estimator_options``: batch_size, memory_cap_gib, max_chunk_rows, seed of
        :func:`~benchmark.evaluation.estimator.estimate_log_likelihood`."""
        self.every_n_epochs, self.n_points, self.n_samples = every_n_epochs, n_points, n_samples
        self.split, self.estimator_options = split, estimator_options

    def value(self, trainer: pl.Trainer, net: ImportanceWeightedModel) -> float | None:
        """The estimate for ``net`` after this epoch, or None in the epochs between."""
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return None
        return estimate_log_likelihood(
            net,
            trainer.datamodule.monitor_points(self.n_points, self.split),
            n_samples=self.n_samples,
            progress=False,
            **self.estimator_options,
        ).mean


class BoundMonitor:
    """``test/bound`` every ``every_n_epochs`` epochs: L_k of every replica on the first
    ``n_points`` of the fixed monitor order of the test split, in batches of ``batch_size``,
    with the same noise at every epoch (``(seed_r, "test-bound", batch)``)."""

    def __init__(self, every_n_epochs: int, n_points: int, batch_size: int) -> None:
        self.every_n_epochs, self.n_points, self.batch_size = every_n_epochs, n_points, batch_size

    @torch.no_grad()
    def value(self, trainer: pl.Trainer, module: Any) -> list[float] | None:
        """Each replica's mean L_k on the points after this epoch (``module``: an
        :class:`~benchmark.training.module.ImportanceWeightedLitModule`), or None in the
        epochs between."""
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return None
        points = trainer.datamodule.monitor_points(self.n_points)
        batches = points.split(self.batch_size)
        total = sum(module.fixed_noise_bounds(x, "test-bound", i) for i, x in enumerate(batches))
        return (total / points.shape[0]).tolist()


@torch.no_grad()
def save_image_grids(
    run_dir: Path,
    net: ImportanceWeightedModel,
    datamodule: Any,
    loggers: Sequence[Logger],
    seed: int = 0,
    n: int = 64,
) -> None:
    """``samples.png`` (pixel means of p(x|z), z ~ p(z)) and ``reconstructions.png`` (test
    images of ``datamodule`` above their one-sample reconstructions) of ``net`` in
    ``run_dir``; also sent to the W&B loggers among ``loggers``."""
    device = datamodule.test_data.device
    height, width = datamodule.image_shape
    samples = net.sample(n, make_generator(device, seed, "samples"))
    x = datamodule.test_data[: n // 2]
    recon = net.reconstruct(x, make_generator(device, seed, "reconstructions"))
    grids = {
        "samples": make_grid(samples.view(-1, 1, height, width), nrow=8, pad_value=1.0),
        "reconstructions": make_grid(
            torch.cat([x, recon]).view(-1, 1, height, width), nrow=8, pad_value=1.0
        ),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, grid in grids.items():
        save_image(grid, run_dir / f"{name}.png")
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for name, grid in grids.items():
                logger.log_image(key=f"images/{name}", images=[grid.cpu()])


class CudaGraphCheck(pl.Callback):
    """Under ``compile=reduce-overhead`` on a GPU: one warning after the first epoch if
    inductor ran passes of this fit without CUDA graphs (compiled, but launched op by op),
    saying how to see why. Silent on CPUs, which have no CUDA graphs."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.checked = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = cudagraph_skips()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.checked or self.start is None or trainer.strategy.root_device.type != "cuda":
            return
        self.checked = True
        skipped = cudagraph_skips() - self.start
        if skipped:
            log.warning(
                "compile=reduce-overhead: %d compiled passes ran without CUDA graphs, so "
                "training is slower than it could be; TORCH_LOGS=perf_hints prints why.",
                skipped,
            )
