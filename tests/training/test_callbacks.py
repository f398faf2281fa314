"""The CUDA-graph check: one warning when a graphed fit on a GPU ran passes without graphs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from benchmark.runs.builders import build_trainer
from benchmark.runs.config import compose_config
from benchmark.training import callbacks
from benchmark.training.callbacks import CudaGraphCheck


@pytest.mark.parametrize(
    ("device", "skipped", "warned"), [("cuda", 2, True), ("cuda", 0, False), ("cpu", 2, False)]
)
def test_the_check_warns_once_when_a_gpu_fit_ran_passes_without_graphs(
    device: str, skipped: int, warned: bool, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    counts = iter([5, 5 + skipped, 5 + 2 * skipped])  # the counter before, after epochs 1, 2
    monkeypatch.setattr(callbacks, "cudagraph_skips", lambda: next(counts))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    check = CudaGraphCheck()
    with caplog.at_level(logging.WARNING):
        check.on_train_start(trainer, None)
        check.on_train_epoch_end(trainer, None)
        check.on_train_epoch_end(trainer, None)
    messages = [r.getMessage() for r in caplog.records if "without CUDA graphs" in r.getMessage()]
    assert len(messages) == (1 if warned else 0)
    assert all(
        m.startswith(f"compile=reduce-overhead: {skipped} compiled passes") for m in messages
    )


@pytest.mark.parametrize(("compile", "checked"), [("reduce-overhead", True), ("true", False)])
def test_graphed_runs_get_the_check(compile: str, checked: bool, tmp_path) -> None:
    trainer = build_trainer(compose_config([f"compile={compile}", "logger=[]"]), [tmp_path])
    assert any(isinstance(c, CudaGraphCheck) for c in trainer.callbacks) == checked
