"""Hydra config helpers: the custom resolver and composing the config outside ``run.py``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from benchmark.provenance import protocol_id

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def register_resolvers() -> None:
    """``${protocol_id:}``: the eight-hex-digit id of the run's protocol (see provenance.py)."""
    if not OmegaConf.has_resolver("protocol_id"):
        OmegaConf.register_new_resolver("protocol_id", lambda *, _root_: protocol_id(_root_))


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``run.py`` would see for these command-line overrides (without Hydra's node)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
