"""``make reproduce-table1``: every cell of the sweep whose data can be had, then the table.

``python -m benchmark.runs.reproduce model=A,B dataset=C,D [override ...]`` takes the
overrides of ``run.py -m``. It checks the config of every (model, data set) cell, then fetches
each data set (``benchmark.runs.prepare_data``): one that cannot be had gets one line naming the
file, where to put it and the offline alternative, and its cells are skipped, never run on
another data set. The other cells go through ``python -m benchmark.speed.eta`` (the projected
wall time), ``run.py -m`` and ``python -m benchmark.table <results_dir>``, which tables the
finished runs even when some failed. The exit status is 1 when cells were skipped, with a
last line naming them, and that of the first failed step otherwise.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from benchmark.runs.config import CONFIG_DIR, compose_config
from benchmark.runs.prepare_data import prepare
from benchmark.runs.validation import ConfigError, validate

RUN_PY = CONFIG_DIR.parent / "run.py"


def reproduce(argv: Sequence[str]) -> int:
    """Run the sweep ``argv`` over the data sets that can be had; the exit status."""
    swept = {key: value.split(",") for key, _, value in (a.partition("=") for a in argv)}
    if not {"model", "dataset"} <= swept.keys():
        raise ConfigError("name the sweep's models and data sets: model=A,B dataset=C,D")
    models, datasets = swept["model"], swept["dataset"]
    shared = [  # the overrides of every cell's config, without the swept ones and Hydra's
        a for a in argv if not a.startswith(("model=", "dataset=", "seed=", "hydra", "-"))
    ]
    cells = [
        compose_config([*shared, f"model={m}", f"dataset={d}"]) for m in models for d in datasets
    ]
    for cfg in cells:
        validate(cfg)
    missing = prepare(datasets, [*shared, f"model={models[0]}"])
    available = [name for name in datasets if name not in missing]
    status = 0
    if available:
        sweep = [a for a in argv if not a.startswith("dataset=")]
        sweep.append(f"dataset={','.join(available)}")
        for step in (["-m", "benchmark.speed.eta", *sweep], [str(RUN_PY), "-m", *sweep]):
            status = status or subprocess.run([sys.executable, *step]).returncode
        table = [sys.executable, "-m", "benchmark.table", cells[0].results_dir]  # what finished
        tabled = subprocess.run(table).returncode
        status = status or tabled
    if missing:
        skipped = [f"{dataset}/{model}" for dataset in missing for model in models]
        print(
            f"error: skipped {len(skipped)} cells, their data are missing (see above): "
            f"{', '.join(skipped)}",
            file=sys.stderr,
        )
        return 1
    return status


def main(argv: Sequence[str]) -> int:
    try:
        return reproduce(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
