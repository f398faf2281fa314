"""Locating, checking and fetching data files: offline mirror, checksums, downloads."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
from pathlib import Path

from torchvision.datasets.utils import download_url

from datamodules.errors import DataError

MIRROR_ENV = "IWAER_DATA_MIRROR"
_REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = _REPO_ROOT.parent / "shared" / "data"


def mirror_dir() -> Path | None:
    """The read-only offline copy of the data sets: ``$IWAER_DATA_MIRROR`` or ``../shared/data``.

    Returns None when the directory does not exist.
    """
    path = Path(os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)).expanduser()
    return path if path.is_dir() else None


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file: ``md5``, ``sha256`` or ``git`` (git blob id, SHA-1 of header+body)."""
    if algorithm == "git":
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, algorithm: str, expected: str) -> None:
    """Raise :class:`DataError` naming the file and the fix when its checksum differs."""
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt: its {algorithm} checksum is {actual}, expected {expected}. "
            f"Delete it and run again to fetch a fresh copy."
        )


def copy_from_mirror(relative: str, destination: Path) -> bool:
    """Copy ``<mirror>/<relative>`` to ``destination`` if present; never writes the mirror."""
    mirror = mirror_dir()
    if mirror is None or not (mirror / relative).is_file():
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(destination.name + ".part")
    shutil.copyfile(mirror / relative, tmp)
    tmp.replace(destination)
    return True


def fetch(
    destination: Path,
    *,
    mirror_relative: str | None,
    url: str | None,
    algorithm: str | None = None,
    checksum: str | None = None,
    hint: str = "",
) -> Path:
    """Make ``destination`` exist and pass its checksum: keep, copy from the mirror or download.

    Raises :class:`DataError` with the file name, where to put it and ``hint`` when none works.
    """
    if not destination.is_file():
        copied = mirror_relative is not None and copy_from_mirror(mirror_relative, destination)
        if not copied and url is not None:
            try:
                download_url(url, str(destination.parent), destination.name)
            except (urllib.error.URLError, OSError, RuntimeError) as err:
                raise DataError(
                    f"{destination.name} is not in {destination.parent} and downloading it from "
                    f"{url} failed ({err}). Put the file there by hand, or set {MIRROR_ENV} to a "
                    f"directory holding {mirror_relative or destination.name}. {hint}".rstrip()
                ) from err
        if not destination.is_file():
            raise DataError(
                f"{destination.name} is missing: put it at {destination}"
                + (
                    f" or set {MIRROR_ENV} to a directory holding {mirror_relative}"
                    if mirror_relative
                    else ""
                )
                + f". {hint}".rstrip()
            )
    if algorithm is not None and checksum is not None:
        verify(destination, algorithm, checksum)
    return destination
