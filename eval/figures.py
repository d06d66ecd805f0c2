"""Figures 5 and 6 of the paper from the files the pipeline wrote (``metrics.jsonl``, ``kl_samples.jsonl``).

Figure 5 (appendix K), RM score against KL(π_T‖π_ref,T) at the training temperature T, axes
oriented as in the paper (RM score on x):

- left: training. One point per logged iteration (mean over the iteration's samples and over
  seeds) and, at up to ``ELLIPSES`` evenly spaced iterations, the 2-std ellipse of the
  per-sample covariance of (RM score, KL), pooled over seeds. The paper evaluates test-set
  checkpoints every 100 steps; here the points come from the training samples the shared
  loop already scores each iteration (no extra generation), i.e. from π_t's own samples on
  that iteration's training prompts.
- right: the final checkpoint's samples y ~ π_T on the test prompts (``kl_samples.jsonl`` of the
  evaluate stage, drawn at the training temperature, not the near-greedy evaluation draw),
  sorted by their log-ratio log π_T(y|x) − log π_ref,T(y|x) (the k1 terms of the KL) into
  ``BINS`` bins of equal size; mean RM score and mean log-ratio per bin, then the mean over
  seeds of each bin.

Figure 6 (appendix L): the regression loss of Eq. 1 (``regression_mse``, logged by REBEL and by
any algorithm that logs it) per iteration: each seed faint, the mean over seeds, and its
trailing moving average in bold.
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
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from eval.tables import display_name  # noqa: E402
from rebel.errors import HarnessError  # noqa: E402

ELLIPSES = 4
BINS = 10
N_STD = 2.0


def read_jsonl(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """A JSON-lines file as a frame; one-line error naming the file when a needed column is missing."""
    df = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    missing = [key for key in required if key not in df]
    if missing:
        raise HarnessError(
            f"'{path}' has no '{missing[0]}' (written by an older version of the pipeline, or not "
            "by an online algorithm); rerun the stage that writes it"
        )
    return df


def ellipse_axes(cov: np.ndarray, n_std: float = N_STD) -> tuple[float, float, float]:
    """Full width, full height and angle (degrees from the x axis, of the width) of the n-std ellipse
    of a 2×2 covariance: its semi-axes are ``n_std · sqrt(eigenvalue)`` along the eigenvectors."""
    values, vectors = np.linalg.eigh(np.asarray(cov, dtype=float))  # ascending eigenvalues
    major = vectors[:, 1]
    radii = n_std * np.sqrt(np.clip(values, 0.0, None))
    return 2 * radii[1], 2 * radii[0], math.degrees(math.atan2(major[1], major[0]))


def pooled_training_points(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """Per iteration: mean (RM score, KL) over the samples of all seeds and their pooled covariance.

    With equal samples per seed, the covariance of the union is the mean within-seed covariance
    plus the (ddof 0) covariance of the seed means.
    """
    df = pd.concat(runs, ignore_index=True)
    rows = []
    for iteration, group in df.groupby("iteration"):
        means = group[["rm_score", "kl"]].to_numpy()
        within = np.array(
            [
                [group.rm_score_var.mean(), group.kl_rm_score_cov.mean()],
                [group.kl_rm_score_cov.mean(), group.kl_var.mean()],
            ]
        )
        between = np.cov(means.T, ddof=0) if len(means) > 1 else np.zeros((2, 2))
        cov = within + between
        rows.append(
            {
                "iteration": iteration,
                "rm_score": means[:, 0].mean(),
                "kl": means[:, 1].mean(),
                "rm_var": cov[0, 0],
                "kl_var": cov[1, 1],
                "rm_kl_cov": cov[0, 1],
                "seeds": len(means),
            }
        )
    return pd.DataFrame(rows)


def kl_bins(kl: np.ndarray, rm_score: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Generations sorted by KL into ``bins`` bins of equal size (sizes differ by at most one);
    per bin the mean KL, mean RM score and count."""
    kl, rm_score = np.asarray(kl, dtype=float), np.asarray(rm_score, dtype=float)
    if len(kl) < bins:
        raise HarnessError(f"{len(kl)} generations cannot fill {bins} KL bins")
    parts = np.array_split(np.argsort(kl, kind="stable"), bins)
    return pd.DataFrame(
        {
            "bin": range(bins),
            "kl": [kl[p].mean() for p in parts],
            "rm_score": [rm_score[p].mean() for p in parts],
            "n": [len(p) for p in parts],
        }
    )


def ellipse_iterations(iterations: np.ndarray, count: int = ELLIPSES) -> np.ndarray:
    """Up to ``count`` evenly spaced iterations, always the first and the last."""
    index = np.unique(np.linspace(0, len(iterations) - 1, min(count, len(iterations))).round().astype(int))
    return np.asarray(iterations)[index]


def _color(cfg: dict[str, Any], algorithm: str) -> str:
    """The same color for an algorithm in every figure: its place in the config's ``algorithms``."""
    return f"C{cfg['algorithms'].index(algorithm) % 10}"


