"""The speed harness: its timing loop, the Table 1 projection, a tiny ``python -m
benchmark.speed`` run and one stopped by SIGTERM (no timing assertions)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.runs.config import compose_config
from benchmark.speed import bench
from benchmark.speed.timing import MODELS, REPO_ROOT, compare_with_baseline, time_each

TINY = ["batch=10", "k=3", "hidden=[16]", "latent=4", "steps=2", "repeats=1", "warmup=1"]
TINY += ["matmul=64", "compile=false", "device=cpu"]


def speed(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark.speed", *argv],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_time_each_interleaves_the_rounds_of_its_functions() -> None:
    calls: list[str] = []
    times = time_each(
        {name: lambda name=name: calls.append(name) for name in "ab"},
        torch.device("cpu"),
        calls=2,
        repeats=2,
        warmup=1,
    )
    assert calls == ["a", "b", *"aabbaabb"]
    assert set(times) == {"a", "b"} and all(0 < t < float("inf") for t in times.values())


def test_a_table1_cell_is_its_steps_and_evaluated_pairs_once_per_run_or_group() -> None:
    paper = compose_config(["experiment=paper"])
    step = {"step_s": 0.1, "compile_s": 10.0}
    chunk = {"chunk_s": 0.5, "chunk_rows": 5000, "compile_s": 2.0}
    train_s = 500 * 600 * 0.1 + 10.0  # 500 epochs of 60,000 // 100 steps
    eval_s = 10_000 * 2000 * 0.5 / 5000 + 2.0
    sizes = bench.PAPER_DATA["mnist"]
    assert bench.cell_hours(paper, sizes, step, chunk, 1) == (5 * train_s + 5 * eval_s) / 3600
    assert bench.cell_hours(paper, sizes, step, chunk, 5) == (train_s + 5 * eval_s) / 3600


def test_table1_takes_each_cells_fastest_mode() -> None:
    """Compiled: a faster step alone but a slower group step."""
    times = {("false", 1): 0.02, ("false", 5): 0.03, ("true", 1): 0.01, ("true", 5): 0.04}
    train = [
        {"model": "iwae", "compile": mode, "replicas": r, "step_s": s, "compile_s": 100.0}
        for (mode, r), s in times.items()
    ]
    evals = [
        {"model": "iwae", "compile": mode, "chunk_s": 0.5, "chunk_rows": 5000, "compile_s": 0.0}
        for mode in ("false", "true")
    ]
    rows = bench.project_table1(train, evals)
    assert [(r["model"], r["dataset"]) for r in rows] == [("iwae", "mnist"), ("iwae", "omniglot")]
    mnist = rows[0]
    assert (mnist["sequential_compile"], mnist["replicas_compile"]) == ("true", "false")
    paper, sizes = compose_config(["experiment=paper"]), bench.PAPER_DATA["mnist"]
    assert mnist["sequential_h"] == bench.cell_hours(paper, sizes, train[2], evals[1], 1)
    assert mnist["replicas_h"] == bench.cell_hours(paper, sizes, train[1], evals[0], 5)


def test_the_benchmark_writes_every_model_and_mode_and_the_projection(tmp_path: Path) -> None:
    proc = speed(*TINY, f"out={tmp_path}")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    result = json.loads((tmp_path / "bench.json").read_text())
    markdown = (tmp_path / "bench.md").read_text()
    assert {"machine", "git", "options", "matmul", "train", "eval", "table1"} <= set(result)
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    peak = result["matmul"]["gflops"] * 1e9
    assert {(t["model"], t["replicas"]) for t in result["train"]} == {
        (m, r) for m in MODELS for r in (1, 5)
    }
    for t in result["train"]:
        assert t["compile"] == "false" and f"| {t['model']} | false | {t['replicas']} |" in markdown
        assert t["matmul_peak_fraction"] == pytest.approx(t["gflop"] * 1e9 / t["step_s"] / peak)
    alone = {t["model"]: t["step_s"] for t in result["train"] if t["replicas"] == 1}
    for t in result["train"]:
        assert t["vs_runs_alone"] == t["step_s"] / (t["replicas"] * alone[t["model"]])
    assert [e["model"] for e in result["eval"]] == list(MODELS)
    paper = compose_config(["experiment=paper"])
    steps = {(t["model"], t["replicas"]): t for t in result["train"]}
    evals = {e["model"]: e for e in result["eval"]}
    assert len(result["table1"]) == 6
    for cell in result["table1"]:
        sizes = bench.PAPER_DATA[cell["dataset"]]
        model = cell["model"]
        for column, r in (("sequential", 1), ("replicas", 5)):
            want = bench.cell_hours(paper, sizes, steps[model, r], evals[model], r)
            assert cell[f"{column}_h"] == want
    assert "Paper Table 1 projected" in markdown and "| total |" in markdown
    assert not (tmp_path / "bench.partial.json").exists()


def test_sigterm_writes_what_was_measured(tmp_path: Path) -> None:
    proc = speed(*TINY, "steps=50", f"out={tmp_path}")
    for line in proc.stderr:
        if line.startswith("[bench] matmul peak"):
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    partial = json.loads((tmp_path / "bench.partial.json").read_text())
    assert partial["matmul"]["gflops"] > 0 and partial["machine"]["device"] == "cpu"
    assert "table1" not in partial and not (tmp_path / "bench.json").exists()


def test_unknown_options_exit_with_the_list_of_options() -> None:
    with pytest.raises(SystemExit, match="options: device, out"):
        bench.parse_args(["speed=fast"])


@pytest.mark.slow
def test_the_baseline_comparison_times_both_checkouts() -> None:
    """Against this checkout itself (the old default is timed the same way in an old one)."""
    sizes = ["model.k=2", "network.hidden=[8]", "network.latent=2", "optim.batch_size=5"]
    compared = compare_with_baseline(str(REPO_ROOT), "cpu", 1, 1, 1, sizes)
    assert compared["commit"] and set(compared["models"]) == set(MODELS)
    for v in compared["models"].values():
        assert v["old_s"] > 0 and v["new_s"] > 0
        assert v["new_over_old"] == v["new_s"] / v["old_s"]  # one round
