"""The experiment runner: seed ranges, presets, launchers, skip / resume / lock, W&B, errors."""

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
from filelock import FileLock
from hydra.utils import get_class

from benchmark.runs import provenance, reproduce
from benchmark.runs.builders import logger_configs
from benchmark.runs.cli import expand_seed_ranges
from benchmark.runs.config import compose_config
from benchmark.runs.experiment import run
from benchmark.runs.resources import device_of_job, threads_per_job
from benchmark.runs.validation import ConfigError, validate
from tests.conftest import REPO_ROOT, run_py

FAST = [
    "experiment=smoke",
    "dataset.train_subset=500",
    "dataset.test_subset=100",
    "eval.n_samples=10",
    "trainer.enable_progress_bar=false",
    "eval.progress=false",
]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "seed=0-4"], ["-m", "seed=range(0,5)"]),
        (
            ["--multirun", "model=iwaer,iwae", "seed=2-3"],
            ["--multirun", "model=iwaer,iwae", "seed=range(2,4)"],
        ),
        (["seed=3-3"], ["seed=3"]),
        (["-m", "seed=0,1,2"], ["-m", "seed=0,1,2"]),
        (["-m", "seed=range(0,5)"], ["-m", "seed=range(0,5)"]),
        (
            ["seed=7", "dataset=mnist,omniglot", "model.init_std=1e-3"],
            ["seed=7", "dataset=mnist,omniglot", "model.init_std=1e-3"],
        ),
    ],
)
def test_seed_ranges_expand_to_hydra_sweeps(argv: list[str], expected: list[str]) -> None:
    assert expand_seed_ranges(argv) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-m", "seed=4-2"], "empty or negative range"),
        (["-m", "seed=abc"], "is not a seed"),
        (["-m", "seed=1.5"], "is not a seed"),
        (["seed=0-4"], "add -m"),
        (["seed=0,1"], "add -m"),
    ],
)
def test_bad_seed_arguments_are_rejected(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expand_seed_ranges(argv)


def test_seed_range_expands_to_the_right_jobs_in_hydra() -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = expand_seed_ranges(["-m", "model=iwaer,iwae", "seed=0-4"])[1:]
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    assert len(jobs) == 10
    assert {tuple(job) for job in jobs} == {
        (f"model={m}", f"seed={s}") for m in ("iwaer", "iwae") for s in range(5)
    }


EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_slurm", "submitit_local"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("logger", ["csv", "wandb", "auto"])
def test_presets_launchers_and_loggers_compose(launcher: str, experiment: str, logger: str) -> None:
    from hydra import compose, initialize_config_dir

    from benchmark.runs.config import CONFIG_DIR, configure_hydra

    configure_hydra()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"hydra/launcher={launcher}",
                f"experiment={experiment}",
                f"logger={logger}",
                "model=iwaer",
            ],
            return_hydra_config=True,
        )
    assert get_class(cfg.hydra.launcher._target_) is not None
    assert "csv" in cfg.logger and (logger == "csv" or "wandb" in cfg.logger)
    validate(cfg)


def test_paper_preset_is_the_table1_protocol() -> None:
    cfg = compose_config(["experiment=paper", "model=iwaer"])
    assert cfg.trainer.max_epochs == 500 and cfg.optim.batch_size == 100
    assert cfg.optim.lr == 1e-3 and list(cfg.optim.betas) == [0.9, 0.999] and cfg.optim.eps == 1e-8
    assert cfg.model.k == 25 and cfg.eval.n_samples == 2000
    assert list(cfg.network.hidden) == [400] and cfg.network.latent == 20
    assert cfg.dataset.train_subset is None and cfg.dataset.test_subset is None
    assert cfg.dataset.val_size is None and cfg.eval.checkpoint == "last"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.k=0", "model.k must be a positive integer"),
        ("compile=fast", "compile must be one of false, true, reduce-overhead"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be a positive integer"),
        ("optim.batch_size=-5", "optim.batch_size must be a positive integer"),
        ("eval.n_samples=0", "eval.n_samples must be a positive integer"),
        ("model.init_std=0", "model.init_std must be a positive number"),
        ("model.init_std=-0.1", "model.init_std must be a positive number"),
        ("optim.lr=0", "optim.lr must be a positive number"),
        ("model.weight_sampling=sometimes", "model.weight_sampling must be one of local, shared"),
        ("network.activation=gelu", "network.activation must be one of relu, softplus, tanh"),
        ("dataset.binarization=maybe", "dataset.binarization must be one of dynamic, static, none"),
        ("seed=-1", "seed must be a non-negative integer"),
        ("dataset.val_size=0", "dataset.val_size must be a positive integer"),
        ("eval.checkpoint=first", "eval.checkpoint must be one of last, best"),
        ("eval.checkpoint=best", "choose by validation data: set dataset.val_size"),
        ("eval.early_stopping_patience=5", "choose by validation data: set dataset.val_size"),
    ],
)
def test_config_validation_names_key_and_allowed_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([override]))


