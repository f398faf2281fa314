"""A W&B logger that never needs the network: offline by itself when no API key is set.

Online mode needs ``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``. Without
either (or when starting online fails) runs are logged offline under ``<run_dir>/wandb`` and
the ``wandb sync`` command to upload them later is printed.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    """True when an API key is in the environment or in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_wanted() -> bool:
    """Whether ``logger=auto`` adds W&B: credentials are here, or ``WANDB_MODE`` asks for
    ``online`` or ``offline`` explicitly."""
    return has_wandb_credentials() or os.environ.get("WANDB_MODE") in ("online", "offline")


def wandb_mode() -> str:
    """``WANDB_MODE`` when set, else ``online`` with credentials and ``offline`` without."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit:
        return explicit
    return "online" if has_wandb_credentials() else "offline"


def make_wandb_logger(save_dir: str, **kwargs: Any) -> WandbLogger:
    """A started :class:`WandbLogger`; falls back to offline mode if starting online fails.
    Each logger is its own W&B run, also beside others in one process (replicas)."""
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("reinit", "create_new")
    mode = wandb_mode()
    if mode == "offline" and not os.environ.get("WANDB_MODE"):
        log.warning("W&B: no API key found (WANDB_API_KEY or `wandb login`), logging offline.")
    try:
        logger = WandbLogger(save_dir=save_dir, mode=mode, **kwargs)
        _ = logger.experiment  # start now, so a failure shows here and not mid-training
    except Exception as err:  # any failure to go online falls back to offline
        if mode == "offline":
            raise
        log.warning("W&B: starting online failed (%s); logging offline instead.", err)
        logger = WandbLogger(save_dir=save_dir, mode="offline", **kwargs)
        _ = logger.experiment
    return logger


def offline_sync_hint(logger: WandbLogger) -> str | None:
    """The command that uploads an offline run, or None for an online run."""
    run = logger.experiment
    if not getattr(run.settings, "_offline", False) and run.settings.mode != "offline":
        return None
    return f"wandb sync {Path(run.dir).parent}"
