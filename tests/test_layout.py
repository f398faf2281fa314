"""The package tree is the architecture: each subpackage of ``benchmark`` imports only from
those below it, and no code outside a few named capability checks branches on the device."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT

# Lowest first; a package imports from itself and from lower ranks only (table and speed are
# both on top, so neither imports the other).
RANKS = {
    "compilation": 0,
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


DEVICE_NAMES = {"cpu", "cuda", "mps", "xpu", "meta"}
# Capability checks, not branches of the math: (file, enclosing function) -> why.
CAPABILITY_CHECKS = {
    ("benchmark/training/module.py", "adam"): "fused Adam exists for CPU and CUDA tensors",
    ("benchmark/training/callbacks.py", "on_train_epoch_end"): "CUDA graphs exist on GPUs only",
    ("benchmark/runs/resources.py", "apply_job_resources"): "GPUs to divide among jobs",
    ("benchmark/runs/provenance.py", "device_name"): "the processor named in result files",
}


def device_branches(path) -> list[tuple[str, int]]:
    """(enclosing function or ``<module>``, line) of every comparison with a device name
    (``==``, ``!=``, ``in``, ``.startswith``), every ``.is_cuda`` and every ``torch.cuda``
    query in ``path``."""
    tree = ast.parse(path.read_text())
    owner = {}
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        for node in ast.walk(function):
            owner.setdefault(node, function.name)  # the outermost function
    found = []
    for node in ast.walk(tree):
        operands = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "startswith":
            operands = node.args
        names = {
            element.value
            for operand in operands
            for element in (
                operand.elts if isinstance(operand, (ast.Tuple, ast.List)) else [operand]
            )
            if isinstance(element, ast.Constant)
        }
        attribute = isinstance(node, ast.Attribute) and (
            node.attr == "is_cuda" or getattr(node.value, "attr", "") == "cuda"
        )
        if names & DEVICE_NAMES or attribute:
            found.append((owner.get(node, "<module>"), node.lineno))
    return found


def test_no_device_branches_outside_the_named_capability_checks() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line} ({function})"
        for path in [
            *(REPO_ROOT / "benchmark").rglob("*.py"),
            *(REPO_ROOT / "datamodules").rglob("*.py"),
        ]
        if "speed" not in path.relative_to(REPO_ROOT).parts  # the harness synchronizes CUDA
        for function, line in device_branches(path)
        if (str(path.relative_to(REPO_ROOT)), function) not in CAPABILITY_CHECKS
    ]
    assert not offenders


@pytest.mark.parametrize(
    "branch",
    [
        'd.type == "cpu"',
        'd.type != "cuda"',
        'd.type in ("cpu", "cuda")',
        "torch.cuda.is_available()",
        "d.is_cuda",
        'str(d).startswith("cuda")',
    ],
)
def test_the_device_branch_check_sees_every_form(branch: str, tmp_path) -> None:
    path = tmp_path / "m.py"
    path.write_text(f"def f(d):\n    return {branch}\n\n\nFLAG = {branch}\n")
    assert sorted(device_branches(path)) == [("<module>", 5), ("f", 2)]
