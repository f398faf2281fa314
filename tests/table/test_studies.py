"""Study trajectories: per-cell curves over seeds, best monitored value, gap, report files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from benchmark.table.studies import distinct_parts, main, trajectories

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    root: Path, model: str, seed: int, monitor: list[float], binarization: str = "static"
) -> None:
    """A finished run with test/ll_monitor every 10 epochs, train/bound and test/bound."""
    result = {
        "dataset": "mnist",
        "model": model,
        "seed": seed,
        "test_ll": monitor[-1] - 1.0,
        "protocol": {
            "binarization": binarization,
            "epochs": 10 * len(monitor),
            "eval_samples": 2000,
            "hidden": [400],
            "latent": 20,
            "nonlinearity": "tanh",
            "omniglot_source": None,
            "train_subset": 1000,
            "test_subset": 2000,
        },
        "protocol_config": {
            "dataset": {"name": "mnist", "binarization": binarization},
            "model": {
                "name": model,
                "k": 25,
                "random_encoder": model != "iwae",
                "weight_sampling": "local",
                "init_std": 0.05,
            },
        },
        "config": {
            "eval": {"test_ll_every_n_epochs": 10, "test_ll_points": 1000, "test_ll_samples": 100}
        },
    }
    run_dir = root / model / binarization / f"seed_{seed}"
    (run_dir / "csv" / "version_0").mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(result))
    rows = ["epoch,step,train/bound,test/bound,test/ll_monitor"]
    for epoch in range(10 * len(monitor)):
        train = -150.0 + epoch + seed
        rows.append(f"{epoch},{epoch},{train},,")
        if (epoch + 1) % 10 == 0:
            value = monitor[(epoch + 1) // 10 - 1]
            rows.append(f"{epoch},{epoch},,{value - 2.0},{value}")
    (run_dir / "csv" / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")


IWAE = [[-130.0, -120.0, -125.0], [-131.0, -119.0, -126.0]]  # peaks at epoch 20, then falls
IWAER = [[-135.0, -124.0, -121.0], [-134.0, -123.0, -120.0]]  # still rising at epoch 30


@pytest.fixture
def study(tmp_path: Path) -> Path:
    for model, runs in (("iwae", IWAE), ("iwaer", IWAER)):
        for seed, monitor in enumerate(runs):
            write_run(tmp_path / "study", model, seed, monitor)
    return tmp_path / "study"


def test_best_value_its_epoch_and_the_gap_over_seeds(study: Path) -> None:
    (members,) = trajectories(study).values()
    iwae, iwaer = members
    assert iwae.label == "iwae (k=25)" and iwaer.label.startswith("iwaer")
    assert iwae.best.mean == statistics.fmean([-120.0, -119.0]) and iwae.best_epoch.mean == 20
    assert iwaer.best.mean == -120.5 and iwaer.best_epoch.mean == 30
    assert iwae.best.se == pytest.approx(statistics.stdev([-120.0, -119.0]) / 2**0.5)
    curve = iwae.curves["test/ll_monitor"]
    assert sorted(curve) == [10, 20, 30] and curve[30].mean == -125.5
    # Last epoch (30): train/bound -150 + 29 + seed, test/bound = monitor - 2.
    gaps = [(-121.0 + s) - (m[-1] - 2.0) for s, m in enumerate(IWAE)]
    assert iwae.gap.mean == pytest.approx(statistics.fmean(gaps))
    assert iwae.final.mean == statistics.fmean([m[-1] - 1.0 for m in IWAE])
    assert (
        iwae.monitor == "test/ll_monitor: S=100 on 1,000 fixed random test points, every 10 epochs"
    )


def test_cells_of_different_protocols_are_labelled_by_protocol(tmp_path: Path) -> None:
    write_run(tmp_path, "iwae", 0, [-100.0, -99.0], binarization="static")
    write_run(tmp_path, "iwae", 0, [-98.0, -97.0], binarization="dynamic")
    (members,) = trajectories(tmp_path).values()
    assert sorted(t.label.split(",")[0] for t in members) == [
        "dynamic binarization",
        "static binarization",
    ]


def test_report_files_are_written(study: Path) -> None:
    assert main([str(study), "--title", "A study", "--paper-lines"]) == 0
    text = (study / "trajectories.md").read_text()
    assert text.startswith("# A study")
    assert "| iwae (k=25) | 2 | -119.50 ± 0.50 | 20 ± 0 |" in text
    assert "| 30 | -125.50 ± 0.50 | -120.50 ± 0.50 |" in text
    # Finals: IWAE -126.5 ± 0.5, IWAER -121.5 ± 0.5 (the best); Welch with equal spreads.
    p = stats.ttest_ind([-126.0, -127.0], [-122.0, -121.0], equal_var=False).pvalue
    row = f"| iwae (k=25) - iwaer (k=25, local, s0=0.05) | -5.00 ± 0.71 | {p:.2g} | — | — |"
    assert row in text
    assert (study / "trajectories.png").read_bytes().startswith(PNG_MAGIC)


def test_a_directory_without_runs_is_an_error(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 1
    assert main([str(tmp_path / "missing")]) == 2


def test_labels_keep_only_the_parts_that_differ() -> None:
    labels = ["dynamic binarization, 30 epochs, S=2000", "static binarization, 30 epochs, S=2000"]
    assert distinct_parts(labels) == ["dynamic binarization", "static binarization"]
    assert distinct_parts(["a, b", "a, b"]) == ["a, b", "a, b"]  # nothing differs: kept whole
