"""Finished runs as models: load one (:func:`load_model`), or score it again with other
evaluation settings (``python -m benchmark.runs.rescore RUN_DIR [override ...]``).

``RUN_DIR`` is a run directory (``.../<protocol id>/seed_<seed>``). The overrides may choose
the weights (``eval.checkpoint=best``: those of the best validation epoch; default: the
run's own choice), change the estimator (``eval.n_samples=5000`` as in Burda et al.,
``eval.seed``, ``eval.batch_size``, ``eval.memory_cap_gib``, ``eval.max_chunk_rows``) and the
test data (``dataset.test_binarization_seed``, ``dataset.test_subset``). The record goes to
``RUN_DIR/rescore/<id>.json`` with its per-point estimates, ``<id>`` naming the evaluation
settings in full (the weights chosen included); ``result.json`` is never touched. Runs are
scored on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.base import ImportanceWeightedModel
from benchmark.runs.builders import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    build_datamodule,
    build_model,
    estimator_options,
)
from benchmark.runs.experiment import RESULT_FILE, write_json_atomic
from benchmark.runs.provenance import device_name, git_state, package_versions
from benchmark.runs.validation import ConfigError, validate
from benchmark.training.checkpointing import load_weights
from datamodules import DataError

RESCORE_DIR = "rescore"
RESCORABLE = ("eval.", "dataset.test_binarization_seed", "dataset.test_subset")
CHECKPOINTS = {"last": LAST_CHECKPOINT, "best": BEST_CHECKPOINT}
# Keys added with the validation split, as they were before: runs made earlier had none.
ADDED_KEYS = {
    "dataset": {"val_size": None},
    "eval": {"checkpoint": "last", "early_stopping_patience": None},
}


def run_config(run_dir: Path) -> DictConfig:
    """The resolved config a run was made with, from its ``result.json``."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: give the directory of a finished run")
    return OmegaConf.merge(ADDED_KEYS, json.loads(path.read_text())["config"])


def load_model(
    run_dir: Path, checkpoint: str = "last", cfg: DictConfig | None = None
) -> ImportanceWeightedModel:
    """The trained model of the finished run in ``run_dir`` at its ``checkpoint``: "last"
    (where training ended) or "best" (its best ``val/ll`` epoch, with a validation split), in
    eval mode on the CPU; ``cfg``: the run's config, if at hand."""
    cfg = run_config(run_dir) if cfg is None else cfg
    path = Path(run_dir) / CHECKPOINTS[checkpoint]
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: best weights exist only for runs with a validation split "
            f"(dataset.val_size); load checkpoint='last'"
            if checkpoint == "best"
            else f"{path} does not exist: give the directory of a finished run made here (run "
            f"directories under results/ are committed without their checkpoints)"
        )
    return load_weights(build_model(cfg, build_datamodule(cfg).x_dim), path).eval()


def rescore(run_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """Score the finished run in ``run_dir`` with its config changed by ``overrides`` (keys
    under :data:`RESCORABLE`); write and return the record."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    for override in overrides:
        key = override.partition("=")[0]
        section, _, leaf = key.rpartition(".")
        if not key.startswith(RESCORABLE) or leaf not in (OmegaConf.select(cfg, section) or {}):
            raise ConfigError(
                f"cannot rescore with {override!r}: give eval.* keys of the run's config, "
                "dataset.test_binarization_seed or dataset.test_subset"
            )
        if key == "dataset.test_binarization_seed" and cfg.dataset.binarization != "dynamic":
            raise ConfigError(
                f"cannot rescore with {override!r}: this run's test data are "
                f"binarization={cfg.dataset.binarization}, fixed; the seed binarizes dynamic "
                "test data only"
            )
    cfg.merge_with_dotlist(list(overrides))
    if cfg.eval.checkpoint == "best" and cfg.dataset.val_size is None:
        raise ConfigError(
            f"{run_dir} was trained without a validation split, so it has no best epoch: "
            "rescore its last (eval.checkpoint=last)"
        )
    validate(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    started = time.perf_counter()
    estimate = estimate_log_likelihood(
        load_model(run_dir, cfg.eval.checkpoint, cfg),
        datamodule.test_data,
        n_samples=cfg.eval.n_samples,
        progress=cfg.eval.progress,
        **estimator_options(cfg),
    )
    scored = {key: OmegaConf.to_container(cfg[key]) for key in ("eval", "dataset")}
    record_id = hashlib.sha256(json.dumps(scored, sort_keys=True).encode()).hexdigest()[:8]
    out = run_dir / RESCORE_DIR
    out.mkdir(exist_ok=True)
    per_point_file = f"{record_id}_per_point.pt"
    torch.save(estimate.per_point, out / per_point_file)
    record = {
        "id": record_id,
        "run_dir": str(run_dir),
        "overrides": list(overrides),
        "test_ll": estimate.mean,
        "test_ll_se": estimate.standard_error,
        "n_test": estimate.n_points,
        "eval_samples": estimate.n_samples,
        **scored,
        "versions": package_versions(),
        "git": git_state(),
        "machine": {"device_name": device_name(torch.device("cpu"))},
        "wall_time_s": time.perf_counter() - started,
        "per_point_file": per_point_file,
    }
    write_json_atomic(out / f"{record_id}.json", record)
    return record


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m benchmark.runs.rescore RUN_DIR [override ...]", file=sys.stderr)
        return 2
    try:
        record = rescore(Path(argv[0]), argv[1:])
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"test log-likelihood {record['test_ll']:.3f} ± {record['test_ll_se']:.3f} nats "
        f"(S={record['eval_samples']}, n={record['n_test']}) -> "
        f"{Path(argv[0]) / RESCORE_DIR / record['id']}.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
