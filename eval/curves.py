"""Learning curves: each algorithm's policy evaluated during training, against the budget spent.

Every training run with ``eval.curve.every`` set writes ``<results>/<algorithm>/seed<S>/curve.jsonl``:
one line per evaluation on a fixed seeded subset of the validation prompts (the policy before
training, ``iterations`` 0, then every ``every`` iterations and after the last), each with the budget
spent so far (``prompts``, ``reward_model_calls``, ``preference_queries``) and the evaluation's
numbers (``rm_score`` always; ``winrate`` with the local gold judge; ``gold_quality`` on the
synthetic task).

The figure has one panel per algorithm: x is the budget the algorithm spends (reward-model queries;
preference queries for a self-play run that asks the judge instead; preference pairs consumed for an
offline algorithm such as DPO, which queries nothing), y the winrate if every run has it, else the gold
quality, else the RM score. Per x-point: the IQM over seeds with its 95% stratified-bootstrap
interval (:func:`eval.aggregate.iqm_intervals`), each seed as a thin line, the policy before
training (SFT) dotted and, when ``<results>/ceiling/seed<S>/curve.json`` exists, the task's ceiling
(the oracle summaries on the same prompts; mean over the seeds that have it) dashed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from eval.aggregate import iqm_intervals  # noqa: E402
from eval.tables import display_name  # noqa: E402
from rebel.errors import HarnessError  # noqa: E402

BUDGET = ("iterations", "prompts", "reward_model_calls", "preference_queries")
METRICS = ("winrate", "gold_quality", "rm_score")
"""y of the figure, in order of preference: the first every run reports."""
METRIC_LABELS = {
    "winrate": "winrate vs human references [%]",
    "gold_quality": "gold quality (hidden task score)",
    "rm_score": "RM score (reward model)",
}
X_LABELS = {
    "reward_model_calls": "reward-model queries",
    "preference_queries": "preference queries",
    "prompts": "preference pairs",
}
COLUMNS = ["algorithm", "iterations", "x", "x_label", "metric", "iqm", "ci_low", "ci_high", "n_seeds"]
PANEL_COLUMNS = 4


def read_curve(path: Path) -> pd.DataFrame:
    """One run's ``curve.jsonl``; one-line error naming the file when it is missing or incomplete."""
    if not path.is_file():
        raise HarnessError(
            f"'{path}' is missing (written by training runs with eval.curve.every set); "
            "rerun the train stage of that run"
        )
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    df = pd.DataFrame(lines)
    missing = [key for key in ("iterations", "prompts", "reward_model_calls", "rm_score") if key not in df]
    if not lines or missing:
        raise HarnessError(
            f"'{path}' has "
            + ("no points" if not lines else f"no '{missing[0]}'")
            + " (written by an older or interrupted run); rerun the train stage of that run"
        )
    return df


def load_curves(results: Path, algorithms: list[str], seeds: list[int]) -> pd.DataFrame:
    """Every run's curve points, long format: algorithm, seed, the budget columns, the metric columns."""
    frames = []
    for algorithm in algorithms:
        for seed in seeds:
            df = read_curve(Path(results) / algorithm / f"seed{seed}" / "curve.jsonl")
            frames.append(df.sort_values("iterations", kind="stable").assign(algorithm=algorithm, seed=seed))
    df = pd.concat(frames, ignore_index=True)
    if "preference_queries" not in df:
        df["preference_queries"] = 0
    df["preference_queries"] = df.preference_queries.fillna(0)
    metrics = [m for m in METRICS if m in df]
    return df[["algorithm", "seed", *BUDGET, *(["n_prompts"] if "n_prompts" in df else []), *metrics]]


def curve_metric(df: pd.DataFrame) -> str:
    """The figure's y: the first of ``METRICS`` that every point has."""
    for metric in METRICS:
        if metric in df and df[metric].notna().all():
            return metric
    raise HarnessError("the curve points have no 'rm_score' in every line; rerun the train stages")


def x_column(points: pd.DataFrame) -> str:
    """The budget an algorithm's curve is drawn against: reward-model queries; preference queries when it
    asks a judge instead (self-play); preference pairs (``prompts``) when it queries nothing (offline)."""
    for column in ("reward_model_calls", "preference_queries"):
        if (points[column] > 0).any():
            return column
    return "prompts"


