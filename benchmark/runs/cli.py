"""Command-line conveniences on top of Hydra's override grammar.

``seed=A-B`` (inclusive range) is rewritten to Hydra's ``seed=range(A,B+1)`` before Hydra
parses the command line; plain Hydra syntax (``seed=0,1,2``, ``seed=range(0,5)``) passes
through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from benchmark.runs.validation import ConfigError

_SEED = re.compile(r"^(?P<key>\+{0,2}seed)=(?P<value>.*)$")
_RANGE = re.compile(r"^(?P<a>-?\d+)-(?P<b>-?\d+)$")
_SWEEP = re.compile(r"^(\d+(,\d+)*|range\(\s*\d+\s*(,\s*\d+\s*){1,2}\))$")


def expand_seed_argument(arg: str, multirun: bool) -> str:
    """Rewrite one ``seed=...`` argument; other arguments are returned as they are."""
    match = _SEED.match(arg)
    if match is None:
        return arg
    key, value = match["key"], match["value"].strip()
    span = _RANGE.match(value)
    if span is not None:
        first, last = int(span["a"]), int(span["b"])
        if first < 0 or last < first:
            raise ConfigError(
                f"seed={value} is an empty or negative range: write seed=A-B with 0 <= A <= B"
            )
        if first == last:
            return f"{key}={first}"
        if not multirun:
            raise ConfigError(f"seed={value} is a sweep over several seeds: add -m (multirun)")
        return f"{key}=range({first},{last + 1})"
    if _SWEEP.match(value) is None:
        raise ConfigError(
            f"seed={value} is not a seed: use a non-negative integer, a range A-B (e.g. seed=0-4),"
            f" a list (seed=0,1,2) or range(A,B)"
        )
    if "," in value and not multirun:
        raise ConfigError(f"seed={value} is a sweep over several seeds: add -m (multirun)")
    return arg


def expand_seed_ranges(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``seed=A-B`` turned into Hydra's ``seed=range(A,B+1)``."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    return [expand_seed_argument(a, multirun) for a in argv]
