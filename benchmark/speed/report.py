"""``bench.md``: the speed benchmark's measurements as tables, each target met or missed, and
for a missed one, by how much and which ops the profile says the time goes to."""

from __future__ import annotations

from typing import Any

from benchmark.kernels import compile_name

# Targets of the speed issue (on a 2-core CPU, fp32). Ratios are upper bounds, speed-ups
# lower bounds.
TARGETS = {
    "step_iwae": 1.3,  # IWAE step time / GEMM-bound time
    "step_random": 1.4,  # IWAER and IWAERrec step time / GEMM-bound time
    "vs_plain_iwae": 1.0,  # plain PyTorch IWAE step time / ours
    "vs_loop_iwaer": 3.0,  # loop-over-samples IWAER step time / ours
    "epoch": 1.05,  # Lightning epoch / sum of its bare steps
    "eval": 1.3,  # evaluation time / GEMM-bound time
    "replicas": 1.0,  # replica group step / (R x single-run step)
    "table1_gpu_h": 1.0,  # the whole paper Table 1 on one H100/H200-class GPU, hours
}


def _percent(fraction: float) -> str:
    """'3%', or two significant digits below one percent ('0.16%'; a miss never reads 0%)."""
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 else f"{100 * fraction:.2g}%"


def _at_most(value: float, target: float) -> str:
    if value <= target:
        return f"met (≤ {target:g})"
    return f"**missed** by {_percent(value / target - 1)} (target ≤ {target:g})"


def _at_least(value: float, target: float) -> str:
    if value >= target:
        return f"met (≥ {target:g})"
    return f"**missed** by {_percent(1 - value / target)} (target ≥ {target:g})"


def where_time_goes(profile: dict[str, Any], n: int = 4) -> str:
    """'1.36x in the profile = matmuls 0.99x + `noise (Philox kernel)` 0.13x + ... + other
    ops 0.11x (matmuls 73% of op time)': the profiled call's op time as multiples of its
    ``gemm_bound_ms`` (:func:`profile_ops` with that key added), matmuls first, then the
    ``n`` costliest other ops, then the rest. A target of r x the GEMM bound leaves r - 1
    for everything after the first term."""
    bound, total = profile["gemm_bound_ms"], profile["total_ms_per_call"]
    gemm_ms = profile["gemm_share"] * total
    others = [op for op in profile["top_ops"] if not op["gemm"]][:n]
    rest_ms = total - gemm_ms - sum(op["ms_per_call"] for op in others)
    terms = [f"matmuls {gemm_ms / bound:.2f}x"]
    terms += [f"`{op['op']}` {op['ms_per_call'] / bound:.2f}x" for op in others]
    terms.append(f"other ops {rest_ms / bound:.2f}x")
    return (
        f"{total / bound:.2f}x in the profile = "
        + " + ".join(terms)
        + f" (matmuls {100 * profile['gemm_share']:.0f}% of op time)"
    )


def _noise_floor(normals: int, ns_per_normal: float, gemm_bound: float, scale: float) -> str:
    """'2.6 (0.05x)': the noise floor in the unit of ``gemm_bound`` (``scale`` per second),
    and as a multiple of the GEMM bound."""
    floor = normals * ns_per_normal * 1e-9 * scale
    return f"{floor:.{1 if scale > 1 else 2}f} ({floor / gemm_bound:.2f}x)"