def _title(cfg: dict[str, Any]) -> str:
    return f"config '{cfg['name']}' (model {cfg['model_size']}, seeds {', '.join(map(str, cfg['seeds']))})"


def figure5(cfg: dict[str, Any], results: Path, algorithms: list[str], png: Path) -> None:
    """Figure 5 from ``<results>/<algorithm>/seed<S>/{metrics.jsonl,kl_samples.jsonl}``; writes PNG and PDF."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for algorithm in algorithms:
        color, label = _color(cfg, algorithm), display_name(algorithm, cfg)
        folders = [results / algorithm / f"seed{seed}" for seed in cfg["seeds"]]
        points = pooled_training_points(
            [
                read_jsonl(f / "metrics.jsonl", ("kl", "rm_score", "kl_var", "rm_score_var", "kl_rm_score_cov"))
                for f in folders
            ]
        )
        left.plot(points.rm_score, points.kl, "-o", color=color, ms=2.5, lw=0.8, label=label)
        for row in points[points.iteration.isin(ellipse_iterations(points.iteration.to_numpy()))].itertuples():
            width, height, angle = ellipse_axes([[row.rm_var, row.rm_kl_cov], [row.rm_kl_cov, row.kl_var]])
            left.add_patch(
                Ellipse(
                    (row.rm_score, row.kl),
                    width,
                    height,
                    angle=angle,
                    lw=0.8,
                    facecolor=to_rgba(color, 0.04),
                    edgecolor=to_rgba(color, 0.45),
                )
            )
        for row, where in ((points.iloc[0], "start"), (points.iloc[-1], "end")):
            left.annotate(
                f"t={int(row.iteration) + 1}",
                (row.rm_score, row.kl),
                fontsize=8,
                color=color,
                xytext=(4, -10 if where == "start" else 4),
                textcoords="offset points",
            )
        binned = []
        for folder in folders:
            samples = read_jsonl(folder / "kl_samples.jsonl", ("kl", "rm_score"))
            binned.append(kl_bins(samples.kl.to_numpy(), samples.rm_score.to_numpy()))
        mean = pd.concat(binned).groupby("bin")[["kl", "rm_score"]].mean()
        right.plot(
            mean.rm_score,
            mean.kl,
            "-o",
            color=color,
            label=f"{label} ({binned[0].n.sum()} samples × {len(binned)} seed(s))",
        )
    left.autoscale_view()
    left.set(
        xlabel="RM score (reward model, Γ without EOS)",
        ylabel="KL(π_t,T ‖ π_ref,T) per sequence (k1) [nats]",
        title=f"During training: mean per iteration, 2-std ellipses at ≤{ELLIPSES} iterations\n"
        "(π_t's training samples, pooled over seeds; the paper: test set every 100 steps)",
    )
    right.set(
        xlabel="mean RM score in the bin",
        ylabel="mean log π_T(y|x) − log π_ref,T(y|x) in the bin [nats]",
        title=f"Final checkpoint: test samples y ~ π_T in {BINS} equal-size log-ratio\n"
        "bins (k1 KL terms, training temperature; mean over seeds)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Figure 5: RM score vs KL — {_title(cfg)}")
    _save(fig, png)


def figure6(cfg: dict[str, Any], results: Path, algorithms: list[str], png: Path) -> None:
    """Figure 6 from the ``regression_mse`` of every listed algorithm that logs it; writes PNG and PDF."""
    runs = {}
    for algorithm in algorithms:
        frames = [
            read_jsonl(results / algorithm / f"seed{seed}" / "metrics.jsonl", ("iteration",)) for seed in cfg["seeds"]
        ]
        if all("regression_mse" in frame for frame in frames):
            runs[algorithm] = frames
    if not runs:
        raise HarnessError(
            f"none of {', '.join(algorithms)} logs 'regression_mse' in its metrics.jsonl "
            "(REBEL does); Figure 6 has nothing to plot"
        )
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for algorithm, frames in runs.items():
        color, label = _color(cfg, algorithm), display_name(algorithm, cfg)
        for frame in frames:
            ax.plot(frame.iteration + 1, frame.regression_mse, color=color, alpha=0.25, lw=0.8)
        mean = pd.concat(frames).groupby("iteration").regression_mse.mean()
        window = max(2, len(mean) // 8)
        ax.plot(mean.index + 1, mean.values, color=color, lw=1.0, ls="--", label=f"{label}: mean over seeds")
        ax.plot(
            mean.index + 1,
            mean.rolling(window, min_periods=1).mean(),
            color=color,
            lw=2.4,
            label=f"{label}: moving average ({window} iterations)",
        )
    ax.set(
        xlabel="policy iteration t",
        ylabel="regression MSE of Eq. 1 [nats²]",
        title="faint: each seed; mean over the iteration's update steps",
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Figure 6: REBEL's reward-difference regression error\n{_title(cfg)}")
    _save(fig, png)


def _save(fig: plt.Figure, png: Path) -> None:
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)
