"""Hydra config helpers: the custom resolver and composing the config outside ``run.py``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from benchmark.runs.provenance import protocol_id

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def configure_hydra() -> None:
    """Register ``${protocol_id:}`` (the run's protocol id, see provenance.py) and silence
    Hydra's notice that our launcher configs (conf/hydra/launcher/) are checked against the
    plugins' schemas of the same name: that check is what we want."""
    warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema.*")
    if not OmegaConf.has_resolver("protocol_id"):
        OmegaConf.register_new_resolver("protocol_id", lambda *, _root_: protocol_id(_root_))


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``run.py`` would see for these command-line overrides (without Hydra's node)."""
    configure_hydra()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
