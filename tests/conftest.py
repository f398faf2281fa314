"""Shared fixtures: tiny models with exactly computable likelihoods, and a session data dir."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmark.models.iwae import ImportanceWeightedAutoencoder
from benchmark.runs.resources import available_cores, threads_per_job

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_NETWORK = {"hidden": [400], "latent": 20, "activation": "tanh"}  # conf/network/paper.yaml
# A fixed binary data set for the tiny models: 4 pixels, rows of different probability.
TINY_X = torch.tensor(
    [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64
)


def pytest_configure(config: pytest.Config) -> None:
    """Under ``pytest -n W`` (``make test``) each worker, and every run it launches, gets
    cores / W torch threads: W processes of torch's default thread count would oversubscribe
    the cores several times over."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    threads = threads_per_job(None, int(workers), available_cores()) if workers else None
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory per test session (per worker under ``pytest -n``), filled from the
    offline mirror on first use."""
    return tmp_path_factory.mktemp("data")


def tiny_model(
    random_encoder: bool = False,
    random_decoder: bool = False,
    sampling: str = "local",
    init_std: float = 0.3,
    hidden: tuple[int, ...] = (3,),
    seed: int = 0,
) -> ImportanceWeightedAutoencoder:
    """A float64 model 4 -> hidden -> 1-D latent, with an imperfect (random-init) encoder."""
    torch.manual_seed(seed)
    model = ImportanceWeightedAutoencoder(
        TINY_X.shape[1],
        {"hidden": list(hidden), "latent": 1, "activation": "tanh"},
        name="tiny",
        k=1,
        random_encoder=random_encoder,
        random_decoder=random_decoder,
        init_std=init_std,
        weight_sampling=sampling,
    ).double()
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.weight.mul_(2.0)
            layer.bias.normal_(0.0, 0.5)
    return model


@pytest.fixture
def make_tiny_model() -> Callable[..., ImportanceWeightedAutoencoder]:
    return tiny_model


def exact_log_marginal(model: ImportanceWeightedAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log ∫ p(x|z) N(z; 0, 1) dz for a deterministic decoder, 1-D z, by quadrature.

    Trapezoid rule on [-12, 12] with 40,001 nodes in float64: the integrand is smooth and the
    Gaussian tail beyond 12 is below 1e-30, so the error is far below any sampling error here.
    """
    z = torch.linspace(-12.0, 12.0, 40_001, dtype=torch.float64)
    with torch.no_grad():
        logits = model.decoder.sampled(z.view(-1, 1, 1), 1)  # [G, 1, D]: no weight noise
        log_px_z = (x * logits - torch.nn.functional.softplus(logits)).sum(-1)  # [G, N]
    log_prior = -0.5 * z.square() - 0.5 * math.log(2 * math.pi)
    integrand = torch.exp(log_px_z + log_prior[:, None])
    return torch.log(torch.trapezoid(integrand, z, dim=0))


@pytest.fixture
def exact_log_px() -> Callable[[ImportanceWeightedAutoencoder, torch.Tensor], torch.Tensor]:
    return exact_log_marginal


def run_py(
    *args: str,
    data_dir: Path,
    env: dict[str, str] | None = None,
    wandb_logged_out_home: Path | None = None,
    **kwargs,
):
    """``python run.py *args`` from the repository root, reading data from ``data_dir``; with
    ``wandb_logged_out_home``, as a user without W&B credentials (no ``WANDB_*`` variables,
    that empty home, no reachable W&B server)."""
    environment = {**os.environ, "IWAER_DATA_DIR": str(data_dir), **(env or {})}
    if wandb_logged_out_home is not None:
        wandb_logged_out_home.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in environment.items() if not k.startswith("WANDB_")}
        environment.update(
            {"HOME": str(wandb_logged_out_home), "WANDB_BASE_URL": "http://127.0.0.1:9"}
        )
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped where no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
