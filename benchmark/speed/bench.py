"""Speed benchmark: ``python -m benchmark.speed [key=value ...]`` (``make bench``).

Measures, in one process so every ratio compares numbers of the same run:

1. the peak fp32 matmul rate of the device at the shapes the models use (forward and both
   backward products of every layer);
2. one training step (forward, backward, Adam) of each model against its minimal matmul FLOP
   count (:mod:`benchmark.speed.flops`) at that peak: the GEMM-bound time; and the noise floor, its
   standard normals at the rate :mod:`benchmark.randomness.noise` draws them alone;
3. one Lightning epoch (data, binarization, logging) against as many bare steps;
4. the S-sample test log-likelihood: importance samples per second, GEMM-bound ratio, peak
   memory against the configured cap;
5. straightforward references (:mod:`benchmark.speed.reference`);
6. bf16 autocast and ``torch.compile``: speed-up of the step and how much the bound
   changes; the evaluation under ``torch.compile``;
7. replica groups of R seeds against R runs, eagerly and (by default on GPUs) with CUDA
   graphs, a group's Lightning epoch, and the paper Table 1 projected
   (:mod:`benchmark.speed.replicas`, :mod:`benchmark.speed.epochs`);

and profiles each measured path to name the ops its time goes to. Writes ``bench.json`` and
``bench.md`` (:mod:`benchmark.speed.report`) to ``out`` (``bench_cuda.*`` on GPUs); stopped
by SIGTERM (``timeout``, a job's time limit), it writes the measurements it finished to
``bench[_cuda].partial.json``. Options are the fields of :class:`BenchConfig`, e.g.
``python -m benchmark.speed device=cuda compile=false``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark import kernels
from benchmark.evaluation.estimator import estimate_log_likelihood
from benchmark.models.base import ImportanceWeightedModel
from benchmark.randomness.noise import standard_normal
from benchmark.runs.builders import build_datamodule, build_module
from benchmark.runs.config import compose_config
from benchmark.runs.provenance import git_state, package_versions
from benchmark.speed.epochs import measure_group_epoch, measure_lightning_epoch
from benchmark.speed.flops import forward_flops, layer_matmuls, train_step_flops
from benchmark.speed.reference import LoopIWAER, PlainIWAE
from benchmark.speed.replicas import TABLE1_SEEDS, measure_replicas, project_table1
from benchmark.speed.report import TARGETS, render_markdown
from benchmark.speed.steps import BoundFn, run_bound, train_step
from benchmark.speed.timing import (
    PeakMemory,
    profile_ops,
    seconds_per_call,
    seconds_per_call_each,
    synchronize,
)

# Model variants measured, as config overrides on top of the benchmark's sizes.
VARIANTS: dict[str, list[str]] = {
    "iwae": ["model=iwae"],
    "iwaer (local)": ["model=iwaer", "model.weight_sampling=local"],
    "iwaer (shared)": ["model=iwaer", "model.weight_sampling=shared"],
    "iwaerrec": ["model=iwaerrec"],
}
PRECISION_VARIANTS = ("iwae", "iwaer (local)", "iwaerrec")  # bf16 and torch.compile
REFERENCE_PLAIN = "plain PyTorch IWAE"
REFERENCE_LOOP = "IWAER looping over k samples"
# Training / test set sizes of the paper's data (PAPER.md section 2), for the projection.
PAPER_DATASETS = {"mnist": (60_000, 10_000), "omniglot": (24_345, 8_070)}


@dataclass
class BenchConfig:
    """Options of ``python -m benchmark.speed`` (``key=value`` on the command line)."""

    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    out: str = "results"  # bench.json and bench.md go here
    batch: int = 100
    k: int = 25
    hidden: list[int] = field(default_factory=lambda: [400])
    latent: int = 20
    steps: int = 10  # timed training steps per repeat
    warmup: int = 3
    repeats: int = 3  # the best of these repeats is reported
    epoch_model: str = "iwae"  # model of the Lightning epoch
    epoch_batches: int | None = None  # None: a full epoch
    group_epoch_batches: int = 120  # steps per epoch of a replica group (at most epoch_batches)
    eval_points: int = 200  # test points of the evaluation measurement
    eval_samples: int = 2000
    memory_cap_gib: float = 2.0
    bf16: bool = True
    compile: bool = True
    profile_calls: int = 3
    threads: int | None = None  # torch CPU threads (None: torch's default)
    replicas: list[int] | None = None  # group sizes R (None: 1, 5, 30 on GPUs; 1, 5 on CPUs)
    replica_graphs: bool | None = None  # groups also under compile=reduce-overhead (None: GPUs)
    data_dir: str | None = None  # None: run.py's default (data/ or $IWAER_DATA_DIR)


def parse_args(argv: Sequence[str]) -> BenchConfig:
    """``key=value`` arguments onto :class:`BenchConfig`; unknown keys or bad values exit."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(BenchConfig), OmegaConf.from_cli(list(argv)))
    except OmegaConfBaseException as err:
        options = ", ".join(BenchConfig.__dataclass_fields__)
        raise SystemExit(f"error: {err.msg}. Options: {options}") from None
    config = OmegaConf.to_object(merged)
    for key in (
        "batch",
        "k",
        "latent",
        "steps",
        "repeats",
        "eval_points",
        "eval_samples",
        "group_epoch_batches",
    ):
        if getattr(config, key) < 1:
            raise SystemExit(f"error: {key} must be a positive integer, got {getattr(config, key)}")
    if config.epoch_model not in ("vae", "iwae", "iwaer", "iwaerrec"):
        raise SystemExit(
            f"error: epoch_model must be vae, iwae, iwaer or iwaerrec, got {config.epoch_model}"
        )
    return config


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: device=cuda but no CUDA device is available; use device=cpu")
    return device