def test_a_validation_schedule_that_never_validates_is_refused() -> None:
    cfg = compose_config(["experiment=smoke", "dataset.val_size=200", "eval.checkpoint=best"])
    cfg.eval.val_every_n_epochs = cfg.trainer.max_epochs + 1
    with pytest.raises(ConfigError, match="so no epoch would be validated"):
        validate(cfg)
    cfg.eval.val_every_n_epochs = cfg.trainer.max_epochs
    validate(cfg)


def test_bad_config_exits_nonzero_before_training_and_keeps_results(
    tmp_path: Path, data_dir: Path
) -> None:
    done = run_py(*FAST, f"results_dir={tmp_path}", data_dir=data_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = tmp_path.rglob("result.json")
    before = result.read_bytes()
    bad = run_py(*FAST, f"results_dir={tmp_path}", "model.k=0", data_dir=data_dir)
    assert bad.returncode != 0
    assert "error: model.k must be a positive integer, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert list(tmp_path.rglob("result.json")) == [result] and result.read_bytes() == before
    assert not list(tmp_path.rglob("last.ckpt"))[1:]  # no second run was started

    seeds = run_py("-m", *FAST, f"results_dir={tmp_path}", "seed=3-1", data_dir=data_dir)
    assert seeds.returncode != 0 and "error: seed=3-1 is an empty" in seeds.stderr


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "model=nosuch",
            "error: unknown model=nosuch: choose one of iwae, iwae_2l, iwaer, iwaer_2l, iwaerrec, "
            "iwaerrec_2l, vae",
        ),
        (
            "dataset=nosuch",
            "error: unknown dataset=nosuch: choose one of mnist, omniglot, omniglot_images",
        ),
        (
            "model.kk=3",
            "error: unknown key model.kk: did you mean model.k? The keys of model are _target_, "
            "name, k, random_encoder, random_decoder, init_std, weight_sampling",
        ),
    ],
)
def test_unknown_choice_or_key_is_one_line_naming_the_choices(
    override: str, line: str, data_dir: Path
) -> None:
    proc = run_py(override, data_dir=data_dir)
    assert proc.returncode != 0
    assert proc.stderr.strip() == line


