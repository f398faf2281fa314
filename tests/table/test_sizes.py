"""The size study's report: test LL at the best validation epoch and at the fixed budget,
gains over IWAE (Welch over seeds, paired over points), best epochs, per regime."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from scipy import stats

from benchmark.table.sizes import main, regimes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_POINTS = 50


def write_run(
    root: Path, size: int | None, model: str, seed: int, best: float, last: float, n_train: int = 0
) -> None:
    """A finished validated run whose per-point estimates are ``value + point offsets``, on
    ``size`` training images (None: all ``n_train`` of them)."""
    run_dir = root / f"{size}" / model / f"seed_{seed}"
    run_dir.mkdir(parents=True)
    offsets = torch.linspace(-5, 5, N_POINTS, dtype=torch.float64) + 0.1 * seed
    checkpoints = {}
    for name, value in (("best", best), ("last", last)):
        per_point = value + offsets - offsets.mean()
        torch.save(per_point, run_dir / f"{name}.pt")
        checkpoints[name] = {
            "epoch": 10 * (seed + 1) if name == "best" else 200,
            "test_ll": per_point.mean().item(),
            "test_ll_se": 0.5,
            "per_point_file": f"{name}.pt",
        }
    protocol = {"binarization": "static", "epochs": 200, "eval_samples": 2000, "hidden": [400]}
    protocol |= {"latent": 20, "nonlinearity": "tanh", "train_subset": size, "test_subset": 2000}
    result = {
        "dataset": "mnist",
        "model": model,
        "seed": seed,
        "test_ll": checkpoints["last"]["test_ll"],
        "n_train": size or n_train,
        "checkpoints": checkpoints,
        "protocol": protocol,
        "protocol_config": {
            "dataset": {"train_subset": size},
            "model": {"name": model, "k": 25, "random_encoder": model != "iwae"}
            | {"weight_sampling": "local", "init_std": 0.05},
        },
    }
    (run_dir / "result.json").write_text(json.dumps(result))


# (best, last) per seed: IWAER wins at the best epoch on 1,000 images, loses at the budget.
VALUES = {
    (1000, "iwae"): [(-120.0, -125.0), (-121.0, -126.0), (-119.5, -124.0)],
    (1000, "iwaer"): [(-118.0, -127.0), (-118.5, -127.5), (-117.0, -126.0)],
    (4000, "iwae"): [(-110.0, -111.0), (-110.5, -111.5), (-109.0, -110.0)],
    (4000, "iwaer"): [(-110.2, -110.5), (-110.1, -110.0), (-109.9, -110.9)],
}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    for (size, model), values in VALUES.items():
        for seed, (best, last) in enumerate(values):
            write_run(tmp_path / "study", size, model, seed, best, last)
    return tmp_path / "study"


def test_gains_over_seeds_and_points_and_the_best_epochs(study: Path) -> None:
    small, large = regimes(study)
    assert (small.train_size, large.train_size) == (1000, 4000)
    for regime in (small, large):
        for checkpoint, index in (("best", 0), ("last", 1)):
            (gain,) = regime.gains[checkpoint]
            iwaer = [v[index] for v in VALUES[(regime.train_size, "iwaer")]]
            iwae = [v[index] for v in VALUES[(regime.train_size, "iwae")]]
            assert (gain.model, gain.baseline) == ("iwaer", "iwae")
            assert gain.difference == pytest.approx(
                statistics.fmean(iwaer) - statistics.fmean(iwae)
            )
            welch = stats.ttest_ind(iwaer, iwae, equal_var=False).pvalue
            assert gain.p_value == pytest.approx(welch)
            # Per-point offsets are shared, so the paired difference is the mean difference
            # at every point: SE 0, and IWAER higher on all points or none.
            assert gain.paired.mean == pytest.approx(gain.difference)
            assert gain.paired.se == pytest.approx(0.0, abs=1e-9)
    (iwae_row,) = [r for r in small.models if r.model == "iwae"]
    assert iwae_row.best_epoch[0] == 20.0 and iwae_row.n == 3  # epochs 10, 20, 30
    assert small.gains["best"][0].paired.fraction_better == 1.0
    assert small.gains["last"][0].paired.fraction_better == 0.0  # the sign flips at the budget
    assert small.gains["last"][0].difference == pytest.approx(-126.8333 + 125.0, abs=1e-4)


def test_a_regime_on_every_training_image_is_sized_by_the_images_trained_on(
    tmp_path: Path,
) -> None:
    for seed in range(2):
        write_run(tmp_path, None, "iwae", seed, -100.0, -101.0, n_train=50_000)
    (regime,) = regimes(tmp_path)
    assert regime.train_size == 50_000 and regime.models[0].n == 2
    assert main([str(tmp_path)]) == 0
    assert "## mnist, 50,000 training images, 200 epochs" in (tmp_path / "sizes.md").read_text()


def test_report_files_and_no_validated_runs(study: Path, tmp_path: Path) -> None:
    assert main([str(study), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "sizes.md").read_text()
    assert "## mnist, 1,000 training images, 200 epochs" in text
    assert "| iwaer - iwae | best validation epoch | +2.33 ± " in text
    assert (tmp_path / "out" / "sizes.png").read_bytes().startswith(PNG_MAGIC)
    assert len(json.loads((tmp_path / "out" / "sizes.json").read_text())) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
