"""Groups of runs that differ only in their seeds (``run_group``, hydra/launcher=replicas):
each replica is the run it replaces, and resumes as one."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from benchmark.runs.builders import LAST_CHECKPOINT
from benchmark.runs.config import compose_config
from benchmark.runs.experiment import PER_POINT_FILES, run, run_group
from benchmark.runs.metrics_log import read_epoch_metrics
from benchmark.runs.rescore import load_model, rescore
from benchmark.runs.validation import ConfigError
from benchmark.training.module import ImportanceWeightedLitModule, TrainingDivergedError
from tests.conftest import REPO_ROOT, run_py

TINY_RUN = [
    "experiment=smoke",
    "model=iwaer",
    "network.hidden=[32]",
    "network.latent=8",
    "dataset.train_subset=300",
    "dataset.test_subset=100",
    "eval.n_samples=10",
    "eval.test_bound_every_n_epochs=1",
    "eval.test_bound_points=100",
    "eval.progress=false",
    "trainer.enable_progress_bar=false",
]
SEEDS = (0, 1, 2)
# Tolerance of a group against its runs alone (groups of one): batched matmuls of R and of one
# replica may round differently (float32, ~1e-7 relative per op), and six Adam steps carry that
# into the parameters; 1e-5 relative leaves room for another BLAS, while the seeds' own numbers
# differ by 1e-4 relative or more (7e-4 for the test log-likelihoods here): a replica that
# mixed in another seed's initialisation, data or noise would show.
RTOL = 1e-5


def config(results: Path, data_dir: Path, seed: int, *extra: str) -> DictConfig:
    return compose_config(
        [*TINY_RUN, f"results_dir={results}", f"data_dir={data_dir}", f"seed={seed}", *extra]
    )


def alone(results: Path, data_dir: Path, *extra: str) -> list[dict]:
    out = []
    for seed in SEEDS:
        cfg = config(results, data_dir, seed, *extra)
        out.append(run(cfg))
    return out


def curves(result: dict) -> dict[int, dict[str, float]]:
    """Per epoch: train/bound and test/bound from the run's CSV log."""
    run_dir = Path(result["config"]["run_dir"])
    return {
        epoch: {key: values[key] for key in ("train/bound", "test/bound")}
        for epoch, values in read_epoch_metrics(run_dir).items()
        if "train/bound" in values
    }


def per_point(result: dict) -> torch.Tensor:
    return torch.load(Path(result["config"]["run_dir"]) / PER_POINT_FILES["last"])