def test_hydra_full_error_keeps_the_trace(data_dir: Path) -> None:
    proc = run_py("network.hiden=3", data_dir=data_dir, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigCompositionException" in proc.stderr
    assert "error: unknown key" not in proc.stderr


def test_reproduce_checks_every_cell_before_fetching_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = ["model=iwae,iwaer", "dataset=mnist,nosuch", "seed=0-4", "hydra/launcher=basic"]
    assert reproduce.main(bad) == 2
    assert capsys.readouterr() == (
        "",
        "error: unknown dataset=nosuch: choose one of mnist, omniglot, omniglot_images\n",
    )
    assert reproduce.main(["model=iwae,iwaer", "dataset=mnist", "network.hiden=3"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: unknown key network.hiden: did you mean network.hidden?"
    )
    assert reproduce.main(["model=iwaer", "dataset=mnist", "model.init_std=0"]) == 2
    assert "model.init_std must be a positive number" in capsys.readouterr().err


def test_multirun_writes_each_result_once_and_relaunch_skips(
    tmp_path: Path, data_dir: Path
) -> None:
    args = ["-m", *FAST, f"results_dir={tmp_path}", "model=iwae,iwaerrec", "seed=0-1"]
    first = run_py(*args, data_dir=data_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    results = sorted(tmp_path.rglob("result.json"))
    assert len(results) == 4
    found = {
        (json.loads(p.read_text())["model"], json.loads(p.read_text())["seed"]) for p in results
    }
    assert found == {(m, s) for m in ("iwae", "iwaerrec") for s in (0, 1)}
    stamps = [p.stat().st_mtime_ns for p in results]
    again = run_py(*args, data_dir=data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("skip mnist/") == 4
    assert "Trainer.fit" not in again.stdout + again.stderr
    assert [p.stat().st_mtime_ns for p in results] == stamps


def test_a_run_busy_in_another_process_is_skipped(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config([*FAST, f"results_dir={tmp_path}", f"data_dir={data_dir}"])
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    with FileLock(run_dir / ".lock"):
        proc = run_py(*FAST, f"results_dir={tmp_path}", data_dir=data_dir)
    assert proc.returncode == 0
    assert "another process is running it" in proc.stdout + proc.stderr
    assert not (run_dir / "result.json").exists()
    assert run(cfg) is not None  # free again: the run goes ahead


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_numbers(tmp_path: Path, data_dir: Path) -> None:
    """SIGKILL after the first checkpoint, re-launch: bitwise the uninterrupted run's result.
    (Slow: the default suite resumes checkpoints bitwise in tests/runs/test_replicas.py.)"""
    args = [
        *FAST,
        "model=iwaer",
        "network.hidden=[64]",
        "dataset.train_subset=2000",
        "trainer.max_epochs=8",
        "eval.test_bound_every_n_epochs=3",
        "eval.test_bound_points=100",
    ]
    reference = run_py(*args, f"results_dir={tmp_path / 'ref'}", data_dir=data_dir)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    environment = {**os.environ, "IWAER_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(
        [sys.executable, "run.py", *args, f"results_dir={killed_dir}"],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(killed_dir.rglob("last.ckpt")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (checkpoint,) = killed_dir.rglob("last.ckpt")
    last_epoch_done = torch.load(checkpoint, weights_only=False)["epoch"]  # 0-based
    assert last_epoch_done < 7, "the run must be killed in the middle of training"
    assert not list(killed_dir.rglob("result.json"))

    resumed = run_py(*args, f"results_dir={killed_dir}", data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    (ref_file,) = (tmp_path / "ref").rglob("result.json")
    (res_file,) = killed_dir.rglob("result.json")
    ref, res = json.loads(ref_file.read_text()), json.loads(res_file.read_text())
    assert res["test_ll"] == ref["test_ll"] and res["epochs"] == ref["epochs"] == 8
    assert res["train_bound_last_epoch"] == ref["train_bound_last_epoch"]
    assert torch.equal(
        torch.load(res_file.parent / "test_ll_per_point.pt"),
        torch.load(ref_file.parent / "test_ll_per_point.pt"),
    )


@pytest.mark.slow  # by default: tests/runs/test_replicas.py, four runs offline without a key
def test_wandb_logs_offline_without_api_key(tmp_path: Path, data_dir: Path) -> None:
    proc = run_py(
        *FAST,
        "logger=wandb",
        f"results_dir={tmp_path / 'r'}",
        data_dir=data_dir,
        wandb_logged_out_home=tmp_path / "home",
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "logging offline" in output and "wandb sync" in output
    (offline_run,) = (tmp_path / "r").rglob("offline-run-*")
    assert any(offline_run.rglob("*.wandb"))
    assert list((tmp_path / "r").rglob("result.json"))


def test_git_state_flags_changed_code_but_not_rewritten_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.md").write_text("old numbers\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    assert provenance.git_state()["dirty"] is False
    (tmp_path / "results" / "bench.md").write_text("new numbers\n")
    (tmp_path / "untracked.py").write_text("y = 2\n")
    state = provenance.git_state()
    assert state["dirty"] is False and len(state["commit"]) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state()["dirty"] is True


def test_a_tree_copied_without_git_records_the_commit_it_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    assert provenance.git_state() == {"commit": None, "dirty": None}
    monkeypatch.setenv(provenance.COMMIT_ENV, "a" * 40)
    assert provenance.git_state() == {
        "commit": "a" * 40,
        "dirty": None,
        "commit_from": provenance.COMMIT_ENV,
    }


def test_a_corrupt_checkpoint_stops_the_run_with_one_line_naming_it(
    tmp_path: Path, data_dir: Path
) -> None:
    """A truncated ``last.ckpt`` (as a full disk leaves it): one line naming the file and
    the fix, no traceback, and the file is left where it is."""
    cfg = compose_config([*FAST, f"results_dir={tmp_path}"])
    checkpoint = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(10_000)}}, checkpoint)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    proc = run_py(*FAST, f"results_dir={tmp_path}", data_dir=data_dir)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the checkpoint {checkpoint} is corrupt")
    assert "delete it to train this run from the start" in last
    assert checkpoint.read_bytes() == data[: len(data) // 2]


def test_a_diverged_run_reports_one_line(tmp_path: Path, data_dir: Path) -> None:
    """Weight stds of 1e30 overflow in the first step: one line, no traceback."""
    diverging = [*FAST, "model=iwaer", "model.init_std=1e30", f"results_dir={tmp_path}"]
    proc = run_py(*diverging, data_dir=data_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: seed 0: the training bound is nan in epoch 0: training diverged")
    assert "no checkpoint was written" in last


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_diverged_run(tmp_path: Path, data_dir: Path) -> None:
    """In a sweep the other runs still run, and the sweep exits non-zero naming the failed
    runs."""
    sweep = run_py(
        "-m",
        *FAST,
        "model=iwaer",
        "model.init_std=1e30,0.05",
        f"results_dir={tmp_path / 'sweep'}",
        data_dir=data_dir,
    )
    assert sweep.returncode == 1 and "Traceback" not in sweep.stderr
    assert sweep.stderr.count("training diverged") == 1
    assert "1 run(s) of the sweep failed" in sweep.stderr
    assert len(list((tmp_path / "sweep").rglob("result.json"))) == 1


@pytest.mark.parametrize("logged_in", [False, True], ids=["no-credentials", "api-key"])
def test_logger_auto_adds_wandb_only_when_logged_in(
    logged_in: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make reproduce-table1``'s default logger: W&B joins CSV with credentials (here a
    key in the environment; a ``wandb login`` would be ~/.netrc), CSV alone without; an
    explicit ``logger=`` still decides. Nothing is started, so no network is needed."""
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    if logged_in:
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    csv, wandb = (
        "pytorch_lightning.loggers.CSVLogger",
        "benchmark.runs.wandb_logging.make_wandb_logger",
    )
    targets = [c["_target_"] for c in logger_configs(compose_config(["logger=auto"]))]
    assert targets == [csv, wandb] if logged_in else [csv]
    assert [c["_target_"] for c in logger_configs(compose_config(["logger=csv"]))] == [csv]
    assert [c["_target_"] for c in logger_configs(compose_config(["logger=wandb"]))] == [csv, wandb]


def test_make_reproduce_table1_uses_logger_auto_unless_args_choose() -> None:
    def dry_run(*args: str) -> str:
        out = subprocess.run(
            ["make", "-n", "reproduce-table1", *args], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0 and out.stderr == ""  # no make warning (a recipe overridden)
        return out.stdout

    assert "logger=auto" in dry_run()
    chosen = dry_run("ARGS=logger=csv")
    assert "logger=csv" in chosen and "logger=auto" not in chosen


def test_threads_and_devices_are_divided_among_parallel_jobs() -> None:
    assert threads_per_job(None, n_jobs=2, cores=2) == 1
    assert threads_per_job(None, n_jobs=4, cores=16) == 4
    assert threads_per_job(None, n_jobs=8, cores=2) == 1  # at least one
    assert threads_per_job(3, n_jobs=2, cores=2) == 3  # the user's choice wins
    assert threads_per_job(None, n_jobs=1, cores=2) is None  # one job: torch's default
    assert [device_of_job(i, 4) for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert device_of_job(3, 1) is None and device_of_job(3, 0) is None


@pytest.mark.slow
def test_joblib_jobs_get_cores_divided_by_n_jobs_threads(tmp_path: Path, data_dir: Path) -> None:
    proc = run_py(
        "-m",
        *FAST,
        "seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"results_dir={tmp_path}",
        data_dir=data_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert len(results) == 2
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert {r["machine"]["torch_threads"] for r in results} == {expected}
