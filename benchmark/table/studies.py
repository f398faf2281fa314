"""Trajectory reports of a study: how the test log-likelihood moves during training.

    python -m benchmark.table.studies RESULTS_DIR [--out DIR] [--title TEXT] [--paper-lines]

Reads the runs under ``RESULTS_DIR`` (as :mod:`benchmark.table.aggregate` groups them: one cell per
data set, protocol and model variant) and writes ``trajectories.{md,png}`` (to ``--out``,
default ``RESULTS_DIR``): per
cell, mean ± SE over seeds of ``test/ll_monitor`` (the S-sample log-likelihood on the fixed
monitor subset of the test split) against epoch, its best value and epoch, the final
S-sample estimate of ``result.json``, and the generalization gap at the last epoch,
``train/bound - test/bound`` (both L_k with the run's k: on the training minibatches, averaged
over the epoch, and on the monitor points). Curves are labelled by what differs between the
cells of a data set (the protocol in the protocol study, the model variant in a model
comparison); ``--paper-lines`` draws the paper's Table 1 value of each model shown.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scipy import stats

from benchmark.runs.metrics_log import read_epoch_metrics
from benchmark.table.aggregate import (
    PAPER_TABLE1,
    Cell,
    build_cells,
    load_results,
    paired_difference,
)
from benchmark.table.figures import plot_band
from benchmark.table.seed_stats import mean_and_se

MONITOR = "test/ll_monitor"


@dataclass
class MeanSE:
    mean: float
    se: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> MeanSE:
        return cls(*mean_and_se(values), len(values))

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if self.se is None else f"{self.mean:.2f} ± {self.se:.2f}"


@dataclass
class Trajectory:
    """One cell's curves over its seeds: ``{epoch (1-based): MeanSE}`` per metric, and the
    per-seed best of the monitor with its epoch."""

    cell: Cell
    label: str
    curves: dict[str, dict[int, MeanSE]]
    best: MeanSE | None
    best_epoch: MeanSE | None
    final: MeanSE
    gap: MeanSE | None
    monitor: str


def monitor_description(cell: Cell) -> str:
    """How test/ll_monitor was computed, from the config in the cell's first result.json."""
    config = json.loads((Path(cell.run_dirs[0]) / "result.json").read_text())["config"]["eval"]
    if not config.get("test_ll_every_n_epochs"):
        return "no test/ll_monitor"
    return (
        f"test/ll_monitor: S={config['test_ll_samples']} on {config['test_ll_points']:,} fixed "
        f"random test points, every {config['test_ll_every_n_epochs']} epochs"
    )


def _per_seed_metrics(cell: Cell) -> list[dict[int, dict[str, float]]]:
    return [read_epoch_metrics(Path(d)) for d in cell.run_dirs]


def trajectory(cell: Cell, label: str) -> Trajectory:
    runs = _per_seed_metrics(cell)
    curves: dict[str, dict[int, MeanSE]] = {}
    for metric in (MONITOR, "train/bound", "test/bound"):
        epochs = sorted({e for run in runs for e, values in run.items() if metric in values})
        curve = {}
        for e in epochs:
            values = [run[e][metric] for run in runs if metric in run.get(e, {})]
            curve[e + 1] = MeanSE.of(values)
        curves[metric] = curve
    bests, best_epochs, gaps = [], [], []
    for run in runs:
        monitored = [(values[MONITOR], e + 1) for e, values in run.items() if MONITOR in values]
        if monitored:
            value, epoch = max(monitored)
            bests.append(value)
            best_epochs.append(float(epoch))
        both = [e for e, v in run.items() if "train/bound" in v and "test/bound" in v]
        if both:
            last = run[max(both)]
            gaps.append(last["train/bound"] - last["test/bound"])
    return Trajectory(
        cell,
        label,
        curves,
        MeanSE.of(bests) if bests else None,
        MeanSE.of(best_epochs) if best_epochs else None,
        MeanSE.of(cell.values),
        MeanSE.of(gaps) if gaps else None,
        monitor_description(cell),
    )


def distinct_parts(labels: list[str]) -> list[str]:
    """Each comma-separated label without the parts all labels share ("dynamic binarization,
    30 epochs" and "static binarization, 30 epochs" -> "dynamic binarization", ...)."""
    parts = [label.split(", ") for label in labels]
    common = set.intersection(*(set(p) for p in parts)) if parts else set()
    return [
        ", ".join(x for x in p if x not in common) or label
        for p, label in zip(parts, labels, strict=True)
    ]


