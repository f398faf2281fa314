"""Runs that survive the cluster: a job signalled for preemption or its time limit requeues
itself and resumes from its checkpoint (hydra-submitit-launcher, locally)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.runs.config import compose_config
from benchmark.runs.experiment import PER_POINT_FILES, run
from tests.conftest import REPO_ROOT

RUN = [
    "experiment=smoke",
    "model=iwae",
    "network.hidden=[64]",
    "dataset.train_subset=2000",
    "dataset.test_subset=100",
    "eval.n_samples=10",
    "trainer.max_epochs=8",
    "eval.progress=false",
    "trainer.enable_progress_bar=false",
]


def submitit_tasks(folder: Path) -> list[int]:
    """PIDs of the submitit job processes working for ``folder``'s sweep."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in argv and any(str(folder).encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_signalled_job_requeues_itself_and_resumes(tmp_path: Path, data_dir: Path) -> None:
    """SIGUSR2, the signal submitit has SLURM send ``signal_delay_s`` before a time limit or on
    preemption, mid-training: the job checkpoints its submission, requeues (locally: the
    submitit controller restarts it; on SLURM, ``scontrol requeue``), resumes from its last
    epoch checkpoint with no command from the user, and ends bitwise where an uninterrupted
    run ends."""
    reference_cfg = compose_config(
        [*RUN, f"results_dir={tmp_path / 'ref'}", f"data_dir={data_dir}"]
    )
    reference = run(reference_cfg)

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            sys.executable,
            "run.py",
            "-m",
            *RUN,
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=30",
            f"results_dir={sweep}",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "IWAER_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(sweep.rglob("last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    (task,) = submitit_tasks(sweep)
    os.kill(task, signal.SIGUSR2)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]

    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    assert "Restored all states from the checkpoint" in logs
    (result_file,) = sweep.rglob("result.json")
    result = json.loads(result_file.read_text())
    assert result["epochs"] == reference["epochs"] == 8
    assert result["test_ll"] == reference["test_ll"]
    assert torch.equal(
        torch.load(result_file.parent / PER_POINT_FILES["last"]),
        torch.load(Path(reference_cfg.run_dir) / PER_POINT_FILES["last"]),
    )
    assert len(list(result_file.parent.glob("csv/version_*"))) == 2  # two launches, one run
