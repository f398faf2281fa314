"""Figures of a Table 1 reproduction: ``table1.png``, ``curves.png`` and ``samples.png``."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt

from benchmark.runs.metrics_log import metric_curve
from benchmark.table.seed_stats import mean_and_se

if TYPE_CHECKING:
    from benchmark.table.aggregate import Cell

Groups = dict[tuple[str, str], list["Cell"]]  # cells by (data set, protocol id)


def protocol_title(cell: Cell, width: int = 48) -> str:
    """The data set and its protocol in words (binarization, epochs, S, network, subsets), then
    the protocol id, wrapped to fit a panel."""
    text = f"{cell.dataset}: {cell.protocol_label} [{cell.protocol_id}]"
    return "\n".join(textwrap.wrap(text, width))


def table1_figure(grouped: Groups, path: Path) -> None:
    """Per data set and protocol: each model's mean ± SE beside the paper's value."""
    fig, axes = plt.subplots(
        1, max(len(grouped), 1), figsize=(4.5 * max(len(grouped), 1), 4), squeeze=False
    )
    for ax, members in zip(axes[0], grouped.values(), strict=False):
        xs = range(len(members))
        ax.errorbar(
            xs,
            [c.mean for c in members],
            yerr=[c.se or 0.0 for c in members],
            fmt="o",
            capsize=4,
            label="ours (mean ± SE)",
        )
        paper = [(i, c.paper) for i, c in enumerate(members) if c.paper]
        if paper:
            ax.errorbar(
                [i + 0.15 for i, _ in paper],
                [p[0] for _, p in paper],
                yerr=[p[1] for _, p in paper],
                fmt="s",
                capsize=4,
                color="tab:red",
                label="paper",
            )
        ax.set_xticks(list(xs), [f"{c.model}\nn={c.n}" for c in members])
        ax.set_title(protocol_title(members[0]), fontsize=8)
        ax.set_ylabel("test log-likelihood (nats)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean_band(
    curves: list[tuple[list[int], list[float]]],
) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: mean over the runs that logged it, and its standard error (0 for one run)."""
    by_epoch: dict[int, list[float]] = {}
    for epochs, values in curves:
        for e, v in zip(epochs, values, strict=True):
            by_epoch.setdefault(e, []).append(v)
    epochs = sorted(by_epoch)
    means, ses = [], []
    for e in epochs:
        m, se = mean_and_se(by_epoch[e])
        means.append(m)
        ses.append(se or 0.0)
    return epochs, means, ses


def plot_band(
    ax: plt.Axes,
    epochs: list[int],
    means: list[float],
    ses: list[float],
    color: str,
    label: str,
    style: str = "-",
) -> None:
    """A mean curve with its ± SE band (dots on the points when there are few)."""
    marker = "." if len(epochs) < 25 else None
    ax.plot(epochs, means, style, color=color, marker=marker, label=label)
    lower = [m - s for m, s in zip(means, ses, strict=True)]
    upper = [m + s for m, s in zip(means, ses, strict=True)]
    ax.fill_between(epochs, lower, upper, color=color, alpha=0.2)


def curves_figure(grouped: Groups, path: Path) -> None:
    """Training bound (solid) and test bound (dashed) against epoch, mean ± SE over seeds."""
    fig, axes = plt.subplots(
        1, max(len(grouped), 1), figsize=(5 * max(len(grouped), 1), 4), squeeze=False
    )
    for ax, members in zip(axes[0], grouped.values(), strict=False):
        for i, cell in enumerate(members):
            color = f"C{i}"
            for metric, style in (("train/bound", "-"), ("test/bound", "--")):
                curves = [metric_curve(Path(d), metric) for d in cell.run_dirs]
                curves = [c for c in curves if c[0]]
                if not curves:
                    continue
                epochs, means, ses = _mean_band(curves)
                plot_band(
                    ax, epochs, means, ses, color, f"{cell.model} {metric.split('/')[0]}", style
                )
        ax.set_title(protocol_title(members[0], width=56), fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel("bound L_k (nats)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def samples_figure(cells: list[Cell], path: Path) -> None:
    """The sample grid of one trained model (lowest seed) per data set, protocol and model."""
    shown = [(c, Path(c.run_dirs[c.seeds.index(min(c.seeds))]) / "samples.png") for c in cells]
    shown = [(c, p) for c, p in shown if p.is_file()]
    cols = max(1, min(len(shown), 4))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 4.0 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, (cell, png) in zip(axes.flat, shown, strict=False):
        ax.imshow(mpimg.imread(png), cmap="gray")
        ax.set_title(
            f"{cell.model}, seed {min(cell.seeds)}\n{protocol_title(cell, width=40)}", fontsize=7
        )
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no samples.png in the run directories", ha="center")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def draw_all(grouped: Groups, out_dir: Path) -> None:
    """``table1.png``, ``curves.png`` and ``samples.png`` in ``out_dir``."""
    table1_figure(grouped, out_dir / "table1.png")
    curves_figure(grouped, out_dir / "curves.png")
    samples_figure([c for members in grouped.values() for c in members], out_dir / "samples.png")
