"""Speed benchmark: ``python -m benchmark.speed [key=value ...]`` (``make bench``) writes
``bench.json`` and ``bench.md`` to ``out`` (``bench_cuda.*`` on GPUs). Per model (by default
at the paper's sizes) and ``compile`` mode: the training step of replica groups of R runs
(:func:`~benchmark.speed.eta.group_step`) against R runs alone, its FLOPs
(``FlopCounterMode``) per second against an fp32 matmul's, and one chunk of the S-sample
estimator (:func:`~benchmark.speed.eta.eval_chunk`) projected to 1,000 test points; each with
its compile time, its first call minus a warm call (a model's first variant in a mode compiles
from empty in-process caches). Then paper Table 1 projected in each cell's fastest mode, and
with ``baseline=PATH`` the default step of an earlier checkout against this one's
(:func:`~benchmark.speed.timing.compare_with_baseline`). Times are the best of ``repeats``
rounds in which a model's variants take turns; SIGTERM (a time limit) writes what was
measured so far to ``bench[_cuda].partial.json``.
"""

from __future__ import annotations

import datetime
import json
import platform
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from benchmark import compilation
from benchmark.runs.builders import build_model
from benchmark.runs.config import compose_config
from benchmark.runs.provenance import device_name, git_state
from benchmark.runs.resources import available_cores, configure_cpu
from benchmark.speed.eta import CellTime, eval_chunk, group_step, projected_run_seconds
from benchmark.speed.timing import MODELS, X_DIM, compare_with_baseline, time_each

PAPER_DATA = {"mnist": (60_000, 10_000), "omniglot": (24_345, 8_070)}  # train, test points
TABLE1_SEEDS = 5
Row = dict[str, Any]


@dataclass
class Options:
    """``key=value`` on the command line; None: the device's default."""

    device: str = "auto"  # auto (cuda where available) | cpu | cuda
    out: str = "results"
    models: list[str] = field(default_factory=lambda: list(MODELS))
    batch: int = 100
    k: int = 25
    hidden: list[int] = field(default_factory=lambda: [400])
    latent: int = 20
    # modes (None: false and true, and on GPUs reduce-overhead)
    compile: list[compilation.CompileMode] | None = None
    replicas: list[int] | None = None  # group sizes R besides 1 and 5 (None: 30 on GPUs)
    steps: int = 10  # calls per timed round
    repeats: int = 3  # rounds
    warmup: int = 2  # calls after the first
    matmul: int = 4096  # n of the n x n fp32 matmul whose rate is the peak
    threads: int | None = None  # torch CPU threads (None: torch's default)
    baseline: str | None = None  # a checkout of an earlier commit, e.g. a git worktree
    baseline_rounds: int = 4  # even: as many rounds begin with the old as with the new


def parse_args(argv: Sequence[str]) -> Options:
    """The options, with the device and its defaults filled in; an unknown key exits."""
    try:
        o = Options(**OmegaConf.to_container(OmegaConf.from_cli(list(argv))))
    except TypeError as err:
        raise SystemExit(f"{err}; options: {', '.join(Options.__dataclass_fields__)}") from None
    if o.device == "auto":
        o.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(o.device).type == "cuda"
    modes = list(compilation.COMPILE_MODES[: 3 if cuda else 2]) if o.compile is None else o.compile
    o.compile = modes if isinstance(modes, list) else [modes]
    o.replicas = sorted({1, TABLE1_SEEDS, *(o.replicas or ([30] if cuda else []))})
    return o


def log(*parts: object) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


