"""Table 1: mean ± standard error over seeds per data set, protocol and model, beside the paper.

    python -m benchmark.table [results_dir] [--out DIR] [--no-figures]

Reads every ``result.json`` under ``results_dir`` (default ``results/``) and writes
``table1.{md,csv,json,tex}`` (and the figures, see figures.py) to ``--out`` (default: the
results directory). Results of different protocols are never averaged together: a *protocol*
is everything in the run's ``protocol_config`` except the model section, and within a
protocol each distinct model section (name, k, weight sampling, initial std) is its own row.

Each model is compared with IWAE two ways: over seeds (Welch's t-test on the per-seed means:
is the difference larger than training's seed-to-seed variation?) and paired over test points
(the per-point estimates of each run's ``per_point_file``, averaged over each model's seeds,
then differenced point by point: how large and how consistent is it across the test set?).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import Tensor

from benchmark.table.figures import draw_all
from benchmark.table.seed_stats import mean_and_se

log = logging.getLogger(__name__)

PER_POINT_FILE = "test_ll_per_point.pt"  # of results that do not name theirs
FULL_SEEDS = 5
BASELINE = "iwae"
PAPER_ORDER = ("iwaer", "iwaerrec", "iwae")  # the paper's claim: IWAER > IWAERrec > IWAE
# Table 1 of the paper: (mean, standard error) of the test log-likelihood in nats.
PAPER_TABLE1: dict[tuple[str, str], tuple[float, float]] = {
    ("mnist", "iwae"): (-95.182, 0.022),
    ("mnist", "iwaer"): (-94.346, 0.025),
    ("mnist", "iwaerrec"): (-94.709, 0.025),
    ("omniglot", "iwae"): (-118.771, 0.035),
    ("omniglot", "iwaer"): (-118.540, 0.049),
    ("omniglot", "iwaerrec"): (-118.647, 0.031),
}
REQUIRED = ("dataset", "model", "seed", "test_ll", "protocol", "protocol_config")
CSV_FIELDS = (
    "dataset",
    "protocol_id",
    "protocol",
    "model",
    "variant",
    "n",
    "mean",
    "se",
    "complete",
    "paper_mean",
    "paper_se",
    "diff_to_paper",
    "seeds",
)


def short_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


@dataclass
class Cell:
    """All seeds of one model variant under one protocol on one data set."""

    dataset: str
    protocol_id: str
    protocol_label: str
    model: str
    variant: str
    seeds: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    per_point_files: list[str] = field(default_factory=list)  # the runs' test_ll per point
    full_data: bool = True  # all training and test images, as the paper

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean_and_se(self.values)[0]

    @property
    def se(self) -> float | None:
        """Sample standard deviation (ddof = 1) over seeds divided by sqrt(n)."""
        return mean_and_se(self.values)[1]

    @property
    def complete(self) -> bool:
        return self.n >= FULL_SEEDS

    @property
    def paper(self) -> tuple[float, float] | None:
        """The paper's value, for runs on the full data sets only (a subset of the training
        or test images is another experiment)."""
        return PAPER_TABLE1.get((self.dataset, self.model)) if self.full_data else None

    def row(self) -> dict[str, Any]:
        paper = self.paper
        return {
            "dataset": self.dataset,
            "protocol_id": self.protocol_id,
            "protocol": self.protocol_label,
            "model": self.model,
            "variant": self.variant,
            "n": self.n,
            "mean": self.mean,
            "se": self.se,
            "complete": self.complete,
            "paper_mean": paper[0] if paper else None,
            "paper_se": paper[1] if paper else None,
            "diff_to_paper": self.mean - paper[0] if paper else None,
            "seeds": sorted(self.seeds),
        }


@dataclass
class PairedDifference:
    """``d_i = mean_seeds log p_A(x_i) - mean_seeds log p_B(x_i)`` over the test points i:
    its mean (the difference of the cell means when every seed has every point), standard
    error over points, and the fraction of points where A is higher."""

    mean: float
    se: float
    fraction_better: float
    n_points: int


@dataclass
class Comparison:
    """``model - baseline`` within one data set and protocol, with Welch's t-test."""

    dataset: str
    protocol_id: str
    model: str
    variant: str
    baseline: str
    baseline_variant: str
    difference: float
    se: float | None
    p_value: float | None
    n: int
    n_baseline: int
    paper_difference: float | None
    paired: PairedDifference | None = None


