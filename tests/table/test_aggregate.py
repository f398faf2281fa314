"""Aggregation into Table 1: exact statistics, protocol separation, bad files, figures, make."""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
from pathlib import Path

import pytest
import torch
from scipy import stats

from benchmark.runs.prepare_data import prepare
from benchmark.table.aggregate import aggregate, main
from tests.conftest import REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def protocol(binarization: str = "dynamic", epochs: int = 500) -> dict:
    return {
        "binarization": binarization,
        "epochs": epochs,
        "eval_samples": 2000,
        "hidden": [400],
        "latent": 20,
        "nonlinearity": "tanh",
        "omniglot_source": None,
        "train_subset": None,
        "test_subset": None,
    }


def write_result(
    root: Path,
    dataset: str,
    model: str,
    seed: int,
    test_ll: float,
    binarization: str = "dynamic",
    curve: list[float] | None = None,
    per_point: list[float] | None = None,
    init_std: float = 0.05,
) -> Path:
    random = model in ("iwaer", "iwaerrec")
    model_section = {
        "name": model,
        "k": 25,
        "random_encoder": random,
        "random_decoder": model == "iwaer",
        "init_std": init_std,
        "weight_sampling": "local",
    }
    result = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "test_ll": test_ll,
        "test_ll_se": 0.1,
        "protocol": protocol(binarization),
        "protocol_config": {
            "dataset": {"name": dataset, "binarization": binarization},
            "model": model_section,
            "epochs": 500,
            "eval": {"n_samples": 2000, "seed": 0},
        },
    }
    run_dir = root / dataset / model / binarization / f"s0_{init_std}" / f"seed_{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(result))
    if per_point is not None:
        torch.save(torch.tensor(per_point, dtype=torch.float64), run_dir / "test_ll_per_point.pt")
    if curve:
        (run_dir / "csv" / "version_0").mkdir(parents=True)
        rows = ["epoch,step,train/bound,test/bound"]
        rows += [f"{e},{10 * (e + 1)},{v},{v + 1}" for e, v in enumerate(curve)]
        (run_dir / "csv" / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run_dir


IWAE = [-100.0, -101.0, -99.0, -100.5, -99.5]
IWAER = [-99.0, -99.4, -98.2, -98.9, -99.6]
IWAERREC = [-99.9, -99.2, -100.1]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for model, values in (("iwae", IWAE), ("iwaer", IWAER), ("iwaerrec", IWAERREC)):
        for seed, value in enumerate(values):
            write_result(root, "mnist", model, seed, value, curve=[-150 + seed, -120 + seed, value])
    write_result(root, "mnist", "iwae", 0, -87.0, binarization="static")
    write_result(root, "omniglot", "iwae", 0, -118.0)
    return root


def cell(payload: dict, dataset: str, model: str, binarization: str = "dynamic") -> dict:
    (found,) = [
        c
        for c in payload["cells"]
        if c["dataset"] == dataset
        and c["model"] == model
        and c["protocol"].startswith(binarization)
    ]
    return found


def test_means_and_standard_errors_are_exact(results: Path, tmp_path: Path) -> None:
    payload = aggregate(results, tmp_path / "out", figures=False)
    for model, values in (("iwae", IWAE), ("iwaer", IWAER), ("iwaerrec", IWAERREC)):
        c = cell(payload, "mnist", model)
        assert c["n"] == len(values) and c["seeds"] == list(range(len(values)))
        assert c["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert c["se"] == pytest.approx(
            statistics.stdev(values) / math.sqrt(len(values)), abs=1e-12
        )
    iwae = cell(payload, "mnist", "iwae")
    assert iwae["paper_mean"] == -95.182 and iwae["paper_se"] == 0.022
    assert iwae["diff_to_paper"] == pytest.approx(-100.0 + 95.182)


def test_runs_on_a_subset_of_the_data_get_no_paper_column(tmp_path: Path) -> None:
    run_dir = write_result(tmp_path / "results", "mnist", "iwae", 0, -121.0)
    result = json.loads((run_dir / "result.json").read_text())
    result["protocol"]["train_subset"] = 1000
    (run_dir / "result.json").write_text(json.dumps(result))
    (c,) = aggregate(tmp_path / "results", tmp_path / "out", figures=False)["cells"]
    assert c["paper_mean"] is None and c["diff_to_paper"] is None
    assert "train_subset=1000" in c["protocol"]


def test_runs_scored_at_the_best_and_the_last_epoch_are_separate_labelled_cells(
    tmp_path: Path,
) -> None:
    for seed, checkpoint in enumerate(("best", "last", "best")):
        run_dir = write_result(tmp_path / "results", "mnist", "iwae", seed, -100.0 - seed)
        result = json.loads((run_dir / "result.json").read_text())
        result["protocol_config"]["validation"] = {"size": 2000, "every_n_epochs": 5}
        result["checkpoint"] = checkpoint
        (run_dir / "result.json").write_text(json.dumps(result))
    best, last = aggregate(tmp_path / "results", tmp_path / "out", figures=False)["cells"]
    assert best["protocol"].endswith("val_size=2000, best validation epoch")
    assert best["seeds"] == [0, 2] and best["mean"] == pytest.approx(-101.0)
    assert last["protocol"].endswith("val_size=2000, last epoch") and last["seeds"] == [1]
    assert best["protocol_id"] != last["protocol_id"]


def test_incomplete_cells_are_marked(results: Path, tmp_path: Path) -> None:
    payload = aggregate(results, tmp_path / "out", figures=False)
    assert cell(payload, "mnist", "iwae")["complete"] is True
    assert cell(payload, "mnist", "iwaerrec")["complete"] is False
    single = cell(payload, "omniglot", "iwae")
    assert single["n"] == 1 and single["se"] is None and not single["complete"]
    markdown = (tmp_path / "out" / "table1.md").read_text()
    assert "| iwaerrec (k=25, local, s0=0.05) | 3* |" in markdown
    assert "| iwae (k=25) | 5 |" in markdown


def test_protocols_are_never_averaged_together(results: Path, tmp_path: Path) -> None:
    payload = aggregate(results, tmp_path / "out", figures=False)
    dynamic, static = cell(payload, "mnist", "iwae"), cell(payload, "mnist", "iwae", "static")
    assert dynamic["n"] == 5 and static["n"] == 1 and static["mean"] == -87.0
    assert dynamic["protocol_id"] != static["protocol_id"]
    assert len({c["protocol_id"] for c in payload["cells"]}) == 3
    markdown = (tmp_path / "out" / "table1.md").read_text()
    assert markdown.count("## mnist:") == 2


def test_welch_t_test_matches_scipy_and_the_formula(results: Path, tmp_path: Path) -> None:
    payload = aggregate(results, tmp_path / "out", figures=False)
    comparisons = {
        c["model"]: c
        for c in payload["comparisons"]
        if c["dataset"] == "mnist" and c["baseline"] == "iwae"
    }
    iwaer = comparisons["iwaer"]
    assert iwaer["difference"] == pytest.approx(statistics.fmean(IWAER) - statistics.fmean(IWAE))
    assert iwaer["p_value"] == pytest.approx(
        stats.ttest_ind(IWAER, IWAE, equal_var=False).pvalue, rel=1e-12
    )
    # Welch by hand: t = d / sqrt(v1/n1 + v2/n2), Welch-Satterthwaite degrees of freedom.
    v1, v2 = statistics.variance(IWAER) / 5, statistics.variance(IWAE) / 5
    t = iwaer["difference"] / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / 4 + v2**2 / 4)
    assert iwaer["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert iwaer["paper_difference"] == pytest.approx(-94.346 + 95.182)
    assert comparisons["iwaerrec"]["n"] == 3
    (between,) = [c for c in payload["comparisons"] if c["baseline"] == "iwaerrec"]
    assert between["model"] == "iwaer" and between["n_baseline"] == 3
    assert between["difference"] == pytest.approx(
        statistics.fmean(IWAER) - statistics.fmean(IWAERREC)
    )
    assert between["paper_difference"] == pytest.approx(-94.346 + 94.709)


def test_ordering_of_the_paper_is_checked(results: Path, tmp_path: Path) -> None:
    payload = aggregate(results, tmp_path / "out", figures=False)
    (mnist,) = [o for o in payload["ordering"] if o["dataset"] == "mnist"]
    # IWAER (-99.02) > IWAERrec (-99.73) > IWAE (-100.0): holds, but IWAERrec is incomplete.
    assert mnist["holds"] is True and mnist["complete"] is False
    write_result(results, "mnist", "iwaerrec", 3, -120.0)
    payload = aggregate(results, tmp_path / "out", figures=False)
    (mnist,) = [o for o in payload["ordering"] if o["dataset"] == "mnist"]
    assert mnist["holds"] is False
    assert "does not hold" in (tmp_path / "out" / "table1.md").read_text()


def test_paired_differences_over_test_points_are_exact(tmp_path: Path) -> None:
    """Per point: the mean over a model's seeds, minus the baseline's; then mean, SE over
    points and the share of points where the model is higher."""
    root = tmp_path / "results"
    iwae = [[-100.0, -90.0, -80.0, -70.0], [-102.0, -88.0, -80.0, -74.0]]
    iwaer = [[-99.0, -91.0, -79.0, -69.0], [-99.0, -89.0, -78.0, -69.0], [-99.0, -88, -77, -72]]
    for model, runs in (("iwae", iwae), ("iwaer", iwaer)):
        for seed, values in enumerate(runs):
            write_result(root, "mnist", model, seed, statistics.fmean(values), per_point=values)
    payload = aggregate(root, tmp_path / "out", figures=False)
    (x,) = payload["comparisons"]
    f64 = torch.float64
    d = torch.tensor(iwaer, dtype=f64).mean(0) - torch.tensor(iwae, dtype=f64).mean(0)
    assert x["paired"]["mean"] == pytest.approx(d.mean().item(), abs=1e-12)
    assert x["paired"]["mean"] == pytest.approx(x["difference"], abs=1e-12)
    assert x["paired"]["se"] == pytest.approx(statistics.stdev(d.tolist()) / 2, abs=1e-12)
    assert x["paired"]["fraction_better"] == 0.75 and x["paired"]["n_points"] == 4
    assert "75.0%" in (tmp_path / "out" / "table1.md").read_text()


def test_runs_without_per_point_files_have_no_paired_comparison(
    results: Path, tmp_path: Path
) -> None:
    payload = aggregate(results, tmp_path / "out", figures=False)
    assert all(x["paired"] is None for x in payload["comparisons"])


def test_ordering_uses_the_variant_with_most_seeds(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for seed in range(5):
        write_result(root, "mnist", "iwae", seed, -100.0 - seed)
        write_result(root, "mnist", "iwaerrec", seed, -99.0 - seed)
        write_result(root, "mnist", "iwaer", seed, -98.0 - seed)
    for seed in range(3):  # a worse initial std with fewer seeds: not the one compared
        write_result(root, "mnist", "iwaer", seed, -130.0, init_std=0.5)
    payload = aggregate(root, tmp_path / "out", figures=False)
    (o,) = payload["ordering"]
    assert o["holds"] is True and o["complete"] is True
    assert o["variants"][0] == "iwaer (k=25, local, s0=0.05)"
    iwaer_rows = [x for x in payload["comparisons"] if x["model"] == "iwaer"]
    assert len(iwaer_rows) == 2 * 2  # both variants against IWAE and against IWAERrec
    assert (
        "Variants compared: iwaer (k=25, local, s0=0.05)"
        in (tmp_path / "out" / "table1.md").read_text()
    )


def test_corrupt_and_partial_files_are_skipped_with_a_warning(
    results: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = results / "mnist" / "iwae" / "broken"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text('{"dataset": "mnist", "model": "iw')
    partial = results / "mnist" / "iwae" / "partial"
    partial.mkdir()
    (partial / "result.json").write_text(json.dumps({"dataset": "mnist", "model": "iwae"}))
    nan = write_result(results, "mnist", "iwae", 9, float("nan"))
    with caplog.at_level(logging.WARNING):
        payload = aggregate(results, tmp_path / "out", figures=False)
    assert cell(payload, "mnist", "iwae")["n"] == 5
    messages = caplog.text
    for path in (bad, partial, nan):
        assert str(path / "result.json") in messages


def test_all_formats_and_figures_are_written(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(results), "--out", str(out)]) == 0
    for name in ("table1.md", "table1.csv", "table1.json", "table1.tex"):
        assert (out / name).stat().st_size > 100
    csv_lines = (out / "table1.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,protocol_id,protocol,model,variant,n,mean,se")
    assert len(csv_lines) == 1 + 5
    assert r"\begin{tabular}" in (out / "table1.tex").read_text()
    for name in ("table1.png", "curves.png", "samples.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_missing_results_dir_is_an_error(tmp_path: Path) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2


def test_make_reproduce_table1_offline_runs_and_tables_the_cells_it_can(
    tmp_path: Path, data_dir: Path
) -> None:
    """Offline without ``chardata.mat``: one line names it, the other cells run and are tabled
    (omniglot's images only where the sweep asks for them), and make fails naming the skipped
    cells."""
    assert not prepare(["mnist", "omniglot_images"], [f"data_dir={data_dir}"])  # fetched now
    results, empty_mirror = tmp_path / "results", tmp_path / "mirror"
    empty_mirror.mkdir()
    unreachable = "http://127.0.0.1:9"  # every download refused at once
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update(
        IWAER_DATA_DIR=str(data_dir),
        IWAER_DATA_MIRROR=str(empty_mirror),
        HTTP_PROXY=unreachable,
        HTTPS_PROXY=unreachable,
    )
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "reproduce-table1",
            "PRESET=smoke",
            "SEEDS=0-1",
            "DATASETS=mnist,omniglot,omniglot_images",
            f"RESULTS={results}",
            "ARGS=trainer.enable_progress_bar=false eval.progress=false eval.n_samples=20",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode != 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "data ok: mnist\ndata ok: omniglot_images\n" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: chardata.mat is not in {data_dir / 'omniglot'}")
    assert "DATASETS=mnist,omniglot_images" in errors[0]
    assert errors[1] == (
        "error: skipped 3 cells, their data are missing (see above): "
        "omniglot/iwae, omniglot/iwaer, omniglot/iwaerrec"
    )
    assert len(list(results.rglob("result.json"))) == 12
    payload = json.loads((results / "table1.json").read_text())
    assert {(c["dataset"], c["model"], c["n"]) for c in payload["cells"]} == {
        (d, m, 2) for d in ("mnist", "omniglot") for m in ("iwae", "iwaer", "iwaerrec")
    }
    assert {o["dataset"] for o in payload["ordering"]} == {"mnist", "omniglot"}
    for name in ("table1.png", "curves.png", "samples.png"):
        assert (results / name).read_bytes().startswith(PNG_MAGIC)
