"""The package tree is the architecture: each subpackage of ``benchmark`` imports only from
those below it, and the device-specific fast paths live in ``benchmark.kernels`` alone."""

from __future__ import annotations

import ast
import re

import pytest

from tests.conftest import REPO_ROOT

# Lowest first; a package imports from itself and from lower ranks only (table and speed are
# both on top, so neither imports the other).
RANKS = {
    "kernels": 0,
    "randomness": 1,
    "models": 2,
    "evaluation": 3,
    "training": 4,
    "runs": 5,
    "table": 6,
    "speed": 6,
}
DATAMODULES_RANK = 1.5  # data: above randomness (binarization noise), below models


def imported_packages(path) -> set[str]:
    """The ``benchmark`` subpackages a module imports."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "benchmark":
                names |= {alias.name for alias in node.names}
            elif node.module.startswith("benchmark."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("benchmark.")}
    return names


def modules():
    for path in sorted((REPO_ROOT / "benchmark").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT / "benchmark").parts
        if len(parts) > 1:
            yield parts[0], path
    for path in sorted((REPO_ROOT / "datamodules").glob("*.py")):
        yield "datamodules", path


@pytest.mark.parametrize(("package", "path"), list(modules()), ids=lambda v: str(v)[-40:])
def test_no_module_imports_from_a_layer_above_it(package: str, path) -> None:
    assert package in RANKS or package == "datamodules", f"{package}: add it to RANKS"
    rank = DATAMODULES_RANK if package == "datamodules" else RANKS[package]
    for imported in imported_packages(path):
        assert imported in RANKS, f"{path} imports benchmark.{imported}, which has no layer"
        if imported == package:
            continue
        assert RANKS[imported] < rank, f"{path} ({package}) imports benchmark.{imported}"


def test_device_branches_live_in_the_kernels_package_only() -> None:
    branch = re.compile(r"""\.type\s*[!=]=\s*["']cpu["']""")
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for path in [
            *(REPO_ROOT / "benchmark").rglob("*.py"),
            *(REPO_ROOT / "datamodules").rglob("*.py"),
        ]
        if "kernels" not in path.relative_to(REPO_ROOT).parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if branch.search(line)
    ]
    assert not offenders
