"""The speed harness: FLOP counts against a hand count and torch's FLOP counter, and a run of
``python -m benchmark.speed`` in a tiny configuration (no timing assertions)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.models.iwae import ImportanceWeightedAutoencoder
from benchmark.speed import bench as speed
from benchmark.speed.flops import forward_flops, train_step_flops
from benchmark.speed.replicas import project_table1
from benchmark.speed.report import _at_least, _at_most, _cudagraph_lines, where_time_goes
from benchmark.speed.timing import op_name, profile_ops, seconds_per_call, seconds_per_call_each

# D = 12 -> 7 -> 5 -> 2 x 2 encoder, 2 -> 5 -> 7 -> 12 decoder, B = 4, k = 3.
D, HIDDEN, Z, B, K = 12, (7, 5), 2, 4, 3


def small_model(random_encoder: bool, random_decoder: bool, sampling: str = "local"):
    return ImportanceWeightedAutoencoder(
        D,
        {"hidden": list(HIDDEN), "latent": Z, "activation": "tanh"},
        k=K,
        random_encoder=random_encoder,
        random_decoder=random_decoder,
        weight_sampling=sampling,
    )


def mm(rows: int, n_in: int, n_out: int) -> int:
    return 2 * rows * n_in * n_out


def test_iwae_flops_match_hand_count():
    # Encoder on the B data points; decoder on the k B latent samples.
    forward = mm(B, 12, 7) + mm(B, 7, 5) + mm(B, 5, 4) + mm(K * B, 2, 5) + mm(K * B, 5, 7)
    forward += mm(K * B, 7, 12)
    # Backward: a weight gradient per product, an input gradient except for the data x.
    backward = 2 * forward - mm(B, 12, 7)
    model = small_model(False, False)
    assert forward_flops(model, B, K) == forward == 4208
    assert train_step_flops(model, B, K) == forward + backward == 11952


def test_iwaer_local_flops_match_hand_count():
    # Every random layer: a mean and a variance product. The first runs on the B data points
    # (its input x is shared by the k samples); after it, activations differ per sample.
    forward = 2 * (mm(B, 12, 7) + mm(K * B, 7, 5) + mm(K * B, 5, 4))
    forward += 2 * (mm(K * B, 2, 5) + mm(K * B, 5, 7) + mm(K * B, 7, 12))
    backward = 2 * forward - 2 * mm(B, 12, 7)
    model = small_model(True, True)
    assert forward_flops(model, B, K) == forward == 10176
    assert train_step_flops(model, B, K) == forward + backward == 29184


@pytest.mark.parametrize(
    ("random_encoder", "random_decoder", "sampling"),
    [
        (False, False, "local"),
        (True, True, "local"),
        (True, True, "shared"),
        (True, False, "local"),
        (True, False, "shared"),
    ],
)
def test_flop_count_is_what_the_model_executes(random_encoder, random_decoder, sampling):
    """torch's FLOP counter sees exactly the minimal count: no product is computed twice or
    on more rows than needed."""
    model = small_model(random_encoder, random_decoder, sampling)
    x = torch.bernoulli(torch.full((B, D), 0.3), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as forward:
        loss = -model.bound(x, K).mean()
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    assert forward.get_total_flops() == forward_flops(model, B, K)
    assert forward.get_total_flops() + backward.get_total_flops() == train_step_flops(model, B, K)


TINY = [
    "batch=10",
    "k=3",
    "hidden=[16]",
    "latent=4",
    "steps=2",
    "warmup=1",
    "repeats=1",
    "epoch_batches=3",
    "eval_points=20",
    "eval_samples=10",
    "compile=false",
    "profile_calls=1",
]


def test_harness_runs_in_a_tiny_configuration(tmp_path, data_dir, capfd):
    speed.main([*TINY, f"out={tmp_path}", f"data_dir={data_dir}"])
    stderr = capfd.readouterr().err
    assert "[bench] training steps" in stderr and "[bench] evaluation" in stderr
    assert "profiler_start" not in stderr and "gpuGetDeviceCount" not in stderr  # Kineto quiet
    result = json.loads((tmp_path / "bench.json").read_text())
    markdown = (tmp_path / "bench.md").read_text()

    peak = result["matmul"]["peak_gflops"]
    assert peak == max(s["gflops"] for s in result["matmul"]["shapes"]) > 0
    bc = speed.parse_args(TINY)
    steps = {row["model"]: row for row in result["train_steps"]}
    assert set(steps) == set(speed.VARIANTS)
    for variant, row in steps.items():
        model = speed.build_model(bc, variant, torch.device("cpu"))
        assert row["gflop"] * 1e9 == pytest.approx(train_step_flops(model, 10, 3))
        assert row["ratio"] == pytest.approx(row["ms"] / row["gemm_bound_ms"])
        assert 0 < row["profile"]["gemm_share"] < 1
        assert variant in markdown
    # noise: the latent [k, B, Z], and one normal per output unit of every local-sampling layer
    assert steps["iwae"]["normals"] == 3 * 10 * 4
    assert steps["iwaer (local)"]["normals"] == 3 * 10 * (4 + 16 + 8 + 16 + 784)
    # shared sampling: the latent, and k draws of every weight matrix and bias vector
    shared_weights = 785 * 16 + 17 * 8 + 5 * 16 + 17 * 784
    assert steps["iwaer (shared)"]["normals"] == 3 * 10 * 4 + 3 * shared_weights
    assert result["noise"]["ns_per_normal"] > 0 and "Noise floor" in markdown
    for row in result["references"]:
        assert row["speedup"] == pytest.approx(row["reference_ms"] / row["ms"])
    epoch = result["lightning_epoch"]
    assert epoch["steps"] == 3 and epoch["epoch_s"] > 0 and epoch["steps_s"] > 0
    for row in result["eval"]:
        assert row["points"] == 20 and row["samples_per_s"] > 0
        per_pair = steps[row["model"]]["normals"] / (3 * 10)  # local sampling: per (sample, point)
        assert row["normals"] == 20 * 10 * per_pair
        if row["peak_memory_bytes"] is not None:
            assert 0 <= row["peak_memory_bytes"] <= row["memory_cap_bytes"]
    for row in result["bf16"]:
        # bf16 keeps ~3 significant digits: the bound (~-550 nats here) moves by well under 1%.
        assert 0 < row["bound_abs_diff_nats"] < 5
    assert len(result["projection"]["runs"]) == 6
    assert all(r["total_h"] > 0 for r in result["projection"]["runs"])
    assert result["config"]["k"] == 3 and result["git"]["commit"]
    assert "Peak matmul rate" in markdown and "Projected" in markdown
    assert "compiled" not in markdown  # compile=false: nothing compiled was measured
    groups = result["replicas"]  # on CPUs eager only (replica_graphs: GPUs by default)
    assert {(r["model"], r["compile"], r["replicas"]) for r in groups} == {
        (variant, False, count) for variant in speed.PRECISION_VARIANTS for count in (1, 5)
    }
    for row in groups:
        assert row["ratio"] == pytest.approx(row["ms"] / (row["replicas"] * row["single_ms"]))
        assert row["replica_steps_per_s"] == pytest.approx(row["replicas"] / row["ms"] * 1e3)
    assert all(row["cudagraph_skips"] is None for row in groups)  # nothing graphed
    assert "CUDA graphs:" not in markdown and "no CUDA graphs to capture" not in markdown
    (group_epoch,) = result["group_epochs"]
    assert group_epoch["replicas"] == 5 and group_epoch["compile"] is False
    assert group_epoch["steps"] == 3 and group_epoch["epoch_s"] > 0
    table1 = result["table1"]
    assert len(table1["cells"]) == 6 and table1["seeds"] == 5
    assert table1["lightning_ms_per_step"] >= 0
    assert list(table1["replicas_h_by_compile"]) == ["false"] == [table1["best_compile"]]
    assert table1["replicas_h"] == pytest.approx(
        sum(c["replicas_h"]["false"] for c in table1["cells"])
    )
    assert all(c["replicas_h"]["false"] > c["eval_h"] > 0 for c in table1["cells"])
    assert "Seeds as replicas" in markdown and "Whole Table 1" in markdown
    assert "as a group of 5 replicas through the replica launcher's Trainer" in markdown
    assert not (tmp_path / "bench_cuda.json").exists()  # a CPU run writes bench.{json,md}


def test_projection_and_report_with_compiled_measurements(tmp_path, data_dir):
    """With compiled rows equal to the eager ones, the compiled projection equals the eager
    one; compiled evaluations are reported under their own label."""
    speed.main([*TINY, "replicas=[1]", f"out={tmp_path}", f"data_dir={data_dir}"])
    result = json.loads((tmp_path / "bench.json").read_text())
    steps, evals = result["train_steps"], result["eval"]
    projection = speed.project_paper_runs(steps, result["lightning_epoch"], evals, steps, evals)
    for row in projection["runs"]:
        assert row["total_h_compiled"] == pytest.approx(row["total_h"])
    result["projection"] = projection
    result["eval_compiled"] = [{**row, "compiled": True} for row in evals]
    markdown = speed.render_markdown(result)
    assert "| iwaer (local), compiled |" in markdown
    assert "total h, `compile=true`" in markdown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch=1"], "Options: device"),
        (["k=0"], "k must be a positive integer"),
        (["steps=many"], "steps"),
        (["epoch_model=gan"], "epoch_model must be"),
    ],
)
def test_bad_options_exit_with_a_clear_message(argv, message):
    with pytest.raises(SystemExit, match=message):
        speed.parse_args(argv)


def test_profile_ops_names_and_shares_the_ops():
    a, b = torch.randn(64, 256), torch.randn(256, 64)
    profile = profile_ops(lambda: torch.mm(a, b).exp().sum(), torch.device("cpu"), calls=2)
    ops = {op["op"]: op for op in profile["top_ops"]}
    assert {"aten::mm", "aten::exp"} <= ops.keys() and ops["aten::mm"]["gemm"]
    assert not ops["aten::exp"]["gemm"]
    assert 0 < profile["gemm_share"] < 1
    assert sum(op["share"] for op in profile["top_ops"]) <= 1 + 1e-9
    assert op_name("## Call CompiledFxGraph f4jvmg42j6rm4 ##") == "compiled graph (fused ops)"
    assert op_name("Torch-Compiled Region: 0/7") == "Torch-Compiled Region"


def test_profile_ops_reports_a_named_range_with_the_ops_it_calls():
    a = torch.randn(256, 256)

    def fn() -> None:
        with torch.profiler.record_function("outer"):
            a.exp()
            with torch.profiler.record_function("inner"):
                a.exp()

    def rows(ranges: tuple[str, ...]) -> list[str]:
        profile = profile_ops(fn, torch.device("cpu"), calls=2, ranges=ranges)
        return [op["op"] for op in profile["top_ops"]]

    assert rows(())[0] == "aten::exp"
    grouped = rows(("outer", "inner"))
    assert grouped[0] == "outer" and "inner" not in grouped and "aten::exp" not in grouped


def test_a_narrow_miss_never_reads_as_zero_percent():
    assert _at_least(2.995, 3) == "**missed** by 0.17% (target ≥ 3)"
    assert _at_most(1.32, 1.3) == "**missed** by 2% (target ≤ 1.3)"
    assert _at_most(1.3, 1.3) == "met (≤ 1.3)"


def test_where_time_goes_splits_the_profiled_ratio_into_matmuls_ops_and_the_rest():
    ops = [("aten::mm", 6.0, True), ("noise", 2.0, False), ("aten::sqrt_", 1.0, False)]
    profile = {
        "total_ms_per_call": 10.0,
        "gemm_share": 0.6,
        "gemm_bound_ms": 5.0,
        "top_ops": [{"op": op, "ms_per_call": ms, "gemm": gemm} for op, ms, gemm in ops],
    }
    assert where_time_goes(profile) == (
        "2.00x in the profile = matmuls 1.20x + `noise` 0.40x + `aten::sqrt_` 0.20x"
        " + other ops 0.20x (matmuls 60% of op time)"
    )
    assert where_time_goes(profile, n=1).endswith(
        "`noise` 0.40x + other ops 0.40x (matmuls 60% of op time)"
    )


def test_timed_repeats_of_several_paths_are_interleaved_each_after_an_untimed_call():
    """Warm-up of every path first; then per repeat one block of calls per path in turn, each
    block after one untimed call (a single path needs none)."""
    order: list[str] = []
    fns = {name: (lambda name=name: order.append(name)) for name in "ab"}
    seconds = seconds_per_call_each(fns, torch.device("cpu"), calls=2, warmup=1, repeats=2)
    assert "".join(order) == "ab" + "aaabbb" * 2
    assert set(seconds) == {"a", "b"} and all(0 < s < 1 for s in seconds.values())
    order.clear()
    seconds_per_call(fns["a"], torch.device("cpu"), calls=2, warmup=1, repeats=2)
    assert "".join(order) == "a" + "aa" * 2


def test_table1_projection_adds_each_path_its_own_lightning_work_and_takes_the_best_mode():
    """Hours = steps x (step + Lightning's work per step) / 3.6e6 + evaluation, with a run's
    work for the runs and a group's (in its compile mode) for the groups."""
    rows = [
        {"model": "iwae", "compile": mode, "replicas": 5, "ms": ms, "single_ms": single}
        for mode, ms, single in ((False, 10.0, 3.0), ("reduce-overhead", 4.0, 1.0))
    ]
    epoch = {"overhead_ms": 2.0}
    group_epochs = [
        {"compile": False, "overhead_ms": 6.0},
        {"compile": "reduce-overhead", "overhead_ms": -1.0},  # noise below 0 counts as 0
    ]
    evals = [{"model": "iwae", "samples_per_s": 1e6}]
    table1 = project_table1(rows, epoch, group_epochs, evals, {"mnist": (1000, 100)})
    steps = 500 * (1000 // 100)  # the paper preset: 500 epochs of batch 100
    eval_h = 5 * 100 * 2000 / 1e6 / 3600
    (cell,) = table1["cells"]
    assert cell["sequential_h"] == pytest.approx(5 * steps * (3.0 + 2.0) / 3.6e6 + eval_h)
    assert cell["replicas_h"] == pytest.approx(
        {"false": steps * 16.0 / 3.6e6 + eval_h, "reduce-overhead": steps * 4.0 / 3.6e6 + eval_h}
    )
    assert table1["best_compile"] == "reduce-overhead"
    assert table1["replicas_h"] == cell["replicas_h"]["reduce-overhead"]
    assert table1["group_lightning_ms_per_step"] == {"false": 6.0, "reduce-overhead": 0.0}
    assert project_table1(rows, epoch, [], evals, {"mnist": (1000, 100)}) is None


def test_the_report_says_whether_graphed_passes_replayed_cuda_graphs():
    rows = [
        {"model": m, "compile": c, "cudagraph_skips": n}
        for m, c, n in (("iwae", False, None), ("iwae", "reduce-overhead", 0))
    ]
    epochs = [{"compile": "reduce-overhead", "cudagraph_skips": 2}]
    assert (
        "inductor ran 2 `reduce-overhead` passes without them"
        in _cudagraph_lines(rows, epochs, "cuda:0")[1]
    )
    assert "no skips" in _cudagraph_lines(rows, [], "cuda:0")[1]
    assert "On a CPU" in _cudagraph_lines(rows, epochs, "cpu")[1]
    assert _cudagraph_lines(rows[:1], [], "cuda:0") == []  # nothing graphed was measured


@pytest.mark.parametrize("landing", ["raised", "wrapped", "swallowed"])
def test_a_benchmark_stopped_by_sigterm_keeps_what_it_measured(
    tmp_path, data_dir, monkeypatch, landing
):
    """``timeout`` or a scheduler's limit sends SIGTERM: the finished measurements are kept
    in ``bench.partial.json`` (no report is made of a part), also when the code it lands in
    wraps the exception (as dynamo does mid-compile) or swallows it (an eager fallback: it is
    raised again a second later), and the handlers are restored."""

    raised_again = []

    def stopped_while_timing_the_noise(*args: object, **kwargs: object) -> dict:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except speed.BenchmarkStopped as err:
            if landing == "wrapped":
                raise RuntimeError("an internal compiler error") from err
            if landing == "raised":
                raise
        try:
            time.sleep(5)  # swallowed: the next raise lands here
        except speed.BenchmarkStopped:
            raised_again.append(True)
            raise
        return {}

    monkeypatch.setattr(speed, "measure_noise_rate", stopped_while_timing_the_noise)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        speed.main([*TINY, f"out={tmp_path}", f"data_dir={data_dir}"])
    partial = json.loads((tmp_path / "bench.partial.json").read_text())
    assert partial["matmul"]["peak_gflops"] > 0 and partial["git"]["commit"]
    assert "noise" not in partial and "train_steps" not in partial
    assert not (tmp_path / "bench.json").exists() and not (tmp_path / "bench.md").exists()
    assert raised_again == ([True] if landing == "swallowed" else [])
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGALRM)) == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_gpu_reports_are_written_beside_the_cpu_ones() -> None:
    assert speed.output_stem(torch.device("cuda", 0)) == "bench_cuda"
    assert speed.output_stem(torch.device("cpu")) == "bench"