def trajectories(results_dir: Path) -> dict[str, list[Trajectory]]:
    """Per data set, the trajectory of every cell, labelled by what differs between them:
    the model variant, the protocol (its distinct parts), or both."""
    by_dataset: dict[str, list[Cell]] = {}
    for cell in build_cells(load_results(results_dir)):
        by_dataset.setdefault(cell.dataset, []).append(cell)
    out = {}
    for dataset, cells in by_dataset.items():
        protocols = distinct_parts([c.protocol_label for c in cells])
        if len({c.protocol_id for c in cells}) == 1:
            labels = [c.variant for c in cells]
        elif len({c.variant for c in cells}) == 1:
            labels = protocols
        else:
            labels = [f"{c.variant}, {p}" for c, p in zip(cells, protocols, strict=True)]
        out[dataset] = [trajectory(c, label) for c, label in zip(cells, labels, strict=True)]
    return out


def _common(labels: set[str], otherwise: str) -> str:
    return labels.pop() if len(labels) == 1 else otherwise


def _shared_protocol(members: list[Trajectory]) -> str:
    """The protocol parts all cells of a data set share (all of it, for a single protocol)."""
    parts = [t.cell.protocol_label.split(", ") for t in members]
    return ", ".join(x for x in parts[0] if all(x in p for p in parts[1:]))


def _common_monitor(members: list[Trajectory]) -> str:
    return _common({t.monitor for t in members}, "test/ll_monitor as configured per run")


def figure(studies: dict[str, list[Trajectory]], path: Path, title: str, paper_lines: bool) -> None:
    """Per data set: the monitored test log-likelihood (left; x: each cell's final S-sample
    estimate of ``result.json`` at its last epoch) and the training bound (right) against
    epoch, mean ± SE band over seeds."""
    fig, axes = plt.subplots(len(studies), 2, figsize=(12, 4.4 * len(studies)), squeeze=False)
    for (dataset, members), (ax_test, ax_train) in zip(studies.items(), axes, strict=True):
        for i, t in enumerate(members):
            color = f"C{i}"
            for ax, metric in ((ax_test, MONITOR), (ax_train, "train/bound")):
                curve = t.curves[metric]
                if not curve:
                    continue
                epochs = sorted(curve)
                means = [curve[e].mean for e in epochs]
                ses = [curve[e].se or 0.0 for e in epochs]
                plot_band(ax, epochs, means, ses, color, f"{t.label} (n={t.final.n})")
            if t.curves["train/bound"]:
                last = max(t.curves["train/bound"])
                ax_test.plot([last], [t.final.mean], "x", color=color, markersize=8)
        models = sorted({t.cell.model for t in members}) if paper_lines else []
        for model in models:
            if paper := PAPER_TABLE1.get((dataset, model)):
                ax_test.axhline(
                    paper[0],
                    color="black",
                    linestyle=":",
                    linewidth=1.2,
                    label=f"paper {model}, 500 epochs ({paper[0]:.2f})",
                )
        ax_test.plot([], [], "x", color="gray", label="final estimate (result.json)")
        # Show where the curves peak and end, and of the first epochs' steep rise only what
        # fits in 1.5 times that range below it.
        monitored = [v.mean for t in members for v in t.curves[MONITOR].values()]
        ends = [t.final.mean for t in members]
        ends += [
            t.curves[MONITOR][max(t.curves[MONITOR])].mean for t in members if t.curves[MONITOR]
        ]
        top = max([*ends, *(t.best.mean for t in members if t.best is not None)])
        low = min(ends) - 3.0 - 1.5 * (top - min(ends))
        ax_test.set_ylim(max(low, min([*monitored, *ends]) - 0.5), top + 1.0)
        protocol = _shared_protocol(members)
        ax_test.set_title(
            f"{dataset}: test log-likelihood during training\n{protocol}\n"
            f"{_common_monitor(members)}",
            fontsize=8,
        )
        ax_test.set_ylabel("test/ll_monitor (nats)")
        ax_train.set_title(f"{dataset}: training bound L_k (epoch mean)\n{protocol}", fontsize=8)
        ax_train.set_ylabel("train/bound (nats)")
        for ax in (ax_test, ax_train):
            ax.set_xlabel("epoch")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TEST_SET_KEYS = ("binarization", "test_binarization", "omniglot_source", "test_subset")


def test_set(cell: Cell) -> tuple[object, ...]:
    """What fixes a cell's test points and estimator: binarization, source, subset, S."""
    protocol = json.loads((Path(cell.run_dirs[0]) / "result.json").read_text())["protocol"]
    return (*(protocol.get(k) for k in TEST_SET_KEYS), protocol["eval_samples"])


