"""Binary-image data modules (MNIST, Omniglot) that keep whole splits on the device."""

from datamodules.base import Binarization, BinaryImageDataModule
from datamodules.errors import DataError
from datamodules.mnist import MNISTDataModule
from datamodules.omniglot import OmniglotDataModule

__all__ = [
    "Binarization",
    "BinaryImageDataModule",
    "DataError",
    "MNISTDataModule",
    "OmniglotDataModule",
]
