"""`.ci/floor_constraints.py`, which `make test-floor` installs under: each dependency with a
floor is pinned to it, extras included, and one without a floor is left free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("tomllib", reason="the script reads pyproject.toml with Python 3.11's tomllib")

SCRIPT = REPO_ROOT / ".ci" / "floor_constraints.py"


def constraints(root: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_each_floor_is_pinned_and_a_dependency_without_one_is_free(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        """[project]
name = "x"
dependencies = [
    "torch>=2.6,<2.15",
    "hydra-core >= 1.3.2, < 1.4",
    "scipy<2,>=1.11",
    "submitit[slurm]>=1.5 ; python_version >= '3.10'",
    "filelock",
    "numpy<3",
]
[project.optional-dependencies]
dev = ["ruff==0.17.6", "mypy>=1.10"]
"""
    )
    assert constraints(tmp_path) == [
        "torch==2.6",
        "hydra-core==1.3.2",
        "scipy==1.11",
        "submitit==1.5",
        "mypy==1.10",
    ]


def test_the_projects_floors_include_torch_and_lightning() -> None:
    pins = constraints(REPO_ROOT)
    assert any(pin.startswith("torch==") for pin in pins)
    assert any(pin.startswith("pytorch-lightning==") for pin in pins)
