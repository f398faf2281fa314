"""The one switch of the fast paths: ``kernels=auto`` uses them on CPUs only, ``reference``
nowhere; a run applies its mode and restores the previous one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark import kernels
from benchmark.randomness.noise import standard_normal
from benchmark.runs.config import compose_config
from benchmark.runs.experiment import train_and_evaluate
from benchmark.runs.validation import ConfigError, validate


def test_auto_means_cpus_only_and_reference_means_nowhere() -> None:
    assert kernels.get_mode() == "auto"
    assert kernels.active(torch.device("cpu"))
    assert not kernels.active(torch.device("meta")) and not kernels.active(torch.device("cuda"))
    assert kernels.default_chunk_rows(torch.device("cpu")) == kernels.CPU_CHUNK_ROWS
    assert kernels.default_chunk_rows(torch.device("cuda")) is None
    with kernels.using("reference"):
        assert not kernels.active(torch.device("cpu"))
        assert kernels.default_chunk_rows(torch.device("cpu")) is None
    assert kernels.get_mode() == "auto"


def test_the_two_modes_draw_different_streams_each_reproducible() -> None:
    def draw(mode: str) -> torch.Tensor:
        with kernels.using(mode):
            return standard_normal(
                1000, torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32
            )

    assert torch.equal(draw("auto"), draw("auto"))
    assert torch.equal(draw("reference"), draw("reference"))
    assert not torch.equal(draw("auto"), draw("reference"))
    reference = torch.empty(1000).normal_(generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw("reference"), reference)  # torch's own generator


def test_unknown_mode_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="kernels must be one of auto, reference"):
        kernels.set_mode("fast")
    with pytest.raises(ConfigError, match="kernels must be one of auto, reference"):
        validate(compose_config(["kernels=fast"]))


def test_a_run_uses_its_mode_and_restores_the_previous_one(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    original = kernels.active
    monkeypatch.setattr(
        kernels, "active", lambda device: seen.append(kernels.get_mode()) or original(device)
    )
    cfg = compose_config(
        [
            "experiment=smoke",
            "kernels=reference",
            f"results_dir={tmp_path}",
            f"data_dir={data_dir}",
            "dataset.train_subset=200",
            "dataset.test_subset=20",
            "eval.n_samples=5",
            "trainer.enable_progress_bar=false",
            "eval.progress=false",
            "~logger",
        ]
    )
    result = train_and_evaluate(cfg, Path(cfg.run_dir))
    assert seen and set(seen) == {"reference"}
    assert result["config"]["kernels"] == "reference"
    assert kernels.get_mode() == "auto"
