"""One run: build data and model from a composed config, train, evaluate, write result.json."""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from benchmark.evaluate import estimate_log_likelihood
from benchmark.lightning_module import IWAELitModule
from benchmark.provenance import (
    git_state,
    package_versions,
    protocol_choices,
    protocol_config,
    protocol_id,
)
from datamodules import BinaryImageDataModule

RESULT_FILE = "result.json"
PER_POINT_FILE = "test_ll_per_point.pt"


def build_datamodule(cfg: DictConfig) -> BinaryImageDataModule:
    """The datamodule named by ``cfg.dataset`` (its ``name`` key only labels results)."""
    kwargs = {key: value for key, value in cfg.dataset.items() if key != "name"}
    return instantiate(OmegaConf.create(kwargs), _convert_="all")


def build_module(cfg: DictConfig, x_dim: int) -> IWAELitModule:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    network = OmegaConf.to_container(cfg.network, resolve=True)
    return IWAELitModule(
        model=model,
        network=network,
        x_dim=x_dim,
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        seed=cfg.seed,
    )


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    loggers = [instantiate(conf) for conf in (cfg.get("logger") or {}).values()]
    return instantiate(cfg.trainer, logger=loggers or False)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def train_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train the configured model, estimate its test log-likelihood, write ``result.json``."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    pl.seed_everything(cfg.seed, workers=False, verbose=False)

    datamodule = build_datamodule(cfg)
    trainer = build_trainer(cfg)
    module = build_module(cfg, datamodule.x_dim)
    datamodule.trainer = trainer
    datamodule.prepare_data()
    datamodule.setup("fit")
    module.net.init_output_bias(datamodule.train_pixel_mean().cpu())
    trainer.fit(module, datamodule=datamodule)
    trained = time.perf_counter()

    estimate = estimate_log_likelihood(
        module.net.to(datamodule.test_data.device),
        datamodule.test_data,
        n_samples=cfg.eval.n_samples,
        batch_size=cfg.eval.batch_size,
        memory_cap_gib=cfg.eval.memory_cap_gib,
        seed=cfg.eval.seed,
        progress=cfg.eval.progress,
    )
    finished = time.perf_counter()
    torch.save(estimate.per_point, run_dir / PER_POINT_FILE)

    final_bound = trainer.callback_metrics.get("train/bound")
    result = {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "test_ll": estimate.mean,
        "test_ll_se": estimate.standard_error,
        "n_test": estimate.n_points,
        "eval_samples": estimate.n_samples,
        "epochs": trainer.current_epoch,
        "train_bound_last_epoch": None if final_bound is None else float(final_bound),
        "protocol_id": protocol_id(cfg),
        "protocol": protocol_choices(cfg),
        "protocol_config": protocol_config(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
        "git": git_state(),
        "machine": {
            "platform": platform.platform(),
            "device": str(datamodule.test_data.device),
            "torch_threads": torch.get_num_threads(),
        },
        "wall_time_s": {
            "train": trained - started,
            "eval": finished - trained,
            "total": finished - started,
        },
        "per_point_file": PER_POINT_FILE,
    }
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result
