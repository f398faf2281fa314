"""The validation split in training: ``val/*`` from validation data only, the best epoch per
run (scored, checkpointed, loadable, chosen by ``eval.checkpoint``), early stopping, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.runs.builders import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    build_datamodule,
    estimator_options,
)
from benchmark.runs.experiment import run, run_group, summary_line
from benchmark.runs.metrics_log import read_epoch_metrics
from benchmark.runs.rescore import load_model, rescore
from benchmark.runs.validation import ConfigError
from benchmark.table.aggregate import aggregate
from tests.runs.test_replicas import config

# Adam at 0.05 on 300 images: val/ll rises with dips of several nats (a best epoch before
# the last, and early stopping within 12 epochs).
VALIDATED = (
    "dataset.val_size=200",
    "eval.val_every_n_epochs=1",
    "eval.val_ll_points=100",
    "eval.val_ll_samples=5",
    "eval.test_bound_every_n_epochs=0",
    "optim.lr=0.05",
)
EPOCHS = 12


def validated(root: Path, data_dir: Path, *extra: str, seed: int = 0) -> dict:
    return run(config(root, data_dir, seed, *VALIDATED, f"trainer.max_epochs={EPOCHS}", *extra))


def epoch_metrics(result: dict) -> dict[int, dict[str, float]]:
    return read_epoch_metrics(Path(result["config"]["run_dir"]))


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    return validated(tmp_path_factory.mktemp("validated"), data_dir)


def test_selection_reads_validation_data_and_never_test_data(
    result: dict, tmp_path: Path, data_dir: Path
) -> None:
    """Other test data change the test estimates but not one ``val/*`` value or the best
    epoch; no test quantity is computed during training; the best epoch is val/ll's argmax."""
    other = validated(
        tmp_path, data_dir, "dataset.test_binarization_seed=1", "dataset.test_subset=50"
    )
    assert other["test_ll"] != result["test_ll"]
    curves = epoch_metrics(result)
    assert epoch_metrics(other) == curves  # val/*, train/bound and weight stds, bitwise
    assert all({"val/bound", "val/ll"} <= set(values) for values in curves.values())
    assert len(curves) == EPOCHS and not any("test/" in k for v in curves.values() for k in v)
    best = result["checkpoints"]["best"]
    assert other["checkpoints"]["best"]["epoch"] == best["epoch"]
    val_ll = {epoch + 1: values["val/ll"] for epoch, values in curves.items()}
    assert best["epoch"] == max(val_ll, key=val_ll.get) < EPOCHS  # a best before the last
    assert best["val_ll"] == val_ll[best["epoch"]]


def test_best_and_last_are_scored_checkpointed_and_loadable(result: dict) -> None:
    run_dir = Path(result["config"]["run_dir"])
    last, best = result["checkpoints"]["last"], result["checkpoints"]["best"]
    assert last["epoch"] == result["epochs"] == EPOCHS and result["checkpoint"] == "last"
    assert result["test_ll"] == last["test_ll"] != best["test_ll"]
    assert result["protocol"]["validation"]["size"] == 200
    line = summary_line(result, run_dir)
    assert f"; last epoch {EPOCHS}, best epoch {best['epoch']}: {best['test_ll']:.3f})" in line
    saved = torch.load(run_dir / BEST_CHECKPOINT, weights_only=False)
    assert (saved["epoch"], saved["val_ll"]) == (best["epoch"], best["val_ll"])
    best_net, last_net = load_model(run_dir, "best"), load_model(run_dir, "last")
    assert not torch.equal(best_net.output_layer().bias, last_net.output_layer().bias)
    assert rescore(run_dir, ["eval.checkpoint=best"])["test_ll"] == best["test_ll"]
    assert rescore(run_dir, [])["test_ll"] == last["test_ll"]
    per_point = {
        k: torch.load(run_dir / v["per_point_file"]) for k, v in result["checkpoints"].items()
    }
    assert per_point["best"].mean().item() == pytest.approx(best["test_ll"], abs=1e-4)
    with pytest.raises(ConfigError, match="best weights exist only for runs with a validation"):
        load_model(run_dir.parent, "best", result["config"])


def test_eval_checkpoint_chooses_what_the_table_reads_without_training_again(
    result: dict, tmp_path: Path, data_dir: Path
) -> None:
    cfg = config(tmp_path, data_dir, 0, *VALIDATED, f"trainer.max_epochs={EPOCHS}")
    shutil.copytree(result["config"]["run_dir"], cfg.run_dir)
    stamp = (Path(cfg.run_dir) / LAST_CHECKPOINT).stat().st_mtime_ns
    cfg.eval.checkpoint = "best"
    chosen = run(cfg)
    assert (Path(cfg.run_dir) / LAST_CHECKPOINT).stat().st_mtime_ns == stamp  # not trained
    assert chosen["test_ll"] == result["checkpoints"]["best"]["test_ll"]
    assert chosen["checkpoint"] == chosen["config"]["eval"]["checkpoint"] == "best"
    stored = json.loads((Path(cfg.run_dir) / "result.json").read_text())
    assert stored["per_point_file"] == result["checkpoints"]["best"]["per_point_file"]
    (cell,) = aggregate(tmp_path, tmp_path / "table", figures=False)["cells"]
    assert cell["mean"] == chosen["test_ll"]
    cfg.eval.checkpoint = "last"
    assert run(cfg)["test_ll"] == result["test_ll"]


def test_the_best_epoch_recorded_is_the_one_whose_weights_best_ckpt_holds(
    result: dict, tmp_path: Path, data_dir: Path
) -> None:
    """A crash between writing ``best.ckpt`` and ``last.ckpt`` leaves the file one epoch ahead
    of the record in ``last.ckpt``; if the retrained epoch then validates lower (a resume that
    is not bitwise), the file's weights are scored, under the file's epoch."""
    cfg = config(tmp_path, data_dir, 0, *VALIDATED, f"trainer.max_epochs={EPOCHS}")
    shutil.copytree(result["config"]["run_dir"], cfg.run_dir)
    (Path(cfg.run_dir) / "result.json").unlink()
    path = Path(cfg.run_dir) / BEST_CHECKPOINT
    saved = torch.load(path, weights_only=False)
    saved["epoch"], saved["val_ll"] = saved["epoch"] + 1, saved["val_ll"] - 1.0
    torch.save(saved, path)
    best = run(cfg)["checkpoints"]["best"]
    assert (best["epoch"], best["val_ll"]) == (saved["epoch"], saved["val_ll"])
    assert best["test_ll"] == result["checkpoints"]["best"]["test_ll"]  # the same weights


def test_early_stopping_stops_each_run_at_its_patience_and_resumes_stopped(
    tmp_path: Path, data_dir: Path
) -> None:
    """With patience P the run ends P epochs after its best; a run interrupted before that
    resumes to the same numbers (its best is in its checkpoint), and one interrupted after its
    stop trains nothing more."""
    patience = "eval.early_stopping_patience=2"
    stopped = validated(tmp_path / "whole", data_dir, patience)
    best = stopped["checkpoints"]["best"]["epoch"]
    assert stopped["epochs"] == best + 2 < EPOCHS
    assert max(epoch_metrics(stopped)) == stopped["epochs"] - 1
    part = run(
        config(
            tmp_path / "part", data_dir, 0, *VALIDATED, patience, f"trainer.max_epochs={best + 1}"
        )
    )
    resumed_cfg = config(
        tmp_path / "resumed", data_dir, 0, *VALIDATED, patience, f"trainer.max_epochs={EPOCHS}"
    )
    shutil.copytree(
        Path(part["config"]["run_dir"]) / "checkpoints", Path(resumed_cfg.run_dir) / "checkpoints"
    )
    resumed = run(resumed_cfg)
    assert (
        resumed["checkpoints"] == stopped["checkpoints"] and resumed["epochs"] == stopped["epochs"]
    )
    (Path(resumed_cfg.run_dir) / "result.json").unlink()
    again = run(resumed_cfg)
    assert again["checkpoints"] == stopped["checkpoints"] and again["epochs"] == stopped["epochs"]
    group = [config(tmp_path / "g", data_dir, s, *VALIDATED, patience) for s in (0, 1)]
    with pytest.raises(ConfigError, match="early_stopping_patience stops each run at its own"):
        run_group(group, [None, None])


def test_each_replica_of_a_group_keeps_its_own_best_epoch_and_weights(
    tmp_path: Path, data_dir: Path
) -> None:
    """In a group of seeds 0 and 1, each run's best epoch is the argmax of its own ``val/ll``,
    and its ``best.ckpt`` holds the weights that scored that ``val/ll``: recomputed from the
    file on the validation points, the estimate is the one logged. (At lr 0.05 a group and its
    runs alone part ways after a few epochs, so they are not compared here.)"""
    cfgs = [
        config(tmp_path, data_dir, s, *VALIDATED, f"trainer.max_epochs={EPOCHS}") for s in (0, 1)
    ]
    results = run_group(cfgs, [None] * 2)
    for cfg, got in zip(cfgs, results, strict=True):
        best = got["checkpoints"]["best"]
        val_ll = {e + 1: v["val/ll"] for e, v in epoch_metrics(got).items()}
        assert best["epoch"] == max(val_ll, key=val_ll.get)
        datamodule = build_datamodule(cfg)
        datamodule.setup()
        again = estimate_log_likelihood(
            load_model(Path(cfg.run_dir), "best", cfg),
            datamodule.monitor_points(cfg.eval.val_ll_points, "val"),
            n_samples=cfg.eval.val_ll_samples,
            progress=False,
            **estimator_options(cfg),
        ).mean
        assert again == pytest.approx(best["val_ll"], rel=1e-6, abs=0)
    assert (
        results[0]["checkpoints"]["best"]["val_ll"] != results[1]["checkpoints"]["best"]["val_ll"]
    )
