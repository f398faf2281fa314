"""The projected wall time printed before a sweep: its arithmetic, the sweep's cells, the
report, and the timed step and evaluation chunk (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.runs.builders import build_model
from benchmark.runs.config import compose_config
from benchmark.speed import eta


def test_projection_counts_every_step_and_every_evaluated_pair() -> None:
    cfg = compose_config(["experiment=sizes"])  # val/ll: S = 100 on 1,000 points, every 10
    train_s, eval_s = eta.projected_run_seconds(
        cfg, n_train=1000, n_test=2000, step_s=0.5, chunk_s=2.0, chunk_rows=4
    )
    assert train_s == 200 * (1000 // 100) * 0.5
    val_pairs = (200 // 10) * 1000 * 100
    assert eval_s == (2 * 2000 * 2000 + val_pairs) * 2.0 / 4  # best and last scored
    cfg = compose_config(["experiment=protocol_study"])  # test/ll_monitor: S = 500, every 5
    train_s, eval_s = eta.projected_run_seconds(
        cfg, n_train=60_000, n_test=10_000, step_s=0.5, chunk_s=2.0, chunk_rows=4
    )
    assert train_s == 30 * 600 * 0.5
    assert eval_s == (10_000 * 2000 + (30 // 5) * 1000 * 500) * 2.0 / 4


def test_sweep_cells_are_the_product_of_models_and_data_sets_and_count_seeds() -> None:
    cells, seeds = eta.sweep_cells(
        [
            "experiment=quick",
            "model=iwae,iwaer",
            "dataset=mnist,omniglot",
            "seed=0-4",
            "hydra.launcher.partition=gpu",
            "num_threads=1",
        ]
    )
    assert seeds == 5
    assert cells == [
        ["experiment=quick", "num_threads=1", f"model={m}", f"dataset={d}"]
        for m in ("iwae", "iwaer")
        for d in ("mnist", "omniglot")
    ]
    assert eta.sweep_cells(["seed=3"])[1] == 1 and eta.sweep_cells(["seed=0,2,7"])[1] == 3


def test_report_sums_runs_times_seeds_and_points_cpu_users_of_the_paper_preset_to_quick() -> None:
    cells = [
        eta.CellTime("mnist", "iwae", 3600.0, 360.0, 5),
        eta.CellTime("mnist", "iwaer", 7200.0, 0.0, 5),
    ]
    text = eta.report(cells, "cpu (2 threads)", "paper")
    assert "mnist/iwae: 1.1 h per run" in text and "x 5 seeds" in text
    assert "total: 15.5 h" in text and "PRESET=quick" in text
    assert "PRESET=quick" not in eta.report(cells, "cpu (2 threads)", "quick")
    assert "PRESET=quick" not in eta.report(cells, "NVIDIA H200", "paper")
    assert [eta.hours(s) for s in (5400, 240, 12.2)] == ["1.5 h", "4 min", "13 s"]
    grouped = [eta.CellTime("mnist", "iwae", 4000.0, 360.0, 5, replicas=5)]
    text = eta.report(grouped, "NVIDIA H200", "paper")
    assert "training 1.1 h for 5 replicas" in text and "total: 1.6 h" in text
    assert eta.CellTime("mnist", "iwae", 100.0, 0.0, 7, replicas=3).total_s == 300.0


def test_eta_of_a_small_sweep_runs_on_the_real_data(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["experiment=smoke", "model.k=2", "optim.batch_size=20", "eval.batch_size=20"]
    small.append(f"data_dir={data_dir}")
    assert eta.main([*small, "model=iwae,iwaer_2l", "dataset=mnist", "seed=0-1"]) == 0
    out = capsys.readouterr().out
    assert "mnist/iwae:" in out and "mnist/iwaer_2l:" in out and out.count("x 2 seeds") == 2
    eta.main([*small, "model=iwaer", "seed=0-2", eta.REPLICAS_LAUNCHER])
    assert "mnist/iwaer: training" in capsys.readouterr().out


def test_the_timed_chunk_is_one_pass_of_the_estimator_within_its_caps() -> None:
    cfg = compose_config(["model=iwaer", "network.hidden=[8]", "network.latent=2"])
    net = build_model(cfg, 784)
    x = torch.rand(cfg.eval.batch_size, 784).bernoulli()
    evaluate, rows = eta.eval_chunk(net, x, cfg.eval, False)
    estimate = evaluate()
    assert estimate.n_points == cfg.eval.batch_size
    assert estimate.n_samples * estimate.n_points == rows == cfg.eval.max_chunk_rows
    small = compose_config(["eval.max_chunk_rows=1000"]).eval
    assert eta.eval_chunk(net, x, small, False)[1] == 1000
