"""Reading a run's per-epoch metrics from its CSV logs (one ``csv/version_<n>`` per launch)."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def _version(path: Path) -> int:
    return int(path.parent.name.removeprefix("version_"))


def read_epoch_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` merged over every launch of the run, later launches winning.

    A resumed run re-logs the epochs after its checkpoint, so the latest value is the one the
    finished run stands on.
    """
    merged: dict[int, dict[str, float]] = {}
    files = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=_version)
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                values = {k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v}
                merged.setdefault(epoch, {}).update(
                    {k: v for k, v in values.items() if math.isfinite(v)}
                )
    return merged


def metric_curve(run_dir: Path, name: str) -> tuple[list[int], list[float]]:
    """Epochs (1-based, i.e. after that many epochs) and values of one metric."""
    per_epoch = read_epoch_metrics(run_dir)
    epochs = sorted(e for e, values in per_epoch.items() if name in values)
    return [e + 1 for e in epochs], [per_epoch[e][name] for e in epochs]
