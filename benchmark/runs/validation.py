"""Checks of a composed config before anything is trained or written."""

from __future__ import annotations

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from benchmark.models.gaussian_layers import WeightSampling
from benchmark.models.networks import ACTIVATIONS
from benchmark.runs.builders import build_model


class ConfigError(ValueError):
    """A config value is out of range; the message names the key and the allowed values."""


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = cfg_get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def _positive_number(cfg: DictConfig, key: str) -> None:
    value = cfg_get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")


def _choice(cfg: DictConfig, key: str, allowed: list[str]) -> None:
    value = cfg_get(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def cfg_get(cfg: DictConfig, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first out-of-range value of ``cfg``."""
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(
            f"seed must be a non-negative integer (or a range A-B with -m), got {seed!r}"
        )
    for key in ("model.k", "trainer.max_epochs", "optim.batch_size", "eval.n_samples"):
        _positive_int(cfg, key)
    _positive_int(cfg, "eval.batch_size")
    for key in ("optim.lr", "eval.memory_cap_gib"):
        _positive_number(cfg, key)
    # Keys of the model families in conf/model (a new model may have others).
    if "init_std" in cfg.model:
        _positive_number(cfg, "model.init_std")
    if "weight_sampling" in cfg.model:
        _choice(cfg, "model.weight_sampling", [m.value for m in WeightSampling])
    if "activation" in cfg.network:
        _choice(cfg, "network.activation", sorted(ACTIVATIONS))
    _choice(cfg, "dataset.binarization", ["dynamic", "static", "none"])
    if cfg.dataset.name == "omniglot":
        _choice(cfg, "dataset.source", ["chardata", "images"])
    for key in ("dataset.train_subset", "dataset.test_subset", "dataset.val_size"):
        if cfg_get(cfg, key) is not None:
            _positive_int(cfg, key)
    _choice(cfg, "eval.checkpoint", ["last", "best"])
    if cfg.dataset.get("val_size") is not None:
        for key in ("eval.val_every_n_epochs", "eval.val_ll_points", "eval.val_ll_samples"):
            _positive_int(cfg, key)
        if cfg.eval.early_stopping_patience is not None:
            _positive_int(cfg, "eval.early_stopping_patience")
        if cfg.eval.val_every_n_epochs > cfg.trainer.max_epochs:
            raise ConfigError(
                f"eval.val_every_n_epochs={cfg.eval.val_every_n_epochs} is more than "
                f"trainer.max_epochs={cfg.trainer.max_epochs}, so no epoch would be validated: "
                f"lower eval.val_every_n_epochs"
            )
    elif cfg.eval.checkpoint == "best" or cfg.eval.early_stopping_patience is not None:
        raise ConfigError(
            "eval.checkpoint=best and eval.early_stopping_patience choose by validation data: "
            "set dataset.val_size (for example dataset.val_size=10000)"
        )
    for key in ("eval.test_bound_every_n_epochs", "eval.test_ll_every_n_epochs"):
        every = cfg_get(cfg, key)
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ConfigError(f"{key} must be 0 (off) or a positive integer, got {every!r}")
    if cfg.eval.test_ll_every_n_epochs:
        _positive_int(cfg, "eval.test_ll_points")
        _positive_int(cfg, "eval.test_ll_samples")
    if not (isinstance(cfg.compile, bool) or cfg.compile == "reduce-overhead"):
        raise ConfigError(
            f"compile must be one of false, true, reduce-overhead; got {cfg.compile!r}"
        )
    _positive_int(cfg, "checkpoint.every_n_epochs")
    if cfg.eval.get("max_chunk_rows") is not None:
        _positive_int(cfg, "eval.max_chunk_rows")
    validate_model(cfg)


def validate_model(cfg: DictConfig) -> None:
    """Build the model on the meta device (no memory, no data): its own checks of its
    arguments and network become a :class:`ConfigError` naming the model config."""
    try:
        with torch.device("meta"):
            build_model(cfg, x_dim=1)
    except (InstantiationException, TypeError, ValueError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        raise ConfigError(f"model {cfg.model.name}: {cause}") from None
