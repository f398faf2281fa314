"""Crash-safe checkpoints: the previous checkpoint stays valid until the new one is complete."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO


class CorruptCheckpointError(RuntimeError):
    """A checkpoint to resume from cannot be read."""


def check_readable(path: Path) -> None:
    """Raise :class:`CorruptCheckpointError`, naming ``path`` and the fix, unless it is a
    complete ``torch.save`` archive (a zip file whose every member passes its CRC check)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as err:
        bad = str(err)
    if bad is not None:
        raise CorruptCheckpointError(
            f"the checkpoint {path} is corrupt ({bad}): delete it to train this run from the "
            f"start, or put back a good copy to resume from it"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``.<name>.<pid>.tmp`` beside the target, fsyncs it, then renames it over the target.

    The rename is atomic within one file system (also on network file systems, unlike a
    temporary file in /tmp that is moved across devices), so a process killed at any moment
    leaves either the old or the new checkpoint, never a truncated one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