def curve_aggregates(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per algorithm and ``iterations``: mean x over seeds, the IQM of ``metric`` over seeds and its 95%
    stratified-bootstrap interval (a single seed: the point itself), and the number of seeds."""
    rows = []
    for algorithm, points in df.groupby("algorithm", sort=False):
        x = x_column(points)
        for iterations, group in points.groupby("iterations"):
            values = group[metric].to_numpy(dtype=float)
            if len(values) == 1:
                iqm = low = high = float(values[0])
            else:
                iqm, low, high = iqm_intervals({"point": values})["point"]
            rows.append(
                {
                    "algorithm": algorithm,
                    "iterations": int(iterations),
                    "x": float(group[x].mean()),
                    "x_label": X_LABELS[x],
                    "metric": metric,
                    "iqm": iqm,
                    "ci_low": low,
                    "ci_high": high,
                    "n_seeds": len(values),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def read_ceiling(results: Path, seeds: list[int], metric: str) -> float | None:
    """The mean ``metric`` of the task's ceiling on the curve prompts over the seeds that have a
    ``<results>/ceiling/seed<S>/curve.json``; None when none has it."""
    values = []
    for seed in seeds:
        path = Path(results) / "ceiling" / f"seed{seed}" / "curve.json"
        if path.is_file():
            value = json.loads(path.read_text()).get(metric)
            if value is not None:
                values.append(float(value))
    return float(np.mean(values)) if values else None


def write_curves(cfg: dict[str, Any], results: Path, algorithms: list[str], png: Path, csv: Path) -> pd.DataFrame:
    """The learning-curve figure (PNG and PDF) and the CSV of its aggregated points; returns the points."""
    results, png, csv = Path(results), Path(png), Path(csv)
    seeds = list(cfg["seeds"])
    df = load_curves(results, algorithms, seeds)
    metric = curve_metric(df)
    points = curve_aggregates(df, metric)
    ceiling = read_ceiling(results, seeds, metric)
    csv.parent.mkdir(parents=True, exist_ok=True)
    points.round(6).to_csv(csv, index=False)

    ncols = min(PANEL_COLUMNS, len(algorithms))
    nrows = math.ceil((len(algorithms) + 1) / ncols) if len(algorithms) > ncols else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.1 * nrows + 0.9), sharey=True, squeeze=False)
    flat = axes.ravel()
    handles = {
        "IQM over seeds": Line2D([], [], color="0.3", lw=2, marker="o", ms=3),
        "95% CI (stratified bootstrap)": Patch(color="0.3", alpha=0.2, lw=0),
        "each seed": Line2D([], [], color="0.3", lw=0.8, alpha=0.6),
    }
    for ax, algorithm in zip(flat, algorithms):
        color = f"C{cfg['algorithms'].index(algorithm) % 10}" if algorithm in cfg["algorithms"] else "C0"
        agg = points[points.algorithm == algorithm].sort_values("iterations")
        runs = df[df.algorithm == algorithm]
        x = x_column(runs)
        for _, run in runs.groupby("seed"):
            ax.plot(run[x], run[metric], color=color, lw=0.8, alpha=0.6)
        ax.fill_between(agg.x, agg.ci_low, agg.ci_high, color=color, alpha=0.18, lw=0)
        ax.plot(agg.x, agg.iqm, "-o", color=color, lw=2, ms=3)
        start = agg[agg.iterations == 0]
        if len(start):
            handles["policy before training (SFT), IQM"] = ax.axhline(start.iqm.iloc[0], color="0.35", ls=":", lw=1.2)
        if ceiling is not None:
            handles[f"ceiling (oracle summaries): {ceiling:.3g}"] = ax.axhline(ceiling, color="k", ls="--", lw=1)
        ax.set_title(f"{display_name(algorithm)} ({runs.seed.nunique()} seeds)", fontsize=10)
        ax.set_xlabel(X_LABELS[x], fontsize=9)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in flat[::ncols]:
        ax.set_ylabel(METRIC_LABELS[metric], fontsize=9)
    legend = list(zip(handles.values(), handles.keys()))
    spare = flat[len(algorithms) :]
    for ax in spare:
        ax.axis("off")
    if len(spare):
        spare[0].legend(*zip(*legend), loc="center", fontsize=9, frameon=False)
    else:
        fig.legend(*zip(*legend), loc="lower center", ncol=len(legend), fontsize=9, frameon=False)
    n_prompts = int(df.n_prompts.max()) if "n_prompts" in df and df.n_prompts.notna().all() else None
    prompts = f"{n_prompts} validation prompts" if n_prompts else "validation prompts"
    fig.suptitle(
        f"Learning curves: {METRIC_LABELS[metric].split(' [')[0]} on {prompts} during training\n"
        f"config '{cfg['name']}' (model {cfg['model_size']}, seeds {', '.join(map(str, seeds))})",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.05 if not len(spare) else 0, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)
    return points