def load_results(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable ``result.json`` under ``results_dir``; others are skipped with a warning."""
    found = []
    for path in sorted(results_dir.rglob("result.json")):
        try:
            result = json.loads(path.read_text())
            missing = [key for key in REQUIRED if key not in result]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            if not isinstance(result["test_ll"], int | float) or not math.isfinite(
                result["test_ll"]
            ):
                raise ValueError(f"test_ll is {result['test_ll']!r}")
        except (OSError, ValueError) as err:
            log.warning("skipping %s: not a complete result (%s)", path, err)
            continue
        found.append((path, result))
    return found


def architecture_label(hidden: list[Any], latent: int | list[int]) -> str:
    """``400-20`` for one stochastic layer; ``200-200-100/100-100-50`` for one list of
    widths and one latent size per stochastic layer."""
    if isinstance(latent, list):
        return "/".join(architecture_label(h, z) for h, z in zip(hidden, latent, strict=True))
    return "-".join(str(width) for width in [*hidden, latent])


def protocol_label(result: dict[str, Any]) -> str:
    p = result["protocol"]
    parts = [
        f"{p['binarization']} binarization",
        f"{p['epochs']} epochs",
        f"S={p['eval_samples']}",
        f"{architecture_label(p['hidden'], p['latent'])} {p['nonlinearity']}",
    ]
    if p.get("omniglot_source"):
        parts.append(f"source={p['omniglot_source']}")
    for key in ("train_subset", "test_subset"):
        if p.get(key):
            parts.append(f"{key}={p[key]}")
    validation = result["protocol_config"].get("validation")
    if validation:
        epoch = "best validation" if result.get("checkpoint") == "best" else "last"
        parts.append(f"val_size={validation['size']}, {epoch} epoch")
    return ", ".join(parts)


def table_protocol(result: dict[str, Any]) -> dict[str, Any]:
    """What a run's cell shares with the others of its table section: the ``protocol_config``
    without the model section (so models are compared), and with a validation split, which
    checkpoint ``test_ll`` scores (best and last are never pooled)."""
    protocol = {k: v for k, v in result["protocol_config"].items() if k != "model"}
    if "validation" in protocol:
        protocol["checkpoint"] = result.get("checkpoint", "last")
    return protocol


def variant_label(result: dict[str, Any]) -> str:
    model = result["protocol_config"]["model"]
    label = f"{model['name']} (k={model['k']}"
    if model.get("random_encoder") or model.get("random_decoder"):
        label += f", {model['weight_sampling']}, s0={model['init_std']:g}"
    return label + ")"


def build_cells(results: list[tuple[Path, dict[str, Any]]]) -> list[Cell]:
    cells: dict[tuple[str, str, str], Cell] = {}
    for path, result in results:
        protocol_id = short_hash(table_protocol(result))
        variant = variant_label(result)
        key = (result["dataset"], protocol_id, variant)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(
                result["dataset"],
                protocol_id,
                protocol_label(result),
                result["model"],
                variant,
                full_data=not any(
                    result["protocol"].get(k) for k in ("train_subset", "test_subset")
                ),
            )
        if result["seed"] in cell.seeds:
            log.warning("skipping %s: seed %s of %s counted already", path, result["seed"], variant)
            continue
        cell.seeds.append(result["seed"])
        cell.values.append(float(result["test_ll"]))
        cell.run_dirs.append(str(path.parent))
        cell.per_point_files.append(str(path.parent / result.get("per_point_file", PER_POINT_FILE)))
    order = {name: i for i, name in enumerate(("vae", "iwae", "iwaerrec", "iwaer"))}
    return sorted(
        cells.values(),
        key=lambda c: (
            c.dataset,
            c.protocol_label,
            c.protocol_id,
            order.get(c.model, 99),
            c.variant,
        ),
    )


def groups(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    grouped: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for cell in cells:
        grouped[(cell.dataset, cell.protocol_id)].append(cell)
    return dict(grouped)


def seed_mean_per_point(cell: Cell) -> Tensor | None:
    """The per-point estimates ``[n_test]`` averaged over the cell's seeds; None if a run has
    no readable per-point file or the runs' test sets differ in size."""
    values = []
    for path in map(Path, cell.per_point_files):
        try:
            values.append(torch.load(path, weights_only=True).double())
        except (OSError, RuntimeError, EOFError) as err:
            log.warning(
                "no paired comparison for %s: %s is unreadable (%s)", cell.variant, path, err
            )
            return None
    if len({v.shape for v in values}) != 1:
        return None
    return torch.stack(values).mean(0)


def paired_difference(cell: Cell, base: Cell) -> PairedDifference | None:
    a, b = seed_mean_per_point(cell), seed_mean_per_point(base)
    if a is None or b is None or a.shape != b.shape or a.numel() < 2:
        return None
    d = a - b
    return PairedDifference(
        mean=d.mean().item(),
        se=d.std().item() / math.sqrt(d.numel()),
        fraction_better=(d > 0).double().mean().item(),
        n_points=d.numel(),
    )


def baselines_of(model: str) -> tuple[str, ...]:
    """The models a model is compared with: those the paper ranks below it (IWAER against
    IWAERrec and IWAE, IWAERrec against IWAE), and IWAE for any other model but the VAE."""
    if model in PAPER_ORDER:
        return PAPER_ORDER[PAPER_ORDER.index(model) + 1 :]
    return () if model == "vae" else (BASELINE,)


def compare(cells: list[Cell]) -> list[Comparison]:
    """Within each group, every variant against every variant of each of its baselines."""
    out = []
    for (dataset, protocol_id), members in groups(cells).items():
        for cell in members:
            for base in (c for c in members if c.model in baselines_of(cell.model)):
                se = None
                p_value = None
                if cell.n >= 2 and base.n >= 2:
                    se = math.hypot(cell.se, base.se)
                    p_value = float(
                        stats.ttest_ind(cell.values, base.values, equal_var=False).pvalue
                    )
                paper, paper_base = cell.paper, base.paper
                out.append(
                    Comparison(
                        dataset,
                        protocol_id,
                        cell.model,
                        cell.variant,
                        base.model,
                        base.variant,
                        cell.mean - base.mean,
                        se,
                        p_value,
                        cell.n,
                        base.n,
                        paper[0] - paper_base[0] if paper and paper_base else None,
                        paired_difference(cell, base),
                    )
                )
    return out


def ordering(cells: list[Cell]) -> list[dict[str, Any]]:
    """Whether the paper's IWAER > IWAERrec > IWAE holds in each group (by mean). Where a
    model has several variants (say, a sweep of its initial std), the one with the most seeds
    stands for it (ties: the first in table order), and the verdict names the variants used."""
    out = []
    for (dataset, protocol_id), members in groups(cells).items():
        by_model: dict[str, list[Cell]] = defaultdict(list)
        for cell in members:
            by_model[cell.model].append(cell)
        if not all(by_model[m] for m in PAPER_ORDER):
            continue
        chain = [max(by_model[m], key=lambda c: c.n) for m in PAPER_ORDER]
        out.append(
            {
                "dataset": dataset,
                "protocol_id": protocol_id,
                "holds": all(a.mean > b.mean for a, b in itertools.pairwise(chain)),
                "complete": all(c.complete for c in chain),
                "means": {c.model: c.mean for c in chain},
                "variants": [c.variant for c in chain],
            }
        )
    return out


def _fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _pm(mean: float, se: float | None) -> str:
    return f"{mean:.3f} ± {_fmt(se)}"


def _p(p_value: float | None) -> str:
    if p_value is None:
        return "—"
    return f"{p_value:.2g}" if p_value >= 1e-4 else "<1e-4"


def render_markdown(
    cells: list[Cell], comparisons: list[Comparison], orderings: list[dict[str, Any]]
) -> str:
    lines = [
        "# Table 1: average test log-likelihood (nats, higher is better)",
        "",
        f"Mean ± standard error over seeds (sample std, ddof = 1, / sqrt(n)); cells with fewer "
        f"than {FULL_SEEDS} seeds are marked incomplete (*). Paper: Hernández-Lobato et al. "
        "(2016), Table 1. Different protocols are never averaged together.",
    ]
    for (dataset, protocol_id), members in groups(cells).items():
        lines += [
            "",
            f"## {dataset}: {members[0].protocol_label} [{protocol_id}]",
            "",
            "| model | n | ours | paper | ours - paper |",
            "| --- | --- | --- | --- | --- |",
        ]
        for c in members:
            paper = c.paper
            lines.append(
                f"| {c.variant} | {c.n}{'' if c.complete else '*'} | {_pm(c.mean, c.se)} | "
                f"{_pm(*paper) if paper else '—'} | "
                f"{_fmt(c.row()['diff_to_paper'], sign=True)} |"
            )
        group_cmp = [x for x in comparisons if (x.dataset, x.protocol_id) == (dataset, protocol_id)]
        if group_cmp:
            lines += [
                "",
                "| comparison | ours, over seeds | Welch p | paired over test points | "
                "points higher | paper |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for x in group_cmp:
                pair = x.paired
                paired = (
                    f"{_fmt(pair.mean, sign=True)} ± {_fmt(pair.se)} (n={pair.n_points})"
                    if pair
                    else "—"
                )
                higher = f"{100 * pair.fraction_better:.1f}%" if pair else "—"
                lines.append(
                    f"| {x.variant} - {x.baseline_variant} | {_fmt(x.difference, sign=True)} ± "
                    f"{_fmt(x.se)} | {_p(x.p_value)} | {paired} | {higher} | "
                    f"{_fmt(x.paper_difference, sign=True)} |"
                )
        for o in orderings:
            if (o["dataset"], o["protocol_id"]) == (dataset, protocol_id):
                verdict = "holds" if o["holds"] else "does not hold"
                note = "" if o["complete"] else " (incomplete cells)"
                lines += ["", f"Paper's ordering IWAER > IWAERrec > IWAE: **{verdict}**{note}."]
                if len(o["variants"]) < sum(c.model in PAPER_ORDER for c in members):
                    lines[-1] += f" Variants compared: {', '.join(o['variants'])}."
    if not cells:
        lines += ["", "No results found."]
    return "\n".join(lines) + "\n"


def render_csv(cells: list[Cell]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in (c.row() for c in cells):
        writer.writerow({**row, "seeds": " ".join(map(str, row["seeds"]))})
    return buffer.getvalue()


def _tex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def render_tex(cells: list[Cell]) -> str:
    lines = [r"% Table 1 reproduction (generated by benchmark.table); needs \usepackage{booktabs}"]
    for (dataset, protocol_id), members in groups(cells).items():
        lines += [
            r"\begin{tabular}{lrrr}",
            r"\toprule",
            rf"\multicolumn{{4}}{{l}}{{{_tex_escape(dataset)}: "
            rf"{_tex_escape(members[0].protocol_label)} [{protocol_id}]}} \\",
            r"\midrule",
            r"Model & $n$ & Ours & Paper \\",
            r"\midrule",
        ]
        for c in members:
            paper = c.paper
            ours = f"${c.mean:.3f} \\pm {_fmt(c.se)}$" if c.se is not None else f"${c.mean:.3f}$"
            ref = f"${paper[0]:.3f} \\pm {paper[1]:.3f}$" if paper else "--"
            mark = "" if c.complete else "$^*$"
            lines.append(f"{_tex_escape(c.variant)} & {c.n}{mark} & {ours} & {ref} \\\\")
        lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def aggregate(results_dir: Path, out_dir: Path, figures: bool = True) -> dict[str, Any]:
    """Write table1.{md,csv,json,tex} (and figures) for the results under ``results_dir``."""
    results = load_results(results_dir)
    cells = build_cells(results)
    comparisons = compare(cells)
    orderings = ordering(cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "results_dir": str(results_dir),
        "n_results": len(results),
        "cells": [c.row() for c in cells],
        "comparisons": [asdict(x) for x in comparisons],
        "ordering": orderings,
    }
    (out_dir / "table1.md").write_text(render_markdown(cells, comparisons, orderings))
    (out_dir / "table1.csv").write_text(render_csv(cells))
    (out_dir / "table1.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out_dir / "table1.tex").write_text(render_tex(cells))
    if figures:
        draw_all(groups(cells), out_dir)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", nargs="?", default="results", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: the results directory")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir} is not a directory", file=sys.stderr)
        return 2
    out = args.out or args.results_dir
    payload = aggregate(args.results_dir, out, figures=not args.no_figures)
    print((out / "table1.md").read_text())
    print(f"{payload['n_results']} results -> {out}/table1.{{md,csv,json,tex}}")
    return 0