def against_best(members: list[Trajectory]) -> list[str]:
    """Markdown rows: every cell's final estimate minus the best cell's among those scored on
    the same test points with the same S (whatever their epochs or training set), over seeds
    (Welch) and paired over test points."""
    rows = []
    by_test_set: dict[tuple[object, ...], list[Trajectory]] = {}
    for t in members:
        by_test_set.setdefault(test_set(t.cell), []).append(t)
    for group in by_test_set.values():
        if len(group) < 2:
            continue
        best = max(group, key=lambda t: t.final.mean)
        for t in (t for t in group if t is not best):
            diff = f"{t.final.mean - best.final.mean:+.2f}"
            p_value = "—"
            if t.final.se is not None and best.final.se is not None:
                diff += f" ± {math.hypot(t.final.se, best.final.se):.2f}"
                welch = stats.ttest_ind(t.cell.values, best.cell.values, equal_var=False)
                p_value = f"{welch.pvalue:.2g}"
            pair = paired_difference(t.cell, best.cell)
            paired = f"{pair.mean:+.2f} ± {pair.se:.2f}" if pair else "—"
            higher = f"{100 * pair.fraction_better:.1f}%" if pair else "—"
            rows.append(f"| {t.label} - {best.label} | {diff} | {p_value} | {paired} | {higher} |")
    return rows


def _fmt(value: MeanSE | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if value.se is None:
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.se:.{digits}f}"


def render_markdown(studies: dict[str, list[Trajectory]], title: str, command: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Generated by `{command}` from the run files below this directory. Mean ± SE over "
        "seeds. *test/ll_monitor*: the S-sample log-likelihood on the fixed monitor subset of "
        "the test split, logged during training; *final*: the S-sample estimate of "
        "`result.json` (its own S and test points, in the protocol); *gap*: train/bound - "
        "test/bound at the last epoch (both L_k).",
    ]
    for dataset, members in studies.items():
        lines += [
            "",
            f"## {dataset}: {_shared_protocol(members)}",
            "",
            f"{_common_monitor(members)}.",
            "",
            "| run | n | best test/ll_monitor | at epoch | last test/ll_monitor | final "
            "| train/bound, last epoch | gap |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for t in members:
            monitor, train = t.curves[MONITOR], t.curves["train/bound"]
            last = monitor[max(monitor)] if monitor else None
            last_train = train[max(train)] if train else None
            lines.append(
                f"| {t.label} | {t.final.n} | {_fmt(t.best)} | {_fmt(t.best_epoch, 0)} | "
                f"{_fmt(last)} | {_fmt(t.final)} | {_fmt(last_train)} | {_fmt(t.gap)} |"
            )
        rows = against_best(members)
        if rows:
            lines += [
                "",
                "Final estimates against the best one on the same test points (any epochs):",
                "",
                "| comparison | over seeds | Welch p | paired over test points | points higher |",
                "| --- | --- | --- | --- | --- |",
                *rows,
            ]
        epochs = sorted({e for t in members for e in t.curves[MONITOR]})
        if epochs:
            lines += [
                "",
                "test/ll_monitor by epoch:",
                "",
                "| epoch | " + " | ".join(t.label for t in members) + " |",
                "| --- |" + " --- |" * len(members),
            ]
            for e in epochs:
                cells = [_fmt(t.curves[MONITOR].get(e)) for t in members]
                lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(
    results_dir: Path,
    out_dir: Path,
    title: str,
    paper_lines: bool = False,
    figures: bool = True,
) -> dict[str, list[Trajectory]]:
    """Write ``trajectories.md`` (and ``trajectories.png``) for the runs under ``results_dir``
    into ``out_dir``."""
    studies = trajectories(results_dir)
    command = shlex.join(
        ["python", "-m", "benchmark.table.studies", str(results_dir), "--title", title]
    )
    if paper_lines:
        command += " --paper-lines"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trajectories.md").write_text(render_markdown(studies, title, command))
    if studies and figures:
        figure(studies, out_dir / "trajectories.png", title, paper_lines)
    return studies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: the results directory")
    parser.add_argument("--title", default=None, help="default: the directory's name")
    parser.add_argument("--paper-lines", action="store_true")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir} is not a directory", file=sys.stderr)
        return 2
    title = args.title or f"Trajectories: {args.results_dir.name}"
    out = args.out or args.results_dir
    studies = report(args.results_dir, out, title, args.paper_lines, not args.no_figures)
    if not studies:
        print(f"error: no finished runs under {args.results_dir}", file=sys.stderr)
        return 1
    print((out / "trajectories.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
