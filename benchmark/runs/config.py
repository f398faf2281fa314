"""Hydra config helpers: the custom resolver, Hydra's errors in one line and composing the
config outside ``run.py``."""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.runs.provenance import protocol_id
from benchmark.runs.validation import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
FULL_ERROR = "HYDRA_FULL_ERROR"


def configure_hydra() -> None:
    """Register ``${protocol_id:}`` (the run's protocol id, see provenance.py) and silence
    Hydra's notice that our launcher configs (conf/hydra/launcher/) are checked against the
    plugins' schemas of the same name: that check is what we want."""
    warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema.*")
    if not OmegaConf.has_resolver("protocol_id"):
        OmegaConf.register_new_resolver("protocol_id", lambda *, _root_: protocol_id(_root_))


def hydra_error_line(err: CompactHydraException) -> str:
    """One line for Hydra's multi-line message: an unknown group option with the group's
    options, an unknown key with the nearest valid key and its siblings, else the message."""
    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.options:
        group, _, choice = err.missing_cfg_file.rpartition("/")
        return f"unknown {group}={choice}: choose one of {', '.join(err.options)}"
    if isinstance(cause, OmegaConfBaseException) and isinstance(cause.parent_node, DictConfig):
        keys = [str(key) for key in cause.parent_node]
        parent = cause.full_key.rpartition(".")[0]
        prefix = f"{parent}." if parent else ""
        nearest = difflib.get_close_matches(str(cause.key), keys, n=1, cutoff=0)
        return (
            f"unknown key {cause.full_key}: did you mean {prefix}{''.join(nearest)}? The keys of "
            f"{parent or 'the config'} are {', '.join(keys)}"
        )
    message = str(err).split("Config search path:")[0]
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


@contextmanager
def one_line_hydra_errors() -> Iterator[None]:
    """Raise Hydra's errors of a bad command line (unknown group option or key, ambiguous
    sweep, parse error) as a :class:`ConfigError` of one line, without Hydra's stack-trace
    hint; under ``HYDRA_FULL_ERROR=1`` they keep Hydra's report and full trace."""
    if os.environ.get(FULL_ERROR) == "1":
        yield
        return
    os.environ[FULL_ERROR] = "1"  # hydra.main raises its errors instead of printing them
    try:
        yield
    except CompactHydraException as err:
        raise ConfigError(hydra_error_line(err)) from None
    finally:
        del os.environ[FULL_ERROR]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``run.py`` would see for these command-line overrides (without Hydra's node);
    raises :class:`ConfigError` for an unknown group option or key."""
    configure_hydra()
    with (
        one_line_hydra_errors(),
        initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"),
    ):
        return compose(config_name="config", overrides=list(overrides))
