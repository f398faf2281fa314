"""Protocol ids are stable: the ids of existing configurations are pinned (committed results
keep their rows in the tables and finished runs are still skipped), and every committed
result's command composes to the id it was filed under."""

from __future__ import annotations

import json
import shlex

import pytest

from benchmark.runs.config import compose_config
from benchmark.runs.provenance import protocol_id
from tests.conftest import REPO_ROOT

# Computed before the package was restructured (commit 400a2c4), from the same overrides.
PINNED = [
    (["experiment=paper", "model=iwae", "dataset=mnist"], "212e2d26"),
    (["experiment=paper", "model=iwaer", "dataset=omniglot"], "a372e3a1"),
    (["experiment=paper", "model=iwaerrec", "dataset=mnist"], "1ccea473"),
    (["model=vae"], "109bac7e"),
    (["experiment=smoke", "model=iwaer"], "4f5f1dc3"),
    (["experiment=quick", "model=iwaer", "dataset=mnist"], "47ca5b3d"),
    (["experiment=sizes", "model=iwaer"], "98c15caf"),  # with a validation split (issue 29)
    (["experiment=protocol_study", "dataset.binarization=static"], "d0e02306"),
]


@pytest.mark.parametrize(("overrides", "expected"), PINNED, ids=[" ".join(o) for o, _ in PINNED])
def test_protocol_ids_of_existing_configurations_are_pinned(
    overrides: list[str], expected: str
) -> None:
    assert protocol_id(compose_config(overrides)) == expected


def test_implementation_choices_do_not_change_the_protocol_id() -> None:
    base = protocol_id(compose_config(["model=iwaer"]))
    for override in ("compile=true", "num_threads=1", "eval.max_chunk_rows=100"):
        assert protocol_id(compose_config(["model=iwaer", override])) == base


def test_every_committed_result_composes_to_its_protocol_id() -> None:
    results = sorted((REPO_ROOT / "results").rglob("result.json"))
    assert results
    for path in results:
        result = json.loads(path.read_text())
        overrides = [a for a in shlex.split(result["command"])[2:] if not a.startswith("hydra")]
        assert protocol_id(compose_config(overrides)) == result["protocol_id"], path
        assert path.parent.parent.name == result["protocol_id"]
