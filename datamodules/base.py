"""Shared logic of the binary-image data modules: binarization, device placement, loaders.

Images are flattened to ``[N, 784]`` float32 in ``[0, 1]``. Binarization modes (docs/paper.md
section 3):

- ``dynamic`` (default): training pixels are resampled ``x ~ Bernoulli(intensity)`` for every
  minibatch, on the device, from the stream ``(seed, "binarize", global_step)``;
- ``static``: a fixed binarization published with the data (Larochelle's binarized MNIST);
- ``none``: grey levels are used as they are (then the Bernoulli "log-likelihood" is not a
  probability of binary data).

The test split is binarized once from ``test_binarization_seed`` (dynamic), independent of the
run's seed, so every model and seed is scored on identical data.

``val_size`` holds out a validation split of N training images, a fixed random subset drawn
before ``train_subset`` (static MNIST: N images of Larochelle's own ``valid`` file, and the
``train`` file to train on); dynamic binarization binarizes it once, from a fixed stream of
its own (so other test data leave validation unchanged).
Lightning's validation loop runs on it; the test split is read only for the final estimate
and, if asked for, the test trajectories.

``train_subset`` / ``test_subset`` keep a fixed random subset of N images of a split (the same
for every model, seed and machine: drawn from torch's CPU stream ``(0, "subset", split)``),
never its first N: Larochelle's test file is sorted by digit and Omniglot's images by
alphabet. The quantities monitored during training (``val/ll``, ``test/bound``,
``test/ll_monitor``) use the first points of one fixed random order of their split
(:meth:`monitor_points`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from benchmark.randomness.noise import standard_uniform
from benchmark.randomness.seeding import make_generator
from datamodules.device_batches import device_loader
from datamodules.errors import DataError


class Binarization(str, Enum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    NONE = "none"


class Splits(NamedTuple):
    """A data set's splits, ``[N, 784]`` each, on the CPU. ``valid``: a published validation
    split (Larochelle's), held out in place of a random subset of ``train``."""

    train: Tensor
    test: Tensor
    valid: Tensor | None = None


# The config key that sets the size of each split's fixed subset.
SIZE_KEYS = {
    "train": "dataset.train_subset",
    "test": "dataset.test_subset",
    "valid": "dataset.val_size",
}


def fixed_subset(data: Tensor, n: int | None, split: str) -> Tensor:
    """``n`` rows of ``data [N, D]`` drawn without replacement by a fixed permutation (kept in
    their original order); all rows if ``n`` is None; an error naming the key if n > N."""
    if n is None:
        return data
    if n > data.shape[0]:
        raise DataError(
            f"{SIZE_KEYS[split]}={n} asks for more than the {data.shape[0]} {split} images there"
            f" are: choose at most {data.shape[0]}"
        )
    return data[fixed_rows(data, n, split)[0]]


def fixed_rows(data: Tensor, n: int, split: str) -> tuple[Tensor, Tensor]:
    """The row indices of ``n`` rows of ``data`` chosen by a fixed permutation of the stream
    ``(0, "subset", split)``, and of the others, each in their original order."""
    generator = make_generator("cpu", 0, "subset", split)
    order = torch.randperm(data.shape[0], generator=generator)
    return order[:n].sort().values, order[n:].sort().values


def hold_out(splits: Splits, n: int | None) -> tuple[Tensor, Tensor | None]:
    """``(train, validation)``: ``n`` images of the published validation split if there is
    one, else a fixed random subset of ``n`` training images held out from training; no
    validation split if ``n`` is None."""
    if n is None:
        return splits.train, None
    if splits.valid is not None:
        return splits.train, fixed_subset(splits.valid, n, "valid")
    if n >= splits.train.shape[0]:
        raise DataError(
            f"dataset.val_size={n} holds out every training image ({splits.train.shape[0]}): "
            f"choose a smaller dataset.val_size"
        )
    held, kept = fixed_rows(splits.train, n, "valid")
    return splits.train[kept], splits.train[held]


def binarize(intensities: Tensor, uniforms: Tensor) -> Tensor:
    """One Bernoulli draw per pixel, ``x = 1[u < p]`` from given uniforms ``u ~ U[0, 1)``:
    P(x = 1) = p, the law of ``torch.bernoulli`` (which is 4x slower on CPUs than a uniform
    fill and this comparison)."""
    return (uniforms < intensities).to(intensities.dtype)


class BinaryImageDataModule(pl.LightningDataModule):
    """Base class: subclasses implement :meth:`load_splits` (and optionally ``load_static``)."""

    name: str = "base"
    image_shape: tuple[int, int] = (28, 28)

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 100,
        binarization: Binarization | str = Binarization.DYNAMIC,
        test_binarization_seed: int = 0,
        seed: int = 0,
        train_subset: int | None = None,
        test_subset: int | None = None,
        val_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.batch_size = batch_size
        self.binarization = Binarization(binarization)
        self.test_binarization_seed = test_binarization_seed
        self.seed = seed
        self.train_subset, self.test_subset = train_subset, test_subset
        self.val_size = val_size
        self.drop_last = drop_last
        self.train_data: Tensor | None = None
        self.test_data: Tensor | None = None
        self.val_data: Tensor | None = None

    @property
    def x_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def load_splits(self) -> Splits:
        """Grey-level splits, each ``[N, 784]`` float32 in [0, 1], on the CPU."""
        raise NotImplementedError

    def load_static(self) -> Splits:
        """Fixed binary splits for ``binarization=static``."""
        raise ValueError(
            f"binarization=static is not available for {self.name}: it exists only where a fixed "
            f"binarization is published (MNIST). Use binarization=dynamic or binarization=none."
        )

    def prepare_data(self) -> None:
        """Fetch files (mirror copy or download) so that :meth:`setup` reads local files only."""
        if self.binarization is Binarization.STATIC:
            self.load_static()
        else:
            self.load_splits()

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        splits = (
            self.load_static() if self.binarization is Binarization.STATIC else self.load_splits()
        )
        train, val = hold_out(splits, self.val_size)
        test = splits.test
        if self.binarization is Binarization.DYNAMIC:
            # torch's own CPU streams: the same held-out sets on every machine and version.
            generator = make_generator("cpu", self.test_binarization_seed, "test-binarization")
            test = binarize(test, torch.rand(test.shape, generator=generator))
            if val is not None:
                generator = make_generator("cpu", 0, "val-binarization")
                val = binarize(val, torch.rand(val.shape, generator=generator))
        train = fixed_subset(train, self.train_subset, "train")
        test = fixed_subset(test, self.test_subset, "test")
        device = self._device()
        self.train_data = train.contiguous().to(device)
        self.test_data = test.contiguous().to(device)
        self.val_data = None if val is None else val.contiguous().to(device)

    def train_pixel_mean(self) -> Tensor:
        """Mean training intensity per pixel, ``[784]`` (for the decoder's output bias)."""
        self.setup()
        return self.train_data.mean(0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return device_loader(
            self.train_data,
            self.batch_size,
            shuffle=True,
            drop_last=self.drop_last,
            seed=self.seed,
        )

    def monitor_points(self, n: int | None = None, split: str = "test") -> Tensor:
        """The first ``n`` (all if None) points of ``split`` ("test" or "val") in a fixed
        random order: the points the quantities monitored during training are computed on,
        the same for every run."""
        self.setup()
        data = self.test_data if split == "test" else self.val_data
        if data is None:
            raise ValueError("no validation split: set dataset.val_size")
        key = ("monitor-order",) if split == "test" else ("monitor-order", split)
        generator = make_generator("cpu", 0, *key)
        order = torch.randperm(data.shape[0], generator=generator)[:n]
        return data[order.to(data.device)]

    def val_dataloader(self) -> DataLoader:
        """The validation split (``val/bound``), in order; empty without one."""
        self.setup()
        data = self.val_data if self.val_data is not None else self.train_data[:0]
        return device_loader(data, self.batch_size, shuffle=False, drop_last=False, seed=self.seed)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        """Dynamic binarization of a training minibatch, seeded by ``(seed, global_step)``."""
        trainer = self.trainer
        if self.binarization is not Binarization.DYNAMIC or trainer is None or not trainer.training:
            return batch
        generator = make_generator(batch.device, self.seed, "binarize", trainer.global_step)
        uniforms = standard_uniform(batch.numel(), generator, batch.device, batch.dtype)
        return binarize(batch, uniforms.view(batch.shape))

    def protocol(self) -> dict[str, object]:
        """The data choices that define the protocol, for result files."""
        return {
            "dataset": self.name,
            "binarization": self.binarization.value,
            "test_binarization_seed": self.test_binarization_seed,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
            "val_size": self.val_size,
        }