def machine(device: torch.device) -> Row:
    return {
        "device": str(device),
        "gpu": device_name(device) if device.type == "cuda" else None,
        "cpu": device_name(torch.device("cpu")),
        "cores": available_cores(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def sizes(o: Options) -> list[str]:
    """The config overrides of the model sizes of ``o``."""
    hidden, batch = ",".join(map(str, o.hidden)), f"optim.batch_size={o.batch}"
    return [f"model.k={o.k}", f"network.hidden=[{hidden}]", f"network.latent={o.latent}", batch]


def measure_model(o: Options, model: str, device: torch.device, result: Row) -> None:
    """Every (mode, R) training step and every mode's evaluation chunk of ``model``."""
    cfg = compose_config([f"model={model}", *sizes(o)])
    torch.manual_seed(0)
    net = build_model(cfg, X_DIM).to(device)
    x = torch.rand(max(o.batch, cfg.eval.batch_size), X_DIM, device=device).bernoulli()
    with FlopCounterMode(display=False) as counter:
        group_step([net], x[: o.batch], False)()
    flops = counter.get_total_flops()
    compilation.fresh_compile_caches()
    fns: dict[tuple[str, compilation.CompileMode, int], Callable[[], object]] = {}
    for mode in o.compile:
        for r in o.replicas:
            fns["train", mode, r] = group_step([net] * r, x[: o.batch], mode)
        fns["eval", mode, 1], rows = eval_chunk(net, x[: cfg.eval.batch_size], cfg.eval, mode)
    first = time_each(fns, device, calls=1, repeats=1)  # compiles
    warm = time_each(fns, device, o.steps, o.repeats, o.warmup)
    for (kind, mode, r), s in warm.items():
        row = {"model": model, "compile": compilation.compile_name(mode)}
        row["compile_s"] = max(first[kind, mode, r] - s, 0.0)
        if kind == "train":
            alone = r * warm["train", mode, 1]
            peak = result["matmul"]["gflops"] * 1e9
            row |= {"replicas": r, "step_s": s, "vs_runs_alone": s / alone}
            row |= {"gflop": r * flops / 1e9, "matmul_peak_fraction": r * flops / s / peak}
        else:
            pairs = 1000 * cfg.eval.n_samples
            row |= {"chunk_rows": rows, "chunk_s": s, "s_per_1000_points": s * pairs / rows}
        result[kind].append(row)
        log(model, kind, row["compile"], f"R={r}", f"{s * 1e3:.2f} ms per call")


def cell_hours(
    paper: DictConfig, sizes: tuple[int, int], step: Row, chunk: Row, replicas: int
) -> float:
    """Hours of one cell of paper Table 1 (its 5 seeds; in groups of ``replicas``) at a
    measured step and evaluation chunk, each compile time once per run (per group)."""
    n_train, n_test = sizes
    train_s, eval_s = projected_run_seconds(
        paper, n_train, n_test, step["step_s"], chunk["chunk_s"], chunk["chunk_rows"]
    )
    train_s, eval_s = train_s + step["compile_s"], eval_s + chunk["compile_s"]
    return CellTime("", "", train_s, eval_s, TABLE1_SEEDS, replicas).total_s / 3600


def project_table1(train: list[Row], evals: list[Row]) -> list[Row]:
    """Per cell of paper Table 1, its hours in its fastest measured mode: its seeds one after
    another, and as one group of replicas."""
    paper = compose_config(["experiment=paper"])
    steps = {(t["model"], t["compile"], t["replicas"]): t for t in train}
    rows = []
    for model in dict.fromkeys(e["model"] for e in evals):
        for dataset, sizes in PAPER_DATA.items():
            row = {"model": model, "dataset": dataset}
            for column, r in (("sequential", 1), ("replicas", TABLE1_SEEDS)):
                hours = {
                    e["compile"]: cell_hours(paper, sizes, steps[model, e["compile"], r], e, r)
                    for e in evals
                    if e["model"] == model
                }
                best = min(hours, key=hours.__getitem__)
                row |= {f"{column}_h": hours[best], f"{column}_compile": best}
            rows.append(row)
    return rows


def measure(o: Options, device: torch.device, result: Row) -> None:
    a, b = (torch.randn(o.matmul, o.matmul, device=device) for _ in "ab")
    matmul_s = time_each({"mm": lambda: a @ b}, device, 2, o.repeats, warmup=1)["mm"]
    result["matmul"] = {"n": o.matmul, "gflops": 2 * o.matmul**3 / matmul_s / 1e9}
    log(f"matmul peak {result['matmul']['gflops']:.1f} GFLOP/s")
    skips = compilation.cudagraph_skips()
    for model in o.models:
        measure_model(o, model, device, result)
    if skips is not None:  # graphed passes that ran without CUDA graphs
        result["cudagraph_skips"] = compilation.cudagraph_skips() - skips
    result["table1"] = project_table1(result["train"], result["eval"])
    if o.baseline:
        threads, rounds = torch.get_num_threads(), o.baseline_rounds
        result["baseline"] = compare_with_baseline(
            o.baseline, str(device), threads, o.steps, rounds, sizes(o)
        )


def table(header: str, rows: Iterable[str]) -> list[str]:
    """A markdown table of ``header`` and ``rows``, their cells separated by `` | ``."""
    rule = "|---" * (header.count("|") + 1) + "|"
    return [f"| {header} |", rule, *(f"| {row} |" for row in rows), ""]


def markdown(result: Row) -> str:
    m, o, git, peak = result["machine"], result["options"], result["git"], result["matmul"]
    cells = result["table1"]
    total = {col: sum(c[f"{col}_h"] for c in cells) for col in ("sequential", "replicas")}
    lines = [
        f"# Speed on {m['gpu'] or m['cpu']}",
        "",
        f"{m['cpu']}, {m['threads']} torch threads; torch {m['torch']}; commit {git['commit']}"
        f"{' (uncommitted changes)' if git['dirty'] else ''}; {result['date']}. Sizes: {X_DIM} "
        f"pixels, hidden {o['hidden']}, latent {o['latent']}, k = {o['k']}, batch {o['batch']}. "
        f"Times: the best of {o['repeats']} rounds of {o['steps']} calls, a model's variants "
        "taking turns; compile s: a variant's first call minus a warm call. Matmul peak: "
        f"{peak['gflops']:.1f} GFLOP/s (fp32, {peak['n']} x {peak['n']}).",
        "",
        "## Training step (R runs as one replica group)",
        "",
        *table(
            "model | compile | R | ms per step | compile s | per run vs R runs alone | "
            "of matmul peak",
            (
                f"{t['model']} | {t['compile']} | {t['replicas']} | {t['step_s'] * 1e3:.2f} | "
                f"{t['compile_s']:.1f} | {t['vs_runs_alone']:.2f} | "
                f"{t['matmul_peak_fraction']:.1%}"
                for t in result["train"]
            ),
        ),
        "## Evaluation (the S-sample estimate, S = 2000)",
        "",
        *table(
            "model | compile | s per 1000 test points | compile s | rows per chunk",
            (
                f"{e['model']} | {e['compile']} | {e['s_per_1000_points']:.2f} | "
                f"{e['compile_s']:.1f} | {e['chunk_rows']}"
                for e in result["eval"]
            ),
        ),
        "## Paper Table 1 projected",
        "",
        "3 models x 2 data sets x 5 seeds, 500 epochs (MNIST 60,000 train / 10,000 test points, "
        "Omniglot 24,345 / 8,070), S = 2000, each cell in its fastest mode; with replicas a "
        "cell's 5 seeds train as one group.",
        "",
        *table(
            "model | data set | hours, one run after another | compile | hours, replicas | compile",
            [
                *(
                    f"{c['model']} | {c['dataset']} | {c['sequential_h']:.1f} | "
                    f"{c['sequential_compile']} | {c['replicas_h']:.1f} | {c['replicas_compile']}"
                    for c in cells
                ),
                f"total | | {total['sequential']:.1f} | | {total['replicas']:.1f} |",
            ],
        ),
    ]
    if "baseline" in result:
        base = result["baseline"]
        lines += [
            f"## Against the default of {base['path']} (commit {base['commit'][:10]})",
            "",
            "Each checkout's default training step, timed in a fresh process, the two "
            f"alternating for {o['baseline_rounds']} rounds: medians, and the median of the "
            "rounds' new / old.",
            "",
            *table(
                "model | old ms per step | new ms per step | new / old",
                (
                    f"{name} | {v['old_s'] * 1e3:.2f} | {v['new_s'] * 1e3:.2f} | "
                    f"{v['new_over_old']:.3f}"
                    for name, v in base["models"].items()
                ),
            ),
        ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    o = parse_args(argv)
    device = torch.device(o.device)
    if o.threads:
        torch.set_num_threads(o.threads)
    configure_cpu()  # as the runs do
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench_cuda" if device.type == "cuda" else "bench"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result: Row = {"machine": machine(device), "git": git_state(), "date": now}
    result |= {"options": asdict(o), "train": [], "eval": []}

    def stop(signum: int, frame: object) -> None:
        (out / f"{stem}.partial.json").write_text(json.dumps(result, indent=2))
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False):  # as in a run: static
            measure(o, device, result)
    finally:
        signal.signal(signal.SIGTERM, previous)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(markdown(result))
    (out / f"{stem}.partial.json").unlink(missing_ok=True)
    log(f"wrote {out / stem}.json and .md")
    return 0