def base_overrides(bc: BenchConfig) -> list[str]:
    """The benchmark's sizes (and data directory) as ``run.py`` config overrides."""
    hidden = ",".join(str(h) for h in bc.hidden)
    data = [] if bc.data_dir is None else [f"data_dir={bc.data_dir}"]
    return [
        *data,
        f"optim.batch_size={bc.batch}",
        f"model.k={bc.k}",
        f"network.hidden=[{hidden}]",
        f"network.latent={bc.latent}",
    ]


def build_model(bc: BenchConfig, variant: str, device: torch.device) -> ImportanceWeightedModel:
    cfg = compose_config([*base_overrides(bc), *VARIANTS[variant]])
    return build_module(cfg, x_dim=784).net.to(device)


def mnist_test_images(bc: BenchConfig, device: torch.device) -> torch.Tensor:
    """The binarized MNIST test set (real data: the bound's value matters for bf16)."""
    datamodule = build_datamodule(compose_config([*base_overrides(bc), "dataset=mnist"]))
    datamodule.setup()
    return datamodule.test_data.to(device)


def matmul_shapes(
    models: Sequence[ImportanceWeightedModel], batch: int, k: int
) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of every product of a training step: forward, input and weight gradients."""
    shapes = set()
    for model in models:
        for mm in layer_matmuls(model, batch, k):
            shapes.add((mm.rows, mm.n_in, mm.n_out))
            shapes.add((mm.n_in, mm.rows, mm.n_out))
            if not mm.input_is_data:
                shapes.add((mm.rows, mm.n_out, mm.n_in))
    return sorted(shapes)


def peak_matmul(
    shapes: Sequence[tuple[int, int, int]], bc: BenchConfig, device: torch.device
) -> dict[str, Any]:
    """fp32 GFLOP/s of ``torch.mm`` into a preallocated output, per shape, and their maximum."""
    rows = []
    for m, inner, n in shapes:
        a = torch.randn(m, inner, device=device)
        b = torch.randn(inner, n, device=device)
        c = torch.empty(m, n, device=device)
        seconds = seconds_per_call(
            lambda a=a, b=b, c=c: torch.mm(a, b, out=c),
            device,
            calls=max(bc.steps, 5),
            warmup=2,
            repeats=bc.repeats,
        )
        rows.append({"m": m, "k": inner, "n": n, "gflops": 2 * m * inner * n / seconds / 1e9})
    return {"dtype": "float32", "shapes": rows, "peak_gflops": max(r["gflops"] for r in rows)}


def normals_drawn(model: ImportanceWeightedModel, batch: int, k: int) -> int:
    """Standard normals of one pass of k samples x batch points (latent and weight noise)."""
    return sum(math.prod(shape) for shape in model.noise_shapes(batch, k))


def measure_noise_rate(n: int, bc: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Time per standard normal of :func:`benchmark.randomness.noise.standard_normal` drawing
    ``n`` at once, alone: what any implementation that draws the same normals this way pays."""
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = seconds_per_call(
        lambda: standard_normal(n, generator, device, torch.float32),
        device,
        calls=max(bc.steps, 5),
        warmup=2,
        repeats=bc.repeats,
    )
    return {"normals": n, "ns_per_normal": seconds / n * 1e9}


