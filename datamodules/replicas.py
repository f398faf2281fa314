"""The data of a replica group: one member data module per replica, all over one copy of
the splits.

Members differ only in their ``seed``, so each keeps its own shuffling order and dynamic
binarization stream (those of the run it replaces) while the grey-level splits, the
validation and test sets and the monitored points are one set of tensors on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.base import BinaryImageDataModule


class ReplicaDataModule(pl.LightningDataModule):
    """Training batches ``[x_1, ..., x_R]``, ``x_r [B, D]`` from member r's loader (its own
    order) binarized by member r's stream; validation from the members' common validation
    split."""

    def __init__(self, members: Sequence[BinaryImageDataModule]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a replica group needs at least one data module")
        self.members = list(members)
        first = self.members[0]
        self.name, self.image_shape = first.name, first.image_shape

    @property
    def x_dim(self) -> int:
        return self.members[0].x_dim

    @property
    def test_data(self) -> Tensor:
        return self.members[0].test_data

    @property
    def val_data(self) -> Tensor | None:
        return self.members[0].val_data

    def prepare_data(self) -> None:
        self.members[0].prepare_data()

    def setup(self, stage: str | None = None) -> None:
        first = self.members[0]
        for member in self.members:
            member.trainer = self.trainer
        first.setup(stage)
        for member in self.members[1:]:
            member.train_data, member.test_data = first.train_data, first.test_data
            member.val_data = first.val_data

    def train_pixel_mean(self) -> Tensor:
        return self.members[0].train_pixel_mean()

    def monitor_points(self, n: int | None = None, split: str = "test") -> Tensor:
        return self.members[0].monitor_points(n, split)

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader([m.train_dataloader() for m in self.members], mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return self.members[0].val_dataloader()

    def on_after_batch_transfer(self, batch: object, dataloader_idx: int) -> object:
        if not isinstance(batch, list):  # validation: the common validation points
            return batch
        return [
            member.on_after_batch_transfer(x, dataloader_idx)
            for member, x in zip(self.members, batch, strict=True)
        ]
