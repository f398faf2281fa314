"""Crash-safe checkpoints, one per run: the previous checkpoint stays valid until the new one
is complete, and a group's Lightning checkpoint is written as one checkpoint per run
directory, which resumes that run alone or in any group. With a validation split, each run
also keeps its weights at its best ``val/ll`` epoch (:class:`BestCheckpoints`)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import Tensor

from benchmark.models.base import ImportanceWeightedModel

REPLICAS_KEY = "replicas"  # a group's entry in its in-memory Lightning checkpoint
STACKED_PREFIX = "replicas.stacked."  # its stacked parameters' state_dict keys


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


def unstack_checkpoint(checkpoint: dict[str, Any], r: int) -> dict[str, Any]:
    """Run r's checkpoint (resumable alone or in any group), from the Lightning checkpoint
    of a group (:class:`~benchmark.training.module.ImportanceWeightedLitModule`): its
    slice of every stacked parameter and Adam moment, the group's progress and loop state."""
    group = checkpoint[REPLICAS_KEY]
    hparams = dict(checkpoint["hyper_parameters"])
    hparams["seed"] = hparams.pop("seeds")[r]
    out = {key: value for key, value in checkpoint.items() if key != REPLICAS_KEY}
    out["hyper_parameters"] = hparams
    out["last_train_bound"] = group["last_train_bounds"][r]
    out["best"] = group["best"][r]
    out["callbacks"] = {}  # the group's checkpoint callback points at the group, not the run
    out["state_dict"] = {
        f"net.{name}": checkpoint["state_dict"][f"{STACKED_PREFIX}{i}"][r].clone()
        for i, name in enumerate(group["names"])
    }
    out["optimizer_states"] = [
        {
            "param_groups": state["param_groups"],
            "state": {
                index: {key: _slice(value, r) for key, value in moments.items()}
                for index, moments in state["state"].items()
            },
        }
        for state in checkpoint["optimizer_states"]
    ]
    return out


def stack_checkpoints(checkpoints: Sequence[dict[str, Any]], paths: Sequence[Path]) -> dict:
    """The group checkpoint of replicas saved by :func:`unstack_checkpoint` (one per path, in
    replica order); all must stand at the same step."""
    first = checkpoints[0]
    steps = {path: c["global_step"] for path, c in zip(paths, checkpoints, strict=True)}
    if len(set(steps.values())) > 1:
        raise CorruptCheckpointError(
            f"the replicas' checkpoints stand at different steps ({steps}): run them alone, or "
            f"delete the checkpoints to train them from the start"
        )
    names = [key.removeprefix("net.") for key in first["state_dict"]]
    hparams = dict(first["hyper_parameters"])
    hparams.pop("seed")
    out = dict(first)
    out["hyper_parameters"] = {"seeds": [c["hyper_parameters"]["seed"] for c in checkpoints]}
    out["hyper_parameters"].update(hparams)
    out.pop("last_train_bound", None)
    out.pop("best", None)
    out[REPLICAS_KEY] = {
        "last_train_bounds": [c.get("last_train_bound") for c in checkpoints],
        "best": [c.get("best") for c in checkpoints],
    }
    out["state_dict"] = {
        f"{STACKED_PREFIX}{i}": torch.stack([c["state_dict"][f"net.{name}"] for c in checkpoints])
        for i, name in enumerate(names)
    }
    out["optimizer_states"] = [
        {
            "param_groups": state["param_groups"],
            "state": {
                index: {
                    key: _stack(
                        value, [c["optimizer_states"][o]["state"][index][key] for c in checkpoints]
                    )
                    for key, value in moments.items()
                }
                for index, moments in state["state"].items()
            },
        }
        for o, state in enumerate(first["optimizer_states"])
    ]
    return out


def _slice(value: Any, r: int) -> Any:
    """Replica r's part of an optimizer state entry: a stacked moment's row; the step count
    (a scalar, the same for all) as it is."""
    return value[r].clone() if isinstance(value, Tensor) and value.dim() > 0 else value


def _stack(first: Any, values: list[Any]) -> Any:
    return torch.stack(values) if isinstance(first, Tensor) and first.dim() > 0 else first


class PerRunCheckpointIO(AtomicCheckpointIO):
    """A group's checkpoint kept as its runs' own: saving writes replica r's
    :func:`unstack_checkpoint` to ``paths[r]`` (atomically; replicas marked to skip, the
    diverged ones, keep their last good file); loading stacks ``paths`` back, whatever path
    Lightning passes. So every run directory holds its own checkpoint."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self.paths = [Path(p) for p in paths]

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        skip = set(checkpoint[REPLICAS_KEY]["skip"])
        for r, target in enumerate(self.paths):
            if r not in skip:
                super().save_checkpoint(unstack_checkpoint(checkpoint, r), target, storage_options)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, **kwargs: Any) -> dict:
        for target in self.paths:
            check_readable(target)
        checkpoints = [
            super(PerRunCheckpointIO, self).load_checkpoint(p, map_location, **kwargs)
            for p in self.paths
        ]
        return stack_checkpoints(checkpoints, self.paths)


class BestCheckpoints(pl.Callback):
    """``paths[r]`` holds replica r's weights at its best ``val/ll`` epoch
    (:attr:`~benchmark.training.module.ImportanceWeightedLitModule.best`), rewritten
    atomically after each validation that improves it. Lightning's ``ModelCheckpoint``
    follows one metric per trainer; a group has one per replica."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.io = AtomicCheckpointIO()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        for r in pl_module.improved:
            state = pl_module.replica(r).state_dict()
            checkpoint = {
                **pl_module.best[r],
                "global_step": trainer.global_step,
                "state_dict": {f"net.{key}": value.clone() for key, value in state.items()},
            }
            self.io.save_checkpoint(checkpoint, self.paths[r])


def saved_best(path: Path) -> dict[str, Any]:
    """The best epoch ``{"epoch", "val_ll"}`` whose weights ``best.ckpt`` at ``path`` holds."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return {"epoch": saved["epoch"], "val_ll": saved["val_ll"]}


def load_weights(net: ImportanceWeightedModel, path: Path) -> ImportanceWeightedModel:
    """``net`` with the weights of a run's checkpoint (``last.ckpt`` or ``best.ckpt``)."""
    check_readable(path)
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({key.removeprefix("net."): value for key, value in state.items()})
    return net
