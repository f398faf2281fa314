"""Minibatches drawn from a tensor that already lives on the training device.

A ``DataLoader`` with ``batch_size=None`` over :class:`DeviceTensorDataset` and
:class:`EpochBatchSampler` indexes the whole split with one index tensor per step: no
worker processes, no per-image Python, no host-device copies. The shuffling order is a
function of ``(seed, epoch)`` only; Lightning calls ``set_epoch`` before each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from benchmark.randomness.seeding import derive_seed


class DeviceTensorDataset(Dataset):
    """``dataset[index_tensor] -> data[index_tensor]``, on the data's device."""

    def __init__(self, data: Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.data[index]


class EpochBatchSampler(Sampler[Tensor]):
    """Yields index tensors of one minibatch each; reshuffled per epoch from ``(seed, epoch)``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        device: torch.device,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and n < batch_size:
            raise ValueError(f"the split has {n} examples, fewer than one batch of {batch_size}")
        self.n, self.batch_size = n, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.device = seed, device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(derive_seed(self.seed, "shuffle", self.epoch))
            order = torch.randperm(self.n, generator=generator, device=self.device)
        else:
            order = torch.arange(self.n, device=self.device)
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


def device_loader(
    data: Tensor, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int
) -> DataLoader:
    """A single-process loader of minibatches ``[batch_size, D]`` sliced from ``data``."""
    sampler = EpochBatchSampler(
        data.shape[0],
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        device=data.device,
    )
    return DataLoader(DeviceTensorDataset(data), sampler=sampler, batch_size=None)
