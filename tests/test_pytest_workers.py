"""``make test`` runs ``pytest -n W``: the workers share the cores, not oversubscribe them."""

from __future__ import annotations

import os

import pytest
import torch

from benchmark.runs.resources import available_cores


@pytest.mark.skipif(
    int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2,
    reason="only under pytest -n W with W >= 2 (make test): one process divides nothing",
)
def test_each_worker_and_the_runs_it_launches_take_their_share_of_the_cores() -> None:
    share = max(1, available_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    assert torch.get_num_threads() == share
    assert os.environ["OMP_NUM_THREADS"] == str(share)
