"""The CUDA smoke tests (``make test-gpu``; skipped without a GPU): a training run, the
S-sample evaluation, replicas against runs alone, the CUDA-graph step and the benchmark.
Each also runs on the CPU in ``make test-slow``, so the test itself is checked everywhere."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.runs.experiment import PER_POINT_FILES, run, run_group
from benchmark.speed import bench
from tests.conftest import TINY_X, exact_log_marginal, tiny_model
from tests.runs.test_replicas import RTOL, config

DEVICES = [pytest.param("cuda", marks=pytest.mark.gpu), pytest.param("cpu", marks=pytest.mark.slow)]


def accelerator(device: str) -> str:
    return f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"


def train(results: Path, data_dir: Path, device: str, seed: int = 0, *extra: str) -> dict:
    cfg = config(results, data_dir, seed, accelerator(device), "trainer.max_epochs=2", *extra)
    return run(cfg)


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_trains_and_evaluates_on_the_device_reproducibly(
    device: str, tmp_path: Path, data_dir: Path
) -> None:
    first = train(tmp_path / "a", data_dir, device)
    again = train(tmp_path / "b", data_dir, device)
    assert first["machine"]["device"].startswith(device)
    assert math.isfinite(first["test_ll"]) and first["test_ll"] < 0
    assert again["test_ll"] == pytest.approx(first["test_ll"], rel=1e-6, abs=0)


@pytest.mark.parametrize("device", DEVICES)
def test_the_estimate_converges_to_the_exact_log_likelihood(device: str) -> None:
    """S = 20,000 on a tiny float64 model whose log p(x) is known by quadrature: within 5
    standard errors of the per-point estimates' spread over repeated seeds."""
    model = tiny_model().to(device)
    x = TINY_X.to(device)
    estimates = torch.stack(
        [
            estimate_log_likelihood(model, x, n_samples=20_000, seed=s, progress=False).per_point
            for s in range(8)
        ]
    )
    exact = exact_log_marginal(model.cpu(), TINY_X)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    assert ((estimates.mean(0) - exact).abs() <= 5 * se + 1e-6).all()


@pytest.mark.parametrize("device", DEVICES)
def test_replicas_give_the_runs_alone_on_the_device(
    device: str, tmp_path: Path, data_dir: Path
) -> None:
    alone = [train(tmp_path / "alone", data_dir, device, s) for s in (0, 1, 2)]
    cfgs = [
        config(tmp_path / "group", data_dir, s, accelerator(device), "trainer.max_epochs=2")
        for s in (0, 1, 2)
    ]
    grouped = run_group(cfgs, [None] * 3)
    for got, want in zip(grouped, alone, strict=True):
        assert got["test_ll"] == pytest.approx(want["test_ll"], rel=RTOL, abs=0)
        assert got["train_bound_last_epoch"] == pytest.approx(
            want["train_bound_last_epoch"], rel=RTOL, abs=0
        )


@pytest.mark.parametrize("device", DEVICES)
def test_the_cuda_graph_step_gives_the_eager_numbers(
    device: str, tmp_path: Path, data_dir: Path
) -> None:
    """compile=reduce-overhead (forward and backward replayed from CUDA graphs on a GPU)
    against the eager run: the same noise, the same numbers up to float rounding, alone and
    as replicas."""
    eager = train(tmp_path / "eager", data_dir, device)
    graphed = train(tmp_path / "graphed", data_dir, device, 0, "compile=reduce-overhead")
    assert graphed["test_ll"] == pytest.approx(eager["test_ll"], rel=1e-4, abs=0)
    per_point = [
        torch.load(Path(r["config"]["run_dir"]) / PER_POINT_FILES["last"]) for r in (eager, graphed)
    ]
    torch.testing.assert_close(per_point[1], per_point[0], rtol=1e-4, atol=0)
    cfgs = [
        config(
            tmp_path / "group",
            data_dir,
            s,
            accelerator(device),
            "trainer.max_epochs=2",
            "compile=reduce-overhead",
        )
        for s in (0, 1)
    ]
    grouped = run_group(cfgs, [None] * 2)
    assert grouped[0]["test_ll"] == pytest.approx(eager["test_ll"], rel=1e-4, abs=0)


@pytest.mark.parametrize("device", DEVICES)
def test_the_benchmark_runs_on_the_device(device: str, tmp_path: Path) -> None:
    """Eager and CUDA-graph steps of one model, alone and as a group (on a CPU,
    compile=reduce-overhead compiles without graphs)."""
    from tests.speed.test_speed import TINY

    modes = ["false", "reduce-overhead"]
    argv = [*TINY, "models=[iwae]", f"compile=[{','.join(modes)}]", f"device={device}"]
    assert bench.main([*argv, f"out={tmp_path}"]) == 0
    stem = "bench_cuda" if device == "cuda" else "bench"
    result = json.loads((tmp_path / f"{stem}.json").read_text())
    assert result["machine"]["device"].startswith(device)
    assert {(t["compile"], t["replicas"]) for t in result["train"]} == {
        (mode, r) for mode in modes for r in (1, 5)
    }
    assert {e["compile"] for e in result["eval"]} == set(modes)
    # Graphed passes run without CUDA graphs: none on a GPU; on a CPU every one of them.
    skips = result["cudagraph_skips"]
    assert skips == 0 if device == "cuda" else skips > 0
    assert all(c["sequential_h"] > 0 and c["replicas_h"] > 0 for c in result["table1"])
    assert "| iwae | reduce-overhead | 5 |" in (tmp_path / f"{stem}.md").read_text()
