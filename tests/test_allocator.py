"""glibc keeps the memory a training step frees, so the next step does not page-fault it in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Page faults per IWAE training step at the paper's sizes, after warm-up steps.
SCRIPT = """
import resource, sys, torch
from benchmark.allocator import retain_freed_memory
from benchmark.models import ImportanceWeightedAutoencoder, ModelSpec
if sys.argv[1] == "retain":
    assert retain_freed_memory()
torch.manual_seed(0)
model = ImportanceWeightedAutoencoder(784, ModelSpec(k=25))
optimizer = torch.optim.Adam(model.parameters())
x = (torch.rand(100, 784) < 0.3).float()
def step():
    optimizer.zero_grad()
    (-model.bound(x, 25).mean()).backward()
    optimizer.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_retained_memory_removes_the_page_faults_of_a_training_step() -> None:
    default, retained = faults_per_step("default"), faults_per_step("retain")
    assert default > 1_000  # the step's activations, faulted in again every step
    assert retained < default / 5