@pytest.fixture(scope="module")
def runs_alone(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> list[dict]:
    """The three seeds trained one after another, 2 epochs."""
    return alone(tmp_path_factory.mktemp("alone"), data_dir, "trainer.max_epochs=2")


@pytest.fixture(scope="module")
def group_of_three(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> list[dict]:
    """The three seeds trained as one group, 2 epochs."""
    root = tmp_path_factory.mktemp("group")
    return run_group([config(root, data_dir, s, "trainer.max_epochs=2") for s in SEEDS], [None] * 3)


def test_replicas_give_the_numbers_of_the_runs_alone(
    runs_alone: list[dict], group_of_three: list[dict]
) -> None:
    """Per-epoch train and test bounds and the final test log-likelihood of a 3-replica
    group equal the three runs alone to float rounding (``RTOL``)."""
    rtol = RTOL
    for got, want in zip(group_of_three, runs_alone, strict=True):
        assert got["protocol_id"] == want["protocol_id"] and got["seed"] == want["seed"]
        assert got["replica_group"] == {"seeds": list(SEEDS), "index": SEEDS.index(got["seed"])}
        assert set(curves(got)) == {0, 1}
        for epoch, values in curves(want).items():
            for key, value in values.items():
                assert curves(got)[epoch][key] == pytest.approx(value, rel=rtol, abs=0), key
        assert got["test_ll"] == pytest.approx(want["test_ll"], rel=rtol, abs=0)
        torch.testing.assert_close(per_point(got), per_point(want), rtol=rtol, atol=0)
        assert (Path(got["config"]["run_dir"]) / "samples.png").is_file()
    # The seeds differ by far more than the tolerance: a mixed-up replica would show.
    lls = [r["test_ll"] for r in runs_alone]
    assert min(abs(a - b) for a in lls for b in lls if a != b) > 10 * RTOL * abs(lls[0])


def test_replicas_resume_alone_or_in_any_group(
    runs_alone: list[dict], group_of_three: list[dict], tmp_path: Path, data_dir: Path
) -> None:
    """Seed 0 finished, seeds 1 and 2 interrupted after epoch 1 (checkpoints written by a
    group of three): a group over all three skips seed 0 and resumes 1 and 2 together, and a
    group checkpoint resumes its run alone too; each equals its uninterrupted run to float
    rounding, and bitwise where the group is the same (``test_runner`` resumes runs alone)."""
    expected = runs_alone
    half = tmp_path / "half"  # epoch 1 of 2, as a group: the state an interruption leaves
    run_group([config(half, data_dir, s, "trainer.max_epochs=1") for s in SEEDS], [None] * 3)
    full, alone_dir, same = tmp_path / "full", tmp_path / "alone", tmp_path / "same"
    cfgs = [config(full, data_dir, s, "trainer.max_epochs=2") for s in SEEDS]
    same_group = [config(same, data_dir, s, "trainer.max_epochs=2") for s in SEEDS]
    shutil.copytree(Path(expected[0]["config"]["run_dir"]), cfgs[0].run_dir)
    for s in SEEDS:
        source = Path(config(half, data_dir, s, "trainer.max_epochs=1").run_dir) / LAST_CHECKPOINT
        targets = [same_group[s].run_dir]
        if s > 0:
            targets += [
                cfgs[s].run_dir,
                config(alone_dir, data_dir, s, "trainer.max_epochs=2").run_dir,
            ]
        for target in targets:
            (Path(target) / LAST_CHECKPOINT).parent.mkdir(parents=True)
            shutil.copy(source, Path(target) / LAST_CHECKPOINT)
    for got, want in zip(run_group(same_group, [None] * 3), group_of_three, strict=True):
        assert got["test_ll"] == want["test_ll"]  # the same group resumed: bitwise
        assert torch.equal(per_point(got), per_point(want))
    stored = json.loads((Path(cfgs[0].run_dir) / "result.json").read_text())

    grouped = run_group(cfgs, [None] * 3)
    assert grouped[0] == stored  # finished: not trained again
    resumed = [grouped[1], grouped[2]]
    resumed.append(run(config(alone_dir, data_dir, 1, "trainer.max_epochs=2")))  # alone
    for got, want in zip(resumed, [expected[1], expected[2], expected[1]], strict=True):
        assert got["test_ll"] == pytest.approx(want["test_ll"], rel=RTOL, abs=0)
        assert got["train_bound_last_epoch"] == pytest.approx(
            want["train_bound_last_epoch"], rel=RTOL, abs=0
        )
        torch.testing.assert_close(per_point(got), per_point(want), rtol=RTOL, atol=0)
        assert set(curves(got)) == {1}  # only the epoch after the checkpoint was trained


def test_a_run_stopped_after_training_is_evaluated_as_it_would_have_been(
    runs_alone: list[dict], tmp_path: Path, data_dir: Path
) -> None:
    """Killed between its last checkpoint and its result: relaunched, it trains nothing and
    writes the result it would have written, its last training bound included."""
    want = runs_alone[0]
    source = Path(want["config"]["run_dir"])
    cfg = config(tmp_path, data_dir, 0, "trainer.max_epochs=2")
    shutil.copytree(source, cfg.run_dir)
    (Path(cfg.run_dir) / "result.json").unlink()
    got = run(cfg)
    assert got["test_ll"] == want["test_ll"] and got["epochs"] == want["epochs"]
    assert got["train_bound_last_epoch"] == want["train_bound_last_epoch"] is not None


def test_replicas_launcher_groups_a_sweep_by_all_but_seed(tmp_path: Path, data_dir: Path) -> None:
    """``hydra/launcher=replicas`` through run.py: one group per model, every run its own
    directory with result, Hydra configs, checkpoint and W&B run: offline by itself without an
    API key, with the command that uploads it. (Skipping finished runs is tested in-process
    above.)"""
    args = [
        "-m",
        *TINY_RUN,
        "model=iwae,iwaer",
        "seed=0-1",
        "hydra/launcher=replicas",
        "logger=wandb",
        f"results_dir={tmp_path / 'r'}",
    ]
    first = run_py(*args, data_dir=data_dir, wandb_logged_out_home=tmp_path / "home")
    assert first.returncode == 0, first.stderr[-3000:]
    output = first.stdout + first.stderr
    assert "logging offline" in output and "wandb sync" in output
    assert "as 2 replica group(s)" in first.stderr + first.stdout
    results = sorted((tmp_path / "r").rglob("result.json"))
    assert len(results) == 4
    wandb_runs = set()
    for path in results:
        result = json.loads(path.read_text())
        assert result["replica_group"]["seeds"] == [0, 1]
        assert (path.parent / ".hydra" / "overrides.yaml").is_file()
        assert (path.parent / LAST_CHECKPOINT).is_file()
        assert f"seed={result['seed']}" in result["command"]
        (offline_run,) = path.parent.glob("wandb/offline-run-*")
        assert any(offline_run.glob("*.wandb"))
        wandb_runs.add(offline_run.name.split("-", 3)[-1])  # offline-run-<time>-<run id>
    assert len(wandb_runs) == 4  # one W&B run per replica
    assert first.stdout.count("test log-likelihood") == 4


def test_a_diverged_replica_fails_alone(
    runs_alone: list[dict], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose bound becomes NaN is reported (one line, its seed) and not
    checkpointed; the others of its group train on and finish."""
    poison = ImportanceWeightedLitModule.init_output_bias

    def nan_output_bias_for_seed_1(
        self: ImportanceWeightedLitModule, pixel_mean: torch.Tensor
    ) -> None:
        poison(self, pixel_mean)
        self.replica(1).output_layer().bias.data.fill_(float("nan"))

    monkeypatch.setattr(ImportanceWeightedLitModule, "init_output_bias", nan_output_bias_for_seed_1)
    cfgs = [config(tmp_path, data_dir, s, "trainer.max_epochs=2") for s in (0, 1)]
    healthy, diverged = run_group(cfgs, [None] * 2)
    assert healthy["epochs"] == 2 and math.isfinite(healthy["test_ll"])
    assert healthy["test_ll"] == pytest.approx(runs_alone[0]["test_ll"], rel=RTOL, abs=0)
    assert isinstance(diverged, TrainingDivergedError)
    assert "seed 1" in str(diverged) and "no checkpoint was written" in str(diverged)
    assert not (Path(cfgs[1].run_dir) / "result.json").exists()
    assert not (Path(cfgs[1].run_dir) / LAST_CHECKPOINT).exists()


def test_a_finished_run_loads_and_rescores_without_touching_its_result(
    runs_alone: list[dict],
) -> None:
    """``load_model`` gives the trained model (its estimate is the run's own); rescoring with
    the run's own settings reproduces its test log-likelihood bitwise, other settings write a
    separate record; ``result.json`` stays as it was."""
    run_dir = Path(runs_alone[0]["config"]["run_dir"])
    before = (run_dir / "result.json").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.runs.rescore", str(run_dir), "eval.seed=0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (same,) = (run_dir / "rescore").glob("*.json")
    record = json.loads(same.read_text())
    assert record["test_ll"] == runs_alone[0]["test_ll"]
    other = rescore(run_dir, ["eval.seed=1", "eval.n_samples=20"])
    assert other["eval_samples"] == 20 and other["test_ll"] != record["test_ll"]
    assert len(list((run_dir / "rescore").glob("*.json"))) == 2
    assert (run_dir / "result.json").read_bytes() == before
    with pytest.raises(ConfigError, match="cannot rescore"):
        rescore(run_dir, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="without a validation split, so it has no best epoch"):
        rescore(run_dir, ["eval.checkpoint=best"])
    assert not load_model(run_dir).training


def test_rescoring_takes_keys_the_run_left_null_and_refuses_a_seed_static_data_ignore(
    runs_alone: list[dict], tmp_path: Path
) -> None:
    result = json.loads((Path(runs_alone[0]["config"]["run_dir"]) / "result.json").read_text())
    result["config"]["dataset"]["test_subset"] = None  # as in every full-data run
    result["config"]["dataset"]["binarization"] = "static"
    (tmp_path / "result.json").write_text(json.dumps(result))
    with pytest.raises(ConfigError, match="binarization=static, fixed; the seed binarizes"):
        rescore(tmp_path, ["dataset.test_subset=50", "dataset.test_binarization_seed=1"])
