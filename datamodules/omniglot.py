"""Omniglot at 28x28: Burda et al.'s ``chardata.mat`` or the original 105x105 images.

``source=chardata`` (default, the IWAE literature's version): 24,345 train / 8,070 test grey
images, downloaded from the yburda/iwae repository and checked against its git blob id.

``source=images`` (works offline from the mirror): the 32,460 original 105x105 binary images
of Lake et al. (both official zips, 1,623 characters x 20 drawers), ink = 1, resized to 28x28
with antialiasing (grey levels). Split per character by drawer: drawers 1-15 train, 16-20
test, i.e. 24,345 / 8,115 images; every character appears in both splits, as in chardata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from scipy.io.matlab import MatReadError
from torch import Tensor
from torchvision.datasets import Omniglot
from torchvision.datasets.utils import download_and_extract_archive
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from datamodules.base import BinaryImageDataModule, Splits
from datamodules.errors import DataError
from datamodules.files import fetch, mirror_dir

CHARDATA_URL = "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat"
CHARDATA_GIT_BLOB = "016a3536ffe5e1d38e42563a18d7a78bfaf643ec"
CHARDATA_SIZES = (24_345, 8_070)
IMAGE_SPLITS = ("images_background", "images_evaluation")
N_IMAGES = 32_460
TRAIN_DRAWERS = range(1, 16)


def load_chardata(path: Path) -> tuple[Tensor, Tensor]:
    """``chardata.mat`` -> (train, test) ``[N, 784]`` float32, rows in C order (row-major 28x28).

    The file stores 784 x N matrices ``data`` and ``testdata`` whose columns are images
    flattened in Fortran (column-major) order, as Burda et al.'s loader reads them.
    """
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["data", "testdata"])
        splits = [mat["data"], mat["testdata"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError, MatReadError) as err:
        raise DataError(
            f"{path} is not a readable chardata.mat with keys 'data' and 'testdata' ({err}). "
            f"Delete it and run again, or use dataset.source=images."
        ) from err
    out = []
    for name, split in zip(("data", "testdata"), splits, strict=True):
        if split.ndim != 2 or split.shape[0] != 784:
            raise DataError(f"{path}: '{name}' has shape {split.shape}, expected (784, N).")
        images = np.asarray(split, dtype=np.float32).T.reshape(-1, 28, 28).transpose(0, 2, 1)
        out.append(torch.from_numpy(np.ascontiguousarray(images).reshape(-1, 784)))
    return out[0], out[1]


def images_to_28(images: Tensor) -> Tensor:
    """``[N, 105, 105]`` uint8 PNG pixels (255 = paper) -> ``[N, 784]`` ink intensity in [0, 1]."""
    ink = 1.0 - images.float().div(255.0)
    small = TF.resize(ink.unsqueeze(1), [28, 28], antialias=True)
    return small.clamp_(0.0, 1.0).reshape(images.shape[0], 784)


class OmniglotDataModule(BinaryImageDataModule):
    """Omniglot for binary-image VAEs; ``source`` is ``chardata`` or ``images``."""

    name = "omniglot"

    def __init__(self, *args, source: str = "chardata", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if source not in ("chardata", "images"):
            raise ValueError(f"unknown Omniglot source {source!r}: use 'chardata' or 'images'")
        self.source = source

    def load_splits(self) -> Splits:
        return Splits(
            *(self._load_chardata() if self.source == "chardata" else self._load_images())
        )

    def _load_chardata(self) -> tuple[Tensor, Tensor]:
        path = fetch(
            self.data_dir / "omniglot" / "chardata.mat",
            mirror_relative="omniglot/chardata.mat",
            url=CHARDATA_URL,
            algorithm="git",
            checksum=CHARDATA_GIT_BLOB,
            hint="Offline, the original images stand in as another protocol, tabled apart: "
            "dataset=omniglot_images (make reproduce-table1 DATASETS=mnist,omniglot_images).",
        )
        train, test = load_chardata(path)
        if (train.shape[0], test.shape[0]) != CHARDATA_SIZES:
            raise DataError(
                f"{path}: {train.shape[0]}/{test.shape[0]} images, expected "
                f"{CHARDATA_SIZES[0]}/{CHARDATA_SIZES[1]}."
            )
        return train, test

    def _image_root(self) -> Path:
        """The folder holding ``images_background/`` and ``images_evaluation/``.

        Taken from ``data_dir``, else from the mirror, else downloaded as the official zips.
        """
        local = self.data_dir / "omniglot"
        if all((local / split).is_dir() for split in IMAGE_SPLITS):
            return local
        mirror = mirror_dir()
        if mirror is not None and all((mirror / "omniglot" / s).is_dir() for s in IMAGE_SPLITS):
            return mirror / "omniglot"
        for split in IMAGE_SPLITS:
            try:
                download_and_extract_archive(
                    f"{Omniglot.download_url_prefix}/{split}.zip",
                    str(local),
                    md5=Omniglot.zips_md5[split],
                )
            except (OSError, RuntimeError) as err:
                raise DataError(
                    f"the Omniglot image folder {local / split} is missing and downloading "
                    f"{split}.zip failed ({err}). Unzip the official {split}.zip there."
                ) from err
        return local

    def _load_images(self) -> tuple[Tensor, Tensor]:
        cache = self.data_dir / "omniglot" / "images28.pt"
        if cache.is_file():
            cached = torch.load(cache)
            return cached["train"], cached["test"]
        root = self._image_root()
        files = sorted(p for split in IMAGE_SPLITS for p in (root / split).glob("*/*/*.png"))
        if len(files) != N_IMAGES:
            raise DataError(
                f"{root} holds {len(files)} Omniglot PNG images, expected {N_IMAGES}: "
                f"the folders are incomplete. Re-extract the official zips there."
            )
        try:
            images = torch.cat([decode_image(read_file(str(p)), ImageReadMode.GRAY) for p in files])
        except RuntimeError as err:
            raise DataError(f"an Omniglot image under {root} cannot be decoded ({err}).") from err
        drawers = torch.tensor([int(p.stem.split("_")[1]) for p in files])
        pixels = images_to_28(images)
        train_mask = (drawers >= TRAIN_DRAWERS.start) & (drawers < TRAIN_DRAWERS.stop)
        train, test = pixels[train_mask], pixels[~train_mask]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part")
        torch.save({"train": train, "test": test}, tmp)
        tmp.replace(cache)
        return train, test

    def protocol(self) -> dict[str, object]:
        return {**super().protocol(), "omniglot_source": self.source}
