"""MNIST: LeCun's IDX files through torchvision, and Larochelle's fixed binarization.

Files are taken, in order, from ``data_dir``, from the offline mirror (``$IWAER_DATA_MIRROR``,
default ``../shared/data``; copied, never written) or downloaded; every file is checked
against its published checksum before use.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import MNIST

from datamodules.base import BinaryImageDataModule, Splits
from datamodules.errors import DataError
from datamodules.files import copy_from_mirror, fetch

LAROCHELLE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
# sha256 of the uncompressed .amat files (Larochelle & Murray).
LAROCHELLE_SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}
LAROCHELLE_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}


def parse_amat(raw: bytes, source: Path, expected_rows: int) -> Tensor:
    """Rows of 784 space-separated 0/1 digits -> ``[N, 784]`` float32 (vectorised parse)."""
    chars = np.frombuffer(raw, dtype=np.uint8)
    digits = chars[(chars == ord("0")) | (chars == ord("1"))]
    rows = int(np.count_nonzero(chars == ord("\n")))
    if digits.size != rows * 784 or rows != expected_rows:
        raise DataError(
            f"{source} is corrupt: expected {expected_rows} rows of 784 binary values, found "
            f"{rows} lines and {digits.size} values. Delete it and run again."
        )
    return torch.from_numpy((digits - ord("0")).astype(np.float32).reshape(rows, 784))


def read_amat(path: Path, split: str) -> Tensor:
    """Read Larochelle's ``.amat`` (or ``.amat.gz``) file of ``split``, checking its sha256."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path} cannot be read ({err}). Delete it and run again.") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != LAROCHELLE_SHA256[split]:
        raise DataError(
            f"{path} is corrupt: the sha256 of its contents is {digest}, expected "
            f"{LAROCHELLE_SHA256[split]}. Delete it and run again."
        )
    return parse_amat(raw, path, LAROCHELLE_ROWS[split])


class MNISTDataModule(BinaryImageDataModule):
    """MNIST, 60,000 train / 10,000 test; ``static`` uses Larochelle's 50,000 + 10,000 / 10,000
    (with a validation split: its 50,000 to train, its 10,000 ``valid`` images to validate)."""

    name = "mnist"

    def __init__(self, *args, static_include_valid: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.static_include_valid = static_include_valid

    def _raw_dir(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def load_splits(self) -> Splits:
        for filename, md5 in MNIST.resources:
            fetch(
                self._raw_dir() / filename,
                mirror_relative=f"MNIST/raw/{filename}",
                url=MNIST.mirrors[0] + filename,
                algorithm="md5",
                checksum=md5,
            )
        try:
            splits = [
                MNIST(str(self.data_dir), train=train, download=True).data
                for train in (True, False)
            ]
        except (RuntimeError, ValueError, OSError, EOFError) as err:
            raise DataError(
                f"reading the MNIST files in {self._raw_dir()} failed ({err}). Delete the "
                f"extracted files there (keep the checked .gz files) and run again."
            ) from err
        return Splits(*(s.reshape(s.shape[0], -1).float().div_(255.0) for s in splits))

    def _amat(self, split: str) -> Tensor:
        plain = self.data_dir / "binarized_mnist" / f"binarized_mnist_{split}.amat"
        gz = plain.with_name(plain.name + ".gz")
        missing = not plain.is_file() and not gz.is_file()
        if missing and not copy_from_mirror(f"binarized_mnist/{gz.name}", gz):
            fetch(
                plain,
                mirror_relative=f"binarized_mnist/{gz.name}",
                url=LAROCHELLE_URL + plain.name,
            )
        return read_amat(plain if plain.is_file() else gz, split)

    def load_static(self) -> Splits:
        train, valid, test = self._amat("train"), self._amat("valid"), self._amat("test")
        if self.val_size is None and self.static_include_valid:
            return Splits(torch.cat([train, valid]), test)
        return Splits(train, test, valid)

    def protocol(self) -> dict[str, object]:
        return {**super().protocol(), "static_include_valid": self.static_include_valid}
