"""Training through Lightning on real MNIST, run.py end to end, config composition."""

from __future__ import annotations

import csv
import json
import math
import shlex
from importlib import metadata
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.randomness.noise import draw_stacked_normal
from benchmark.runs.builders import (
    build_datamodule,
    build_group_datamodule,
    build_model,
    build_module,
    build_trainer,
)
from benchmark.runs.config import CONFIG_DIR, compose_config
from benchmark.runs.experiment import run
from benchmark.runs.metrics_log import read_epoch_metrics
from benchmark.runs.rescore import load_model
from benchmark.runs.validation import validate
from benchmark.training.module import TrainingDivergedError
from benchmark.training.stacked import StackedReplicas
from tests.conftest import run_py


def config_names(group: str) -> list[str]:
    """Every config of a group, so configs users add are tested too."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


MODELS = config_names("model")  # every registered model
QUIET = ["trainer.enable_progress_bar=false", "eval.progress=false", "~logger"]


def small_run_config(tmp_path: Path, data_dir: Path, *overrides: str):
    return compose_config(
        [
            f"results_dir={tmp_path}",
            f"data_dir={data_dir}",
            "experiment=smoke",
            *QUIET,
            *overrides,
        ]
    )


def group_of_one(cfg):
    """The data module, Lightning module and trainer of the run ``cfg`` (a group of one)."""
    datamodule = build_group_datamodule([cfg])
    module = build_module([cfg], datamodule.x_dim)
    return datamodule, module, build_trainer(cfg, [Path(cfg.run_dir)])


@pytest.mark.parametrize("model", MODELS)
def test_one_short_epoch_improves_the_bound(model: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = small_run_config(tmp_path, data_dir, f"model={model}", "dataset.train_subset=2000")
    datamodule, module, trainer = group_of_one(cfg)
    datamodule.setup()
    module.init_output_bias(datamodule.train_pixel_mean())
    x = datamodule.test_data[:300]
    net = module.replica(0)

    def bound() -> torch.Tensor:
        with torch.no_grad():
            return net.bound(x, net.k, torch.Generator().manual_seed(0))

    before = bound()
    trainer.fit(module, datamodule=datamodule)
    gain = bound() - before
    assert trainer.global_step == 20
    assert gain.mean() > 5 * gain.std() / math.sqrt(gain.numel())
    assert gain.mean() > 10.0  # nats: early training moves fast from the pixel-mean model
    (logged,) = module.last_train_bounds
    assert -600 < logged < -50


def test_logged_train_bound_is_the_epoch_mean_of_the_minibatch_bounds(
    tmp_path: Path, data_dir: Path
) -> None:
    cfg = small_run_config(
        tmp_path, data_dir, "model=iwaer", "dataset.train_subset=400", "trainer.max_epochs=2"
    )
    step_bounds: dict[int, list[float]] = {0: [], 1: []}

    class RecordStepBounds(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step_bounds[trainer.current_epoch].append(-outputs["loss"].item())

    datamodule, module, trainer = group_of_one(cfg)
    trainer.callbacks.append(RecordStepBounds())
    logger = CSVLogger(tmp_path, name="csv")
    module.replica_loggers = [[logger]]
    trainer.fit(module, datamodule=datamodule)
    logger.save()
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = [float(row["train/bound"]) for row in csv.DictReader(f) if row["train/bound"]]
    assert [len(b) for b in step_bounds.values()] == [4, 4]
    expected = [sum(b) / len(b) for b in step_bounds.values()]
    assert logged == pytest.approx(expected, rel=1e-6)
    assert expected[1] > expected[0]


def test_training_nan_stops_with_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    cfg = small_run_config(tmp_path, data_dir, "model=iwaer", "dataset.train_subset=200")
    datamodule, module, trainer = group_of_one(cfg)
    with torch.no_grad():
        module.replica(0).decoder.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"diverged.*Lower optim\.lr"):
        trainer.fit(module, datamodule=datamodule)


def test_same_config_and_seed_give_identical_results(tmp_path: Path, data_dir: Path) -> None:
    overrides = (
        "model=iwaer",
        "dataset.train_subset=300",
        "dataset.test_subset=50",
        "eval.n_samples=20",
    )
    results = []
    for name in ("a", "b", "c"):
        seed = "seed=1" if name == "c" else "seed=0"
        cfg = small_run_config(tmp_path / name, data_dir, *overrides, seed)
        results.append(run(cfg))
    assert results[0]["test_ll"] == results[1]["test_ll"]
    assert results[0]["train_bound_last_epoch"] == results[1]["train_bound_last_epoch"]
    assert results[0]["test_ll"] != results[2]["test_ll"]


def test_run_py_smoke_writes_a_complete_result(tmp_path: Path, data_dir: Path) -> None:
    overrides = [
        "experiment=smoke",
        "model=iwaerrec",
        f"results_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "eval.progress=false",
    ]
    proc = run_py(*overrides, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = tmp_path.rglob("result.json")
    result = json.loads(result_file.read_text())
    assert result_file.parent.relative_to(tmp_path).parts[:2] == ("mnist", "iwaerrec")
    assert result["dataset"] == "mnist" and result["model"] == "iwaerrec" and result["seed"] == 0
    assert -300 < result["test_ll"] < -80 and 0 < result["test_ll_se"] < 10
    assert result["n_train"] == 1000 and result["n_test"] == 500  # experiment=smoke's subsets
    assert result["eval_samples"] == 100 and result["epochs"] == 1
    assert shlex.split(result["command"]) == ["python", "run.py", *overrides]
    assert result["config"]["model"]["random_encoder"] is True
    protocol = result["protocol"]
    assert protocol["binarization"] == "dynamic" and protocol["nonlinearity"] == "tanh"
    assert protocol["weight_sampling"] == "local" and protocol["init_std"] == 0.05
    installed = {name: metadata.version(name) for name in ("torch", "pytorch-lightning")}
    assert {name: result["versions"][name] for name in installed} == installed
    assert len(result["git"]["commit"] or "") == 40
    assert result["wall_time_s"]["total"] > 0
    per_point = torch.load(result_file.parent / result["per_point_file"])
    assert per_point.shape == (500,)
    assert per_point.mean().item() == pytest.approx(result["test_ll"])
    assert (result_file.parent / "csv" / "version_0" / "metrics.csv").is_file()
    assert (result_file.parent / "checkpoints" / "last.ckpt").is_file()
    assert (result_file.parent / "samples.png").stat().st_size > 0


# (random encoder, random decoder, k) of the paper's models.
PAPER_MODELS = {
    "vae": (False, False, 1),
    "iwae": (False, False, 25),
    "iwaer": (True, True, 25),
    "iwaerrec": (True, False, 25),
}


@pytest.mark.parametrize("dataset", config_names("dataset"))
@pytest.mark.parametrize("model", config_names("model"))
@pytest.mark.parametrize("experiment", config_names("experiment"))
def test_every_config_composes_and_instantiates(model: str, dataset: str, experiment: str) -> None:
    cfg = compose_config([f"model={model}", f"dataset={dataset}", f"experiment={experiment}"])
    validate(cfg)
    net = build_module([cfg], 784).replica(0)
    datamodule = build_datamodule(cfg)
    assert cfg.model.name == model and datamodule.name == cfg.dataset.name
    assert f"{cfg.dataset.name}/{model}/" in cfg.run_dir
    if model in PAPER_MODELS:
        random = tuple(
            any(layer.random for layer in mlp.layers) for mlp in (net.encoder, net.decoder)
        )
        assert (*random, net.k) == PAPER_MODELS[model]


def test_protocol_id_separates_protocols_but_not_paths() -> None:
    base = compose_config(["model=iwaer"])
    assert base.run_dir == compose_config(["model=iwaer", "data_dir=/elsewhere"]).run_dir
    assert base.run_dir != compose_config(["model=iwaer", "dataset.binarization=static"]).run_dir
    assert base.run_dir != compose_config(["model=iwaer", "trainer.max_epochs=3"]).run_dir
    assert base.run_dir.endswith("seed_0")


@pytest.mark.slow
@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
@pytest.mark.parametrize("model", ["iwae", "iwaer"])
def test_compiled_training_bound_matches_eager(model: str, mode: bool | str) -> None:
    """compile=true and compile=reduce-overhead (CUDA graphs on GPUs; on this CPU the
    compiled pass): the same noise (drawn eagerly) and the same bound and gradients up to
    float rounding."""
    cfg = compose_config([f"model={model}", "network.hidden=[32]", "network.latent=4"])
    eager = build_module([cfg], 784)
    cfg.compile = mode
    compiled = build_module([cfg], 784)
    compiled.load_state_dict(eager.state_dict())
    x = torch.bernoulli(torch.full((10, 784), 0.2), generator=torch.Generator().manual_seed(0))
    bounds, grads = [], []
    for module in (eager, compiled):
        loss = module.training_step([x], 0)
        loss.backward()
        bounds.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
    torch.testing.assert_close(bounds[1], bounds[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


def test_training_optimizer_is_the_papers_adam_fused() -> None:
    """configure_optimizers: Adam with the configured hyperparameters, as one fused kernel,
    taking the same steps as torch's default Adam (up to float rounding)."""
    cfg = compose_config(
        ["model=iwaer", "network.hidden=[16]", "network.latent=3", "optim.lr=0.01"]
    )
    module = build_module([cfg], 784)
    optimizer = module.configure_optimizers()
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.Adam) and group["fused"]
    assert (group["lr"], group["betas"], group["eps"]) == (0.01, (0.9, 0.999), 1e-8)
    start = [p.detach().clone() for p in module.parameters()]
    reference_params = [p.clone().requires_grad_() for p in start]
    reference = torch.optim.Adam(reference_params, lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(module.parameters(), reference_params, strict=True):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for p, q, p0 in zip(module.parameters(), reference_params, start, strict=True):
        assert (p.detach() - p0).abs().mean() > 1e-3  # every tensor took the steps
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_every_compiled_run_of_a_one_process_sweep_is_compiled(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hydra's basic launcher runs a sweep in one process; torch.compile would fall back to
    eager once a function had been recompiled too often across the sweep's models."""
    sweep = [["model=iwae"], ["model=iwaer"], ["model=iwaerrec"]]
    sweep += [["model=iwaer", "model.weight_sampling=shared"], ["model=vae"]]
    for i, overrides in enumerate(sweep):
        cfg = small_run_config(
            tmp_path / str(i),
            data_dir,
            *overrides,
            "compile=true",
            "network.hidden=[16]",
            "network.latent=4",
            "dataset.train_subset=200",
            "dataset.test_subset=100",
        )
        run(cfg)
    hit = ("recompile_limit", "cache_size_limit")  # the limit's name before torch 2.7
    assert not [r for r in caplog.records if any(name in r.getMessage() for name in hit)]


def test_test_ll_monitor_is_the_estimate_on_the_monitor_points_and_leaves_training_alone(
    tmp_path: Path, data_dir: Path
) -> None:
    """test/ll_monitor at epochs 2 and 4 of 4; at the last it equals the S-sample estimate of
    the trained model on the first monitor points; with the monitor off, training is the same."""
    overrides = (
        "model=iwaer",
        "network.hidden=[32]",
        "dataset.train_subset=300",
        "dataset.test_subset=200",
        "trainer.max_epochs=4",
        "eval.n_samples=20",
        "eval.test_ll_points=150",
        "eval.test_ll_samples=30",
        "eval.seed=3",
    )
    metrics, results, run_dirs = {}, {}, {}
    for every in (2, 0):
        cfg = compose_config(
            [
                f"results_dir={tmp_path / str(every)}",
                f"data_dir={data_dir}",
                "experiment=smoke",
                *QUIET[:2],  # CSV logger on
                *overrides,
                f"eval.test_ll_every_n_epochs={every}",
            ]
        )
        run_dir = run_dirs[every] = Path(cfg.run_dir)
        results[every] = run(cfg)
        metrics[every] = read_epoch_metrics(run_dir)
    monitored = {e: v["test/ll_monitor"] for e, v in metrics[2].items() if "test/ll_monitor" in v}
    assert sorted(monitored) == [1, 3]  # 0-based epochs: after epochs 2 and 4
    assert not any("test/ll_monitor" in v for v in metrics[0].values())
    for e in range(4):
        assert metrics[2][e]["train/bound"] == metrics[0][e]["train/bound"]
    assert results[2]["test_ll"] == results[0]["test_ll"]

    cfg = small_run_config(tmp_path, data_dir, *overrides)
    datamodule = build_datamodule(cfg)
    estimate = estimate_log_likelihood(
        load_model(run_dirs[2]),
        datamodule.monitor_points(150),
        n_samples=30,
        seed=3,
        progress=False,
    )
    assert monitored[3] == pytest.approx(estimate.mean, abs=1e-4)
    assert monitored[3] > monitored[1]  # training improves it


@pytest.mark.slow
def test_compiled_stacked_replicas_match_eager() -> None:
    """compile=true on a group of three: the compiled vmap gives the eager bounds and
    gradients up to float rounding."""
    cfg = compose_config(["model=iwaer", "network.hidden=[32]", "network.latent=4"])
    nets = [build_model(cfg, 784) for _ in range(3)]
    generators = [torch.Generator().manual_seed(r) for r in range(3)]
    xs = torch.bernoulli(torch.full((3, 10, 784), 0.2), generator=generators[0])
    noise = draw_stacked_normal(nets[0].noise_shapes(10, 5), generators, xs)
    results = []
    for compile_mode in (False, True):
        stacked = StackedReplicas(nets, compile=compile_mode)
        bounds = stacked.bounds(xs, noise)
        bounds.mean(-1).sum().backward()  # the group's loss, up to its sign
        results.append((bounds.detach(), torch.cat([p.grad.flatten() for p in stacked.stacked])))
    (bounds, grads), (compiled_bounds, compiled_grads) = results
    torch.testing.assert_close(compiled_bounds, bounds, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(compiled_grads, grads, rtol=1e-4, atol=1e-4)