def _compiled_row(row: dict[str, Any], eager: dict[str, Any]) -> list[str]:
    """A compiled step's table row, its time held against the eager step's GEMM bound."""
    ratio = row["ms"] / eager["gemm_bound_ms"]
    return [
        row["model"],
        f"{row['first_step_s']:.0f}",
        f"{row['ms']:.1f}",
        f"{row['speedup']:.2f}x",
        f"{ratio:.2f}",
        _at_most(ratio, eager["target"]),
        f"{row['bound_abs_diff_nats']:.2g}",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    cfg, mach, matmul = result["config"], result["machine"], result["matmul"]
    git = result["git"]
    peak = matmul["peak_gflops"]
    lines = [
        "# Speed benchmark",
        "",
        f"`python -m benchmark.speed` on "
        f"{mach.get('gpu') or mach.get('cpu') or mach['processor']}"
        f" ({mach['device']}, {mach['torch_threads']} torch threads, {mach['cpu_count']} cores"
        f" available), torch {result['versions']['torch']}, commit "
        f"{(git['commit'] or 'unknown')[:10]}{_tree_state(git)},"
        f" {result['created']}. Batch {cfg['batch']}, k = {cfg['k']}, hidden {cfg['hidden']},"
        f" latent {cfg['latent']}, D = 784, fp32. Every ratio compares times of this run.",
        "",
        "## Peak matmul rate",
        "",
        f"Best `torch.mm` rate over the {len(matmul['shapes'])} product shapes of the models' "
        f"training steps: **{peak:.0f} GFLOP/s** ({matmul['dtype']}). GEMM-bound time = minimal "
        "matmul FLOPs (`benchmark/speed/flops.py`) / this rate.",
        "",
    ]
    lines += _table(
        ["m x k x n", "GFLOP/s"],
        [[f"{s['m']} x {s['k']} x {s['n']}", f"{s['gflops']:.0f}"] for s in matmul["shapes"]],
    )
    noise = result["noise"]
    ns = noise["ns_per_normal"]
    lines += [
        "",
        "## Training step (forward, backward, Adam)",
        "",
        f"Time per step: the best of {cfg['repeats']} repeats of {cfg['steps']} steps, the "
        "repeats of all models and of the references below interleaved, so interference from "
        "other processes costs one repeat of several paths rather than every repeat of one.",
        "",
    ]
    lines += _table(
        ["model", "ms", "GFLOP", "GFLOP/s", "GEMM-bound ms", "ratio", "target", "noise floor ms"],
        [
            [
                r["model"],
                f"{r['ms']:.1f}",
                f"{r['gflop']:.2f}",
                f"{r['gflops']:.0f}",
                f"{r['gemm_bound_ms']:.1f}",
                f"{r['ratio']:.2f}",
                _at_most(r["ratio"], r["target"]),
                _noise_floor(r["normals"], ns, r["gemm_bound_ms"], 1e3),
            ]
            for r in result["train_steps"]
        ],
    )
    lines += [
        "",
        f"Noise floor: the standard normals a path draws, at {ns:.2f} ns each, the rate at "
        f"which `benchmark/kernels/philox.py` draws {noise['normals'] / 1e6:.1f} M of them "
        "alone (the "
        "Philox kernel is compute-bound, so fusing it elsewhere does not remove it); in "
        "brackets as a multiple of the GEMM bound. A target of r x the GEMM bound leaves "
        "(r - 1) x it for everything but the minimal matmuls, noise included.",
        "",
        "Where a step's time goes, in multiples of its GEMM bound (profiler self time per "
        "step; the profiled total comes first, to hold against the timed ratio above; matmuls "
        "above 1x run below the peak rate, as the narrow shapes of the table above do):",
        "",
    ]
    lines += [f"- {r['model']}: {where_time_goes(r['profile'])}" for r in result["train_steps"]]
    lines += [
        "",
        "## Default path against the plain reference path (`kernels=reference`)",
        "",
        "The same models and the same step, timed in the same interleaved repeats, with the "
        "fast paths of `benchmark/kernels/` off: plain PyTorch ops and autograd (on CPUs also "
        "torch's own noise generator). `kernels=auto` uses the fast paths on CPUs only; keep "
        "it where the speed-up is above 1.",
        "",
    ]
    lines += _table(
        ["model", "default ms", "kernels=reference ms", "speed-up of the default"],
        [
            [
                r["model"],
                f"{r['ms']:.1f}",
                f"{r['plain_ms']:.1f}",
                f"{r['plain_ms'] / r['ms']:.2f}x",
            ]
            for r in result["train_steps"]
        ],
    )
    lines += ["", "## Against straightforward implementations (`benchmark/speed/reference.py`)", ""]
    lines += _table(
        ["reference", "ours", "reference ms", "ours ms", "speed-up", "target"],
        [
            [
                r["reference"],
                r["model"],
                f"{r['reference_ms']:.1f}",
                f"{r['ms']:.1f}",
                f"{r['speedup']:.2f}x",
                _at_least(r["speedup"], r["target_speedup"]),
            ]
            for r in result["references"]
        ],
    )
    epoch = result["lightning_epoch"]
    lines += [
        "",
        "## One Lightning epoch",
        "",
        f"{epoch['model']}, epochs of {epoch['steps']} steps through `run.py`'s Trainer (real "
        f"MNIST, dynamic binarization, CSV logging), the best of {epoch['epochs']}: "
        f"{epoch['epoch_s']:.1f} s against {epoch['steps_s']:.1f} s for as many bare steps (best "
        f"of {epoch['epochs']} rounds): ratio **{epoch['ratio']:.3f}**, "
        f"{_at_most(epoch['ratio'], epoch['target'])}; {epoch['overhead_ms']:+.2f} ms per step.",
        "",
        f"## Test log-likelihood evaluation (S = {cfg['eval_samples']})",
        "",
        f"`estimate_log_likelihood` in `run.py`'s evaluation batches; time: the best of "
        f"{cfg['repeats']} evaluations; peak memory: one evaluation.",
        "",
    ]
    evals = result["eval"] + result.get("eval_compiled", [])
    lines += _table(
        [
            "model",
            "points",
            "samples/s",
            "GEMM-bound s",
            "s",
            "ratio",
            "target",
            "noise floor s",
            "peak memory",
        ],
        [
            [
                _eval_label(r),
                str(r["points"]),
                f"{r['samples_per_s']:,.0f}",
                f"{r['gemm_bound_s']:.2f}",
                f"{r['seconds']:.2f}",
                f"{r['ratio']:.2f}",
                _at_most(r["ratio"], r["target"]),
                _noise_floor(r["normals"], ns, r["gemm_bound_s"], 1.0),
                _memory(r),
            ]
            for r in evals
        ],
    )
    lines += [
        "",
        "Where the evaluation's time goes, in multiples of its GEMM bound (profiler self time, "
        "one batch of points):",
        "",
    ]
    lines += [f"- {_eval_label(r)}: {where_time_goes(r['profile'])}" for r in evals]
    if result["bf16"]:
        lines += ["", "## bf16 autocast (training step)", ""]
        lines += _table(
            ["model", "ms", "speed-up", "mean abs. change of the bound (nats)"],
            [
                [
                    r["model"],
                    f"{r['ms']:.1f}",
                    f"{r['speedup']:.2f}x",
                    f"{r['bound_abs_diff_nats']:.3f}",
                ]
                for r in result["bf16"]
            ],
        )
    if result["compile"]:
        eager = {r["model"]: r for r in result["train_steps"]}
        lines += ["", "## `torch.compile` (training step; `compile=true` in `run.py`)", ""]
        lines += _table(
            [
                "model",
                "first step (compiles) s",
                "ms",
                "speed-up",
                "ratio to GEMM bound",
                "step target",
                "mean abs. change (nats)",
            ],
            [_compiled_row(r, eager[r["model"]]) for r in result["compile"]],
        )
    projection = result["projection"]
    lines += [
        "",
        f"## Projected `experiment=paper` run ({projection['epochs']} epochs, "
        f"S = {projection['eval_samples']}) on this machine",
        "",
        "Step time x steps x Lightning ratio, plus test points x S / evaluation rate:",
        "",
    ]
    with_compile = all("total_h_compiled" in r for r in projection["runs"])
    lines += _table(
        ["data set", "model", "train h", "eval h", "total h"]
        + (["total h, `compile=true`"] if with_compile else []),
        [
            [
                r["dataset"],
                r["model"],
                f"{r['train_h']:.1f}",
                f"{r['eval_h']:.2f}",
                f"{r['total_h']:.1f}",
            ]
            + ([f"{r['total_h_compiled']:.1f}"] if with_compile else [])
            for r in projection["runs"]
        ],
    )
    if result.get("replicas"):
        lines += _replica_lines(
            result["replicas"], result.get("group_epochs", []), result.get("table1"), mach["device"]
        )
    return "\n".join(lines) + "\n"


def _replica_lines(
    rows: list[dict[str, Any]],
    group_epochs: list[dict[str, Any]],
    table1: dict[str, Any] | None,
    device: str,
) -> list[str]:
    """The replica-group section: steps of R seeds as one stacked model, and Table 1."""
    lines = [
        "",
        "## Seeds as replicas (`hydra/launcher=replicas`)",
        "",
        "The training step of R seeds as one stacked model (R noise draws, the stacked loss, one "
        "fused Adam step) against a run's step in the same `compile` mode, their repeats "
        "interleaved; ratio = group step / (R x a run's step), the group against its runs one "
        "after another. `compile=reduce-overhead` replays the pass's forward and backward from "
        "CUDA graphs on GPUs (on CPUs it is `compile=true`).",
        "",
    ]
    lines += _table(
        [
            "model",
            "compile",
            "R",
            "ms per group step",
            "replica-steps/s",
            "single-run ms",
            "ratio",
            "target",
        ],
        [
            [
                r["model"],
                compile_name(r["compile"]),
                str(r["replicas"]),
                f"{r['ms']:.2f}",
                f"{r['replica_steps_per_s']:.1f}",
                f"{r['single_ms']:.2f}",
                f"{r['ratio']:.2f}",
                _at_most(r["ratio"], TARGETS["replicas"]),
            ]
            for r in rows
        ],
    )
    lines += _cudagraph_lines(rows, group_epochs, device)
    for e in group_epochs:
        lines += [
            "",
            f"{e['model']} as a group of {e['replicas']} replicas through the replica launcher's "
            f"Trainer (`compile={compile_name(e['compile'])}`), epochs of {e['steps']} steps, "
            f"the best of {e['epochs']}: {e['epoch_s']:.2f} s against {e['steps_s']:.2f} s for "
            f"as many bare group steps: ratio {e['ratio']:.3f}, {e['overhead_ms']:+.2f} ms per "
            "step.",
        ]
    if table1 is None:
        return lines
    modes = list(table1["replicas_h_by_compile"])
    group_ms = ", ".join(
        f"{ms:.2f} ms with `compile={mode}`"
        for mode, ms in table1["group_lightning_ms_per_step"].items()
    )
    lines += [
        "",
        f"### Projected paper Table 1 ({table1['epochs']} epochs, S = {table1['eval_samples']}, "
        f"{table1['seeds']} seeds per cell) on this machine",
        "",
        "Training steps x (measured step time + the Lightning work per step measured on an "
        f"epoch: {table1['lightning_ms_per_step']:.2f} ms for a run, for a group of "
        f"{table1['seeds']}: {group_ms}); evaluation at the measured rate, one run after "
        "another. Sequential: each cell's seeds one after another, eagerly; replicas: each "
        "cell's seeds as one group.",
        "",
    ]
    lines += _table(
        [
            "data set",
            "model",
            "sequential h",
            *(f"replicas h, `compile={mode}`" for mode in modes),
            "of which evaluation h",
        ],
        [
            [
                c["dataset"],
                c["model"],
                f"{c['sequential_h']:.2f}",
                *(f"{c['replicas_h'][mode]:.2f}" for mode in modes),
                f"{c['eval_h']:.2f}",
            ]
            for c in table1["cells"]
        ],
    )
    by_mode = ", ".join(
        f"{hours:.2f} h with `compile={mode}`"
        for mode, hours in table1["replicas_h_by_compile"].items()
    )
    total = (
        f"**{table1['replicas_h']:.2f} h** with replicas ({by_mode}), "
        f"{table1['sequential_h']:.2f} h sequentially"
    )
    target = (
        f" (target on one H100/H200-class GPU: <= {TARGETS['table1_gpu_h']:.0f} h: "
        f"{_at_most(table1['replicas_h'], TARGETS['table1_gpu_h'])})"
        if device.startswith("cuda")
        else ""
    )
    return [*lines, "", f"Whole Table 1: {total}{target}."]


def _cudagraph_lines(
    rows: list[dict[str, Any]], group_epochs: list[dict[str, Any]], device: str
) -> list[str]:
    """Whether the ``reduce-overhead`` measurements replayed CUDA graphs: inductor's count
    of graphed passes run without them (one count per model variant, and per group epoch)."""
    per_variant = {
        r["model"]: r["cudagraph_skips"] for r in rows if r["compile"] == "reduce-overhead"
    }
    counts = [*per_variant.values()]
    counts += [e["cudagraph_skips"] for e in group_epochs if e["compile"] == "reduce-overhead"]
    if not counts or any(c is None for c in counts):
        return []
    skipped = sum(counts)
    if not device.startswith("cuda"):
        text = (
            f"On a CPU `reduce-overhead` has no CUDA graphs to capture ({skipped} compiled "
            "passes ran without them): its rows time `compile=true`."
        )
    elif skipped == 0:
        text = "CUDA graphs: inductor captured every `reduce-overhead` pass (no skips)."
    else:
        text = (
            f"CUDA graphs: **inductor ran {skipped} `reduce-overhead` passes without them** "
            "(`TORCH_LOGS=perf_hints` names the reason), so those rows time compiled passes "
            "without graph replay."
        )
    return ["", text]


def _tree_state(git: dict[str, Any]) -> str:
    if git.get("commit_from"):
        return f" (from ${git['commit_from']}: uncommitted changes unknown)"
    return " (dirty)" if git["dirty"] else ""


def _eval_label(row: dict[str, Any]) -> str:
    return f"{row['model']}, compiled" if row.get("compiled") else row["model"]


def _memory(row: dict[str, Any]) -> str:
    if row["peak_memory_bytes"] is None:
        return "n/a"
    used, cap = row["peak_memory_bytes"] / 2**20, row["memory_cap_bytes"] / 2**20
    verdict = "within" if used <= cap else "**over**"
    return f"{used:.0f} MiB, {verdict} the {cap:.0f} MiB cap"
