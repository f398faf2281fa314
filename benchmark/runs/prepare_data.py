"""Fetch and check the data of every data set a sweep will use, before any run starts.

``python -m benchmark.runs.prepare_data mnist,omniglot [override ...]`` composes each data set's
config (as ``run.py dataset=<name> override ...`` would) and calls its datamodule's
``prepare_data``: mirror copy or download, checksum, parse. It prints one line per data set
and exits non-zero on the first that is missing or corrupt, naming the file and the fix, so a
sweep never fails hours in when it reaches a data set that cannot be loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmark.runs.builders import build_datamodule
from benchmark.runs.config import CONFIG_DIR, compose_config
from datamodules import DataError


def prepare(datasets: Sequence[str], overrides: Sequence[str] = ()) -> None:
    """Raise :class:`DataError` for the first of ``datasets`` whose files cannot be loaded."""
    choices = sorted(path.stem for path in (CONFIG_DIR / "dataset").glob("*.yaml"))
    for name in datasets:
        if name not in choices:
            raise DataError(f"unknown dataset {name!r}: choose from {', '.join(choices)}")
        cfg = compose_config([f"dataset={name}", *overrides])
        build_datamodule(cfg).prepare_data()
        print(f"data ok: {name}")


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m benchmark.runs.prepare_data DATASET[,DATASET...] [override ...]")
        return 2
    try:
        prepare(argv[0].split(","), argv[1:])
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
