"""The exact-optimum testbed's table and figure (from ``results/bandit/<algorithm>/seed<S>.jsonl``).

Table: per algorithm, mean and std over seeds of the final gap J(π*) − J(π_T), the gap
relative to the start (π_ref), KL(π_T‖π*), the reward queries spent, and the first
iteration at which the relative gap fell below 1e-3. Figure: the gap and KL to π* against
iterations and against reward queries (mean over seeds, shaded min–max), log scale.

In the general-preference setting (``preference_strength``, Appendix D) the records carry no
reward gap: the table reports the final duality gap of π_T and of the average policy π̄_T
instead, and the first iteration at which the average's duality gap fell below 0.1; the
figure plots both duality gaps.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from eval.tables import display_name  # noqa: E402

THRESHOLD = 1e-3
DUALITY_THRESHOLD = 0.1
"""Preference setting: the average policy's duality gap reached (the Appendix D test's bound)."""


def is_preference(runs: pd.DataFrame) -> bool:
    """Records of the preference (self-play) setting: duality gaps, no gap to J(π*)."""
    return "duality_gap" in runs.columns and "gap" not in runs.columns


def load_runs(results: Path, algorithms: list[str], seeds: list[int]) -> pd.DataFrame:
    frames = []
    for algorithm in algorithms:
        for seed in seeds:
            rows = [json.loads(line) for line in (results / algorithm / f"seed{seed}.jsonl").read_text().splitlines()]
            frames.append(pd.DataFrame(rows).assign(algorithm=display_name(algorithm), seed=seed))
    return pd.concat(frames, ignore_index=True)


def bandit_table(runs: pd.DataFrame) -> pd.DataFrame:
    preference = is_preference(runs)
    final = runs.loc[runs.groupby(["algorithm", "seed"]).iteration.idxmax()]
    below = runs.average_duality_gap < DUALITY_THRESHOLD if preference else runs.relative_gap < THRESHOLD
    reached = runs[below].groupby(["algorithm", "seed"]).iteration.min()
    final = final.set_index(["algorithm", "seed"]).assign(iterations_to_threshold=reached).reset_index()
    grouped = final.groupby("algorithm", sort=False)
    out = pd.DataFrame({"n_seeds": grouped.size()})
    metrics = ("duality_gap", "average_duality_gap") if preference else ("gap", "relative_gap", "kl_to_optimum")
    for metric in metrics:
        out[f"final_{metric}_mean"] = grouped[metric].mean()
        out[f"final_{metric}_std"] = grouped[metric].std(ddof=1)
    out["reward_queries"] = grouped.reward_queries.mean()
    out["iterations"] = grouped.iteration.mean()
    threshold = f"{DUALITY_THRESHOLD:g}" if preference else "1e-3"
    out[f"seeds_below_{threshold}"] = grouped.iterations_to_threshold.count()
    out[f"iterations_to_{threshold}_mean"] = grouped.iterations_to_threshold.mean()
    return out.reset_index()


def bandit_figure(runs: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    if is_preference(runs):
        rows = (("duality_gap", "duality gap of π_t"), ("average_duality_gap", "duality gap of the average π̄_t"))
        title = "Tabular bandit, rock–paper–scissors preference: duality gap (0 at the minimax winner)"
    else:
        rows = (("gap", "J(π*) − J(π)"), ("kl_to_optimum", "KL(π ‖ π*) [nats]"))
        title = "Tabular bandit: distance to the exact KL-regularized optimum π* ∝ π_ref exp(r/β)"
    for row, (metric, label) in enumerate(rows):
        for col, (x, xlabel) in enumerate((("iteration", "iteration"), ("reward_queries", "reward-model queries"))):
            ax = axes[row, col]
            for algorithm, runs_of in runs.groupby("algorithm", sort=False):
                by_x = runs_of.groupby(x)[metric]
                mean = by_x.mean()
                (line,) = ax.plot(mean.index, mean.values, label=algorithm)
                ax.fill_between(mean.index, by_x.min().values, by_x.max().values, color=line.get_color(), alpha=0.2)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(title="algorithm (mean, min–max over seeds)", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def write_bandit_report(
    results: Path, algorithms: list[str], seeds: list[int], out_csv: Path, out_md: Path, out_png: Path
) -> pd.DataFrame:
    runs = load_runs(results, algorithms, seeds)
    order = [display_name(a) for a in algorithms]
    table = bandit_table(runs).set_index("algorithm").loc[order].reset_index()
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False, float_format="%.6g")
    out_md.write_text(table.to_markdown(index=False, floatfmt=".3g") + "\n")
    bandit_figure(runs, out_png)
    return table
