"""What a result file records besides the numbers: protocol choices, versions, git commit."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

PACKAGES = (
    "torch",
    "torchvision",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "wandb",
    "numpy",
    "scipy",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT_ENV = "IWAER_GIT_COMMIT"  # the commit of a copied tree that has no .git

# Config sections that change what is measured; everything else (paths, loggers, progress
# bars, memory caps, compile) does not enter the protocol id. A model's class
# (``_target_``) does not either: ``model.name`` names it, as in the run directory.
PROTOCOL_KEYS = ("dataset", "model", "network", "optim")
PROTOCOL_DROP = {"dataset": ("data_dir", "_target_", "seed", "val_size"), "model": ("_target_",)}


def protocol_config(cfg: DictConfig) -> dict[str, Any]:
    """The protocol-defining part of a composed config, as plain data."""
    out: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        section = OmegaConf.to_container(cfg[key], resolve=True)
        for drop in PROTOCOL_DROP.get(key, ()):
            section.pop(drop, None)
        out[key] = section
    out["epochs"] = cfg.trainer.max_epochs
    out["eval"] = {"n_samples": cfg.eval.n_samples, "seed": cfg.eval.seed}
    if cfg.dataset.get("val_size") is not None:  # absent without one: ids from before stay
        out["validation"] = validation_protocol(cfg)
    return out


def validation_protocol(cfg: DictConfig) -> dict[str, Any]:
    """What chooses the best epoch (and, with early stopping, the last): the validation split
    and its schedule."""
    return {
        "size": cfg.dataset.val_size,
        "every_n_epochs": cfg.eval.val_every_n_epochs,
        "ll_points": cfg.eval.val_ll_points,
        "ll_samples": cfg.eval.val_ll_samples,
        "early_stopping_patience": cfg.eval.early_stopping_patience,
    }


def protocol_id(cfg: DictConfig) -> str:
    """Eight hex digits naming the protocol, stable across machines and key order."""
    text = json.dumps(protocol_config(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def protocol_choices(cfg: DictConfig) -> dict[str, Any]:
    """The open choices of docs/paper.md section 3 as used by this run."""
    random = cfg.model.get("random_encoder") or cfg.model.get("random_decoder")
    network = OmegaConf.to_container(cfg.network, resolve=True)
    return {
        "nonlinearity": network.get("activation"),
        "hidden": network.get("hidden"),
        "latent": network.get("latent"),
        "binarization": cfg.dataset.binarization,
        "test_binarization": f"fixed, seed {cfg.dataset.test_binarization_seed}"
        if cfg.dataset.binarization == "dynamic"
        else cfg.dataset.binarization,
        "omniglot_source": cfg.dataset.get("source"),
        "weight_init": "Glorot-uniform means, zero biases, decoder output bias = "
        "logit(mean training pixel)",
        "weight_sampling": cfg.model.get("weight_sampling") if random else None,
        "init_std": cfg.model.get("init_std") if random else None,
        "k": cfg.model.k,
        "eval_samples": cfg.eval.n_samples,
        "epochs": cfg.trainer.max_epochs,
        "train_subset": cfg.dataset.train_subset,
        "test_subset": cfg.dataset.test_subset,
        "validation": validation_protocol(cfg) if cfg.dataset.get("val_size") else None,
    }


def device_name(device: torch.device) -> str:
    """The model of the processor that ran a result (bitwise reruns need the same one): the
    GPU's name, or the CPU's model name from ``/proc/cpuinfo`` (the platform's where there is
    none)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state() -> dict[str, Any]:
    """Commit of the checkout running the code and whether it had uncommitted changes to
    tracked files outside ``results/`` (the committed results are outputs, rewritten by the
    runs and benchmarks that record this). Where git cannot tell (a copy of the tree without
    ``.git``, on a cluster node, say), the commit named by ``$IWAER_GIT_COMMIT``, if set,
    with ``dirty`` unknown."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None and os.environ.get(COMMIT_ENV):  # a copy of the tree without .git
        return {"commit": os.environ[COMMIT_ENV], "dirty": None, "commit_from": COMMIT_ENV}
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
