"""Fetch and check the data of every data set a sweep will use, before any run starts.

``python -m benchmark.runs.prepare_data mnist,omniglot [override ...]`` composes each data set's
config (as ``run.py dataset=<name> override ...`` would) and calls its datamodule's
``prepare_data``: mirror copy or download, checksum, parse. It prints ``data ok: <name>`` for
each data set that loads and one ``error:`` line for each that does not, naming the file, where
to put it and the offline alternative, and exits 1 if any is missing: a sweep never fails
hours in when it reaches a data set that cannot be loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmark.runs.builders import build_datamodule
from benchmark.runs.config import compose_config
from benchmark.runs.validation import ConfigError
from datamodules import DataError


def prepare(datasets: Sequence[str], overrides: Sequence[str] = ()) -> dict[str, DataError]:
    """Fetch and check each of ``datasets``; return the error of each that cannot be loaded.

    Raises :class:`ConfigError` for an unknown data set or override."""
    missing = {}
    for name in datasets:
        try:
            build_datamodule(compose_config([f"dataset={name}", *overrides])).prepare_data()
        except DataError as err:
            missing[name] = err
            print(f"error: {err}", file=sys.stderr, flush=True)
        else:
            print(f"data ok: {name}", flush=True)
    return missing


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m benchmark.runs.prepare_data DATASET[,DATASET...] [override ...]")
        return 2
    try:
        return 1 if prepare(argv[0].split(","), argv[1:]) else 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