def time_step(step: Callable[[], None], bc: BenchConfig, device: torch.device) -> float:
    return seconds_per_call(step, device, calls=bc.steps, warmup=bc.warmup, repeats=bc.repeats)


def reference_steps(x: torch.Tensor, bc: BenchConfig) -> dict[str, Callable[[], None]]:
    """Training steps of the straightforward references (:mod:`benchmark.speed.reference`), with
    torch's default Adam, as written the obvious way."""
    references = {
        REFERENCE_PLAIN: PlainIWAE(784, bc.hidden, bc.latent).to(x.device),
        REFERENCE_LOOP: LoopIWAER(784, bc.hidden, bc.latent).to(x.device),
    }
    return {
        name: train_step(
            lambda x, k, g, m=reference: m.bound(x, k),
            list(reference.parameters()),
            x,
            bc.k,
            make_optimizer=torch.optim.Adam,
        )
        for name, reference in references.items()
    }


def measure_steps(
    models: dict[str, ImportanceWeightedModel], x: torch.Tensor, bc: BenchConfig, peak: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training step of every model and of the references, timed together (their repeats
    interleaved, :func:`seconds_per_call_each`): rows of the steps and of the references."""
    steps = {
        variant: train_step(model.bound, list(model.parameters()), x, bc.k)
        for variant, model in models.items()
    }
    plain = {
        variant: plain_path(train_step(model.bound, list(model.parameters()), x, bc.k))
        for variant, model in models.items()
    }
    references = reference_steps(x, bc)
    seconds = seconds_per_call_each(
        {**steps, **{plain_label(v): step for v, step in plain.items()}, **references},
        x.device,
        calls=bc.steps,
        warmup=bc.warmup,
        repeats=bc.repeats,
    )
    rows = []
    for variant, model in models.items():
        flops = train_step_flops(model, bc.batch, bc.k)
        gemm_bound = flops / (peak * 1e9)
        target = TARGETS["step_iwae"] if variant == "iwae" else TARGETS["step_random"]
        rows.append(
            {
                "model": variant,
                "ms": seconds[variant] * 1e3,
                "gflop": flops / 1e9,
                "gflops": flops / seconds[variant] / 1e9,
                "gemm_bound_ms": gemm_bound * 1e3,
                "ratio": seconds[variant] / gemm_bound,
                "target": target,
                "plain_ms": seconds[plain_label(variant)] * 1e3,
                "normals": normals_drawn(model, bc.batch, bc.k),
                "profile": {
                    **profile_ops(
                        steps[variant], x.device, bc.profile_calls, ranges=kernels.PROFILER_LABELS
                    ),
                    "gemm_bound_ms": gemm_bound * 1e3,
                },
            }
        )
    return rows, reference_rows({name: seconds[name] for name in references}, rows)


def plain_label(variant: str) -> str:
    return f"{variant} [kernels=reference]"


def plain_path(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` on the plain PyTorch path (``kernels=reference``): the same model and math
    without the CPU fast paths, to show which path is faster on this device."""

    def run() -> None:
        with kernels.using("reference"):
            step()

    return run


def reference_rows(seconds: dict[str, float], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain IWAE against ours (target: ours no slower) and the loop-over-samples IWAER against
    both our sampling modes (target: >= 3x faster)."""
    ms = {row["model"]: row["ms"] for row in steps}
    out = []
    for name, ours, target in (
        (REFERENCE_PLAIN, ["iwae"], TARGETS["vs_plain_iwae"]),
        (REFERENCE_LOOP, ["iwaer (local)", "iwaer (shared)"], TARGETS["vs_loop_iwaer"]),
    ):
        for variant in ours:
            out.append(
                {
                    "reference": name,
                    "model": variant,
                    "reference_ms": seconds[name] * 1e3,
                    "ms": ms[variant],
                    "speedup": seconds[name] * 1e3 / ms[variant],
                    "target_speedup": target,
                }
            )
    return out


def measure_eval(
    models: dict[str, ImportanceWeightedModel],
    data: torch.Tensor,
    bc: BenchConfig,
    peak: float,
    compile: bool = False,
) -> list[dict[str, Any]]:
    """The S-sample evaluation of every model (``compile``: as with ``compile=true``), in
    ``run.py``'s evaluation batches: its peak memory, and its time as the best of
    ``bc.repeats`` evaluations, as for the training steps."""
    rows = []
    device = data.device
    eval_batch = compose_config(base_overrides(bc)).eval.batch_size

    def evaluate(model: ImportanceWeightedModel, points: torch.Tensor) -> None:
        estimate_log_likelihood(
            model,
            points,
            n_samples=bc.eval_samples,
            batch_size=eval_batch,
            memory_cap_gib=bc.memory_cap_gib,
            progress=False,
            compile=compile,
        )

    one_batch = data[:eval_batch]
    for variant in PRECISION_VARIANTS:
        model = models[variant]
        if compile:
            kernels.fresh_compile_caches()
        evaluate(model, one_batch)  # warm-up (and compilation)
        with PeakMemory(device) as memory:
            evaluate(model, data)
        seconds = seconds_per_call(
            lambda m=model: evaluate(m, data), device, calls=1, warmup=0, repeats=bc.repeats
        )
        flops = forward_flops(model, data.shape[0], bc.eval_samples)
        gemm_bound = flops / (peak * 1e9)
        cap = int(bc.memory_cap_gib * (1 << 30))
        rows.append(
            {
                "model": variant,
                "compiled": compile,
                "points": data.shape[0],
                "samples": bc.eval_samples,
                "seconds": seconds,
                "samples_per_s": data.shape[0] * bc.eval_samples / seconds,
                "gemm_bound_s": gemm_bound,
                "ratio": seconds / gemm_bound,
                "target": TARGETS["eval"],
                "normals": sum(
                    normals_drawn(model, batch.shape[0], bc.eval_samples)
                    for batch in data.split(eval_batch)
                ),
                "peak_memory_bytes": memory.peak_bytes,
                "memory_cap_bytes": cap,
                "profile": {
                    **profile_ops(
                        lambda m=model: evaluate(m, one_batch),
                        device,
                        1,
                        ranges=kernels.PROFILER_LABELS,
                    ),
                    "gemm_bound_ms": gemm_bound * 1e3 * one_batch.shape[0] / data.shape[0],
                },
            }
        )
    return rows


def bound_difference(
    model: ImportanceWeightedModel, x: torch.Tensor, k: int, bound: BoundFn
) -> float:
    """Mean over the batch of |bound(x) - fp32 eager bound(x)| with the same noise, in nats."""
    generator = torch.Generator(device=x.device)
    with torch.no_grad():
        reference = model.bound(x, k, generator.manual_seed(0))
        other = bound(x, k, generator.manual_seed(0)).float()
    return (other - reference).abs().mean().item()


def bf16_autocast(model: ImportanceWeightedModel) -> BoundFn:
    """The model's bound with matmuls in bf16 (``torch.autocast``)."""

    def bound(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return model.bound(x, k, generator)

    return bound


def compiled(model: ImportanceWeightedModel) -> BoundFn:
    """The model's bound with the random-free part under ``torch.compile`` (as ``compile=true``),
    from empty compile caches (:func:`~benchmark.kernels.fresh_compile_caches`)."""
    kernels.fresh_compile_caches()
    return run_bound(model, True)


def measure_alternative(
    models: dict[str, ImportanceWeightedModel],
    steps: list[dict[str, Any]],
    x: torch.Tensor,
    bc: BenchConfig,
    make_bound: Callable[[ImportanceWeightedModel], BoundFn],
) -> list[dict[str, Any]]:
    """Another way to compute each model's bound (bf16, compiled): the first step's time
    (includes compilation), the step time, the speed-up over the fp32 eager step, and the mean
    change of the bound for the same noise."""
    ms = {row["model"]: row["ms"] for row in steps}
    rows = []
    for variant in PRECISION_VARIANTS:
        model = models[variant]
        bound = make_bound(model)
        step = train_step(bound, list(model.parameters()), x, bc.k)
        start = time.perf_counter()
        step()
        synchronize(x.device)
        first_step_s = time.perf_counter() - start
        seconds = time_step(step, bc, x.device)
        rows.append(
            {
                "model": variant,
                "first_step_s": first_step_s,
                "ms": seconds * 1e3,
                "speedup": ms[variant] / (seconds * 1e3),
                "bound_abs_diff_nats": bound_difference(model, x, bc.k, bound),
            }
        )
    return rows


def project_paper_runs(
    steps: list[dict[str, Any]],
    epoch: dict[str, Any],
    evals: list[dict[str, Any]],
    compiled_steps: list[dict[str, Any]],
    compiled_evals: list[dict[str, Any]],
) -> dict[str, Any]:
    """Wall time of one ``experiment=paper`` run per model and data set from the measured step
    time, the Lightning overhead ratio and the evaluation rate (the test bound every 10 epochs
    on 1,000 points adds well under 1%); also with ``compile=true`` where it was measured."""
    cfg = compose_config(["experiment=paper"])
    epochs, samples, batch = cfg.trainer.max_epochs, cfg.eval.n_samples, cfg.optim.batch_size

    def hours(
        step_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], n_train: int, n_test: int
    ) -> dict[str, tuple[float, float]]:
        ms = {row["model"]: row["ms"] for row in step_rows}
        rate = {row["model"]: row["samples_per_s"] for row in eval_rows}
        return {
            variant: (
                epochs * (n_train // batch) * ms[variant] / 1e3 * epoch["ratio"] / 3600,
                n_test * samples / rate[variant] / 3600,
            )
            for variant in ms.keys() & rate.keys()
        }

    rows = []
    for dataset, (n_train, n_test) in PAPER_DATASETS.items():
        eager = hours(steps, evals, n_train, n_test)
        compiled = hours(compiled_steps, compiled_evals, n_train, n_test)
        for variant in PRECISION_VARIANTS:
            train_h, eval_h = eager[variant]
            row = {
                "dataset": dataset,
                "model": variant,
                "train_h": train_h,
                "eval_h": eval_h,
                "total_h": train_h + eval_h,
            }
            if variant in compiled:
                row["total_h_compiled"] = sum(compiled[variant])
            rows.append(row)
    return {"epochs": epochs, "eval_samples": samples, "runs": rows}


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return info


def progress(message: str) -> None:
    """One line on stderr per measurement, so a run of several minutes shows where it is."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_benchmark(bc: BenchConfig, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every measurement of the module docstring into ``result`` (a new dict if None), each
    as it finishes; the returned dict is ``bench.json``."""
    result = {} if result is None else result
    if bc.threads:
        torch.set_num_threads(bc.threads)
    device = resolve_device(bc.device)
    result.update(
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        config=OmegaConf.to_container(OmegaConf.structured(bc)),
        machine=machine(device),
        versions=package_versions(),
        git=git_state(),
    )
    torch.manual_seed(0)
    models = {variant: build_model(bc, variant, device) for variant in VARIANTS}
    images = mnist_test_images(bc, device)
    x = images[: bc.batch]
    eval_data = images[: bc.eval_points]
    shapes = matmul_shapes(list(models.values()), bc.batch, bc.k)
    progress(f"peak matmul rate on {device} over {len(shapes)} product shapes")
    result["matmul"] = peak_matmul(shapes, bc, device)
    peak = result["matmul"]["peak_gflops"]
    iwaer = models["iwaer (local)"]
    result["noise"] = measure_noise_rate(normals_drawn(iwaer, bc.batch, bc.k), bc, device)
    progress(f"training steps: {', '.join(VARIANTS)} and the straightforward references")
    steps, references = measure_steps(models, x, bc, peak)
    result.update(train_steps=steps, references=references)
    progress(f"{bc.repeats} Lightning epochs of {bc.epoch_model}")
    result["lightning_epoch"] = {
        **measure_lightning_epoch(epoch_config(bc, bc.epoch_batches), device, bc.repeats),
        "target": TARGETS["epoch"],
    }
    progress(f"evaluation, S = {bc.eval_samples}, {eval_data.shape[0]} points")
    result["eval"] = measure_eval(models, eval_data, bc, peak)
    gpu = device.type == "cuda"
    counts = bc.replicas or ([1, TABLE1_SEEDS, 30] if gpu else [1, TABLE1_SEEDS])
    modes: list[kernels.CompileMode] = [False]
    if bc.replica_graphs or (bc.replica_graphs is None and gpu):
        modes.append("reduce-overhead")
    progress(f"replica groups of {counts} against runs alone, compile={modes}")
    measure_replicas(  # into the result as each model variant finishes
        {v: lambda v=v: build_model(bc, v, device) for v in PRECISION_VARIANTS},
        x,
        bc.k,
        counts,
        modes,
        calls=bc.steps,
        warmup=bc.warmup,
        repeats=bc.repeats,
        rows=result.setdefault("replicas", []),
    )
    group_batches = min(bc.group_epoch_batches, bc.epoch_batches or bc.group_epoch_batches)
    progress(f"Lightning epochs of {bc.epoch_model} as groups of {TABLE1_SEEDS} replicas")
    for mode in modes:
        result.setdefault("group_epochs", []).append(
            measure_group_epoch(
                [*epoch_config(bc, group_batches), f"compile={kernels.compile_name(mode)}"],
                device,
                bc.repeats,
                TABLE1_SEEDS,
            )
        )
    result["table1"] = project_table1(
        result["replicas"],
        result["lightning_epoch"],
        result["group_epochs"],
        result["eval"],
        PAPER_DATASETS,
    )
    # The alternatives last: a benchmark stopped by its time limit keeps the replica groups.
    result.update(bf16=[], compile=[], eval_compiled=[])  # filled only if measured
    if bc.bf16:
        progress("training steps under bf16 autocast")
        result["bf16"] = measure_alternative(models, steps, x, bc, bf16_autocast)
    if bc.compile:
        progress("training steps and evaluation under torch.compile")
        result["compile"] = measure_alternative(models, steps, x, bc, compiled)
        result["eval_compiled"] = measure_eval(models, eval_data, bc, peak, compile=True)
    result["projection"] = project_paper_runs(
        steps, result["lightning_epoch"], result["eval"], result["compile"], result["eval_compiled"]
    )
    return result


def epoch_config(bc: BenchConfig, batches: int | None) -> list[str]:
    """The config of the Lightning epochs: the benchmark's sizes, ``epoch_model``, and
    ``batches`` steps per epoch (None: a full epoch)."""
    limit = [] if batches is None else [f"+trainer.limit_train_batches={batches}"]
    return [*base_overrides(bc), f"model={bc.epoch_model}", *limit]


def output_stem(device: torch.device) -> str:
    """``bench`` on CPUs, ``bench_cuda`` on GPUs: both reports can be committed side by side."""
    return "bench_cuda" if device.type == "cuda" else "bench"


class BenchmarkStopped(Exception):
    """SIGTERM (``timeout``, a scheduler's time limit) arrived during the measurements."""


class SaveOnSigterm:
    """While active, SIGTERM writes the measurements finished so far (``result``) to
    ``path`` at once and raises :class:`BenchmarkStopped`, and again every second (with the
    file rewritten) until it propagates: code it lands in may wrap it (dynamo mid-compile)
    or swallow it (an eager fallback)."""

    def __init__(self, result: dict[str, Any], path: Path) -> None:
        self.result, self.path, self.stopped = result, path, False

    def __enter__(self) -> SaveOnSigterm:
        self.previous_term = signal.signal(signal.SIGTERM, self._stop)
        self.previous_alarm = signal.signal(signal.SIGALRM, self._again)
        self.previous_timer = signal.getitimer(signal.ITIMER_REAL)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self.previous_term)
        signal.setitimer(signal.ITIMER_REAL, *self.previous_timer)
        signal.signal(signal.SIGALRM, self.previous_alarm)

    def _stop(self, signum: int, frame: object) -> None:
        if not self.stopped:
            self.stopped = True
            signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
        self._again(signum, frame)

    def _again(self, signum: int, frame: object) -> None:
        if not self.stopped:  # an alarm of someone else's
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.result, indent=2) + "\n")
        raise BenchmarkStopped


def main(argv: Sequence[str] | None = None) -> None:
    bc = parse_args(sys.argv[1:] if argv is None else argv)
    kernels.retain_freed_memory()  # as run.py's runs do
    out = Path(bc.out)
    stem = output_stem(resolve_device(bc.device))
    result: dict[str, Any] = {}
    partial = out / f"{stem}.partial.json"
    guard = SaveOnSigterm(result, partial)
    message = f"stopped by SIGTERM: the measurements finished so far are in {partial}"
    try:
        with guard:
            run_benchmark(bc, result)
    except BaseException:
        if guard.stopped:
            raise SystemExit(message) from None
        raise
    if guard.stopped:  # swallowed, and finished before it was raised again
        raise SystemExit(message)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(render_markdown(result))
    print((out / f"{stem}.md").read_text())
    print(f"wrote {out / f'{stem}.json'} and {out / f'{stem}.md'}")
