"""Table 1 run twice, compared within seed noise: under two CPU kernel paths, or two generation backends.

Two runs that differ only in ``runtime.cpu_kernels`` (rebel/kernels.py), or only in
``runtime.generation_backend`` (hf or vllm), give different bits, so their Table 1 numbers differ;
the claim checked here is that they differ by no more than seed noise. For every algorithm and
metric, the means over seeds of the two runs are compared by the
Welch-style standard error of the difference of two means,

    diff = mean_b - mean_a,   se = sqrt(var_a / n_a + var_b / n_b),   z = diff / se,

with ``var`` the variance over seeds (ddof=1); a row *agrees* when ``|z| <= 3``, or when both
runs gave the same value for every seed up to float32 rounding (:data:`ROUNDING`): a metric with no
spread over seeds (the SFT policy's RM score) can differ in its last bit between kernel paths, which
would otherwise be infinitely many standard errors. Every number is read from the runs' ``eval.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from eval.tables import display_name
from rebel.errors import HarnessError

METRICS = ("winrate", "gold_quality", "rm_score", "kl")
Z_LIMIT = 3.0
ROUNDING = 1e-6
"""Relative tolerance of "the same value up to float32 rounding" (float32's machine epsilon is 1.2e-7)."""
COLUMNS = ["algorithm", "metric", "n_a", "n_b", "mean_a", "mean_b", "diff", "se", "z", "agree", "identical"]


def _values(evals: dict[tuple[str, int], dict[str, Any]], algorithm: str, metric: str, side: str) -> dict[int, float]:
    out = {}
    for (algo, seed), record in evals.items():
        if algo == algorithm:
            if metric not in record:
                raise HarnessError(f"run {side}: eval.json of {algorithm} seed {seed} has no '{metric}'")
            out[seed] = float(record[metric])
    return out


def _z(diff: float, se: float, n_a: int, n_b: int) -> float:
    """``diff / se``; 0 when diff is 0, inf when only se is 0, NaN with fewer than 2 seeds on a side."""
    if n_a < 2 or n_b < 2:
        return math.nan
    if diff == 0:
        return 0.0
    if se == 0:
        return math.copysign(math.inf, diff)
    return diff / se


def compare(
    a: dict[tuple[str, int], dict[str, Any]],
    b: dict[tuple[str, int], dict[str, Any]],
    metrics: tuple[str, ...] = METRICS,
) -> pd.DataFrame:
    """One row per (algorithm, metric), algorithms in ``a``'s order: seeds, means, ``diff = mean_b - mean_a``,
    the Welch-style standard error ``se = sqrt(var_a/n_a + var_b/n_b)`` of the difference (variances over
    seeds, ddof=1), ``z = diff / se``, ``agree`` (``|z| <= 3``, or equal per seed up to :data:`ROUNDING`) and
    ``identical`` (the same seeds on both sides, each with the same value).

    ``a`` and ``b`` map ``(algorithm, seed)`` to an ``eval.json`` record. With fewer than 2 seeds on a
    side ``se`` and ``z`` are NaN and a row agrees only when equal per seed up to :data:`ROUNDING`. A metric
    absent from every record (``gold_quality`` off the synthetic task) is skipped; one absent from some records only
    raises :class:`HarnessError`.
    """
    algorithms = list(dict.fromkeys(algo for algo, _ in a))
    if missing := sorted(set(dict.fromkeys(algo for algo, _ in b)) ^ set(algorithms)):
        raise HarnessError(f"the two runs differ in algorithms: {', '.join(missing)}")
    present = [m for m in metrics if any(m in r for r in (*a.values(), *b.values()))]
    rows = []
    for algorithm in algorithms:
        for metric in present:
            va, vb = _values(a, algorithm, metric, "a"), _values(b, algorithm, metric, "b")
            sa, sb = pd.Series(list(va.values()), dtype=float), pd.Series(list(vb.values()), dtype=float)
            n_a, n_b = len(sa), len(sb)
            diff = sb.mean() - sa.mean()
            se = math.sqrt(sa.var(ddof=1) / n_a + sb.var(ddof=1) / n_b) if min(n_a, n_b) >= 2 else math.nan
            z = _z(diff, se, n_a, n_b)
            identical = va == vb
            rounded = va.keys() == vb.keys() and all(math.isclose(va[k], vb[k], rel_tol=ROUNDING) for k in va)
            rows.append(
                {
                    "algorithm": algorithm,
                    "metric": metric,
                    "n_a": n_a,
                    "n_b": n_b,
                    "mean_a": sa.mean(),
                    "mean_b": sb.mean(),
                    "diff": diff,
                    "se": se,
                    "z": z,
                    "agree": rounded or bool(abs(z) <= Z_LIMIT),
                    "identical": identical,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def read_evals(results: Path, algorithms: list[str], seeds: list[int]) -> dict[tuple[str, int], dict[str, Any]]:
    """The ``eval.json`` of every algorithm and seed under a results folder ``results/<name>``."""
    evals = {}
    for algorithm in algorithms:
        for seed in seeds:
            path = results / algorithm / f"seed{seed}" / "eval.json"
            if not path.is_file():
                raise HarnessError(f"'{path}' not found; run the pipeline for it first")
            evals[(algorithm, seed)] = json.loads(path.read_text())
    return evals


def _capabilities(evals: dict[tuple[str, int], dict[str, Any]]) -> str:
    """The PyTorch CPU capabilities the evaluations report (``eval.json`` 'kernels'), e.g. ``AVX2``."""
    found = sorted({r["kernels"]["cpu_capability"] for r in evals.values() if "kernels" in r})
    return f" ({', '.join(found)})" if found else ""


SUBJECTS = {"kernels": "Reproducibility across CPU kernel paths", "backends": "Generation backends"}
"""What the two runs differ in (``runtime.cpu_kernels`` or ``runtime.generation_backend``): the table's title."""


def markdown(
    cfg: dict[str, Any],
    df: pd.DataFrame,
    label_a: str,
    label_b: str,
    capability_a: str = "",
    capability_b: str = "",
    subject: str = "kernels",
) -> str:
    """The comparison as a Markdown table, after a sentence saying what was compared and how many rows agree."""

    def number(value: float, digits: int = 3) -> str:
        return "" if pd.isna(value) else f"{value:.{digits}f}"

    lines = [
        f"{SUBJECTS[subject]}, config '{cfg['name']}' (model {cfg['model_size']}): Table 1 "
        f"run under `{label_a}`{capability_a} and again under `{label_b}`{capability_b}, "
        f"{len(cfg['seeds'])} seeds {cfg['seeds']}. {int(df.agree.sum())} of {len(df)} algorithm × metric rows "
        f"agree within {Z_LIMIT:g} standard errors of the difference of the means (se = sqrt(s_a²/n_a + "
        f"s_b²/n_b), std over seeds); {int(df.identical.sum())} are identical for every seed.",
        "",
        f"| algorithm | metric | seeds | mean {label_a} | mean {label_b} | difference | SE | z | agree | identical |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in df.itertuples():
        seeds = str(row.n_a) if row.n_a == row.n_b else f"{row.n_a} / {row.n_b}"
        lines.append(
            "| "
            + " | ".join(
                [
                    display_name(row.algorithm),
                    row.metric,
                    seeds,
                    number(row.mean_a),
                    number(row.mean_b),
                    number(row.diff),
                    number(row.se),
                    number(row.z, 2),
                    "yes" if row.agree else "**no**",
                    "yes" if row.identical else "no",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_reproducibility(
    cfg: dict[str, Any],
    results_a: Path,
    results_b: Path,
    label_a: str,
    label_b: str,
    csv: Path,
    md: Path,
    algorithms: list[str] | None = None,
    subject: str = "kernels",
) -> pd.DataFrame:
    """Compare the Table 1 runs under ``results_a`` and ``results_b`` (each a ``results/<name>`` folder), for
    the SFT policy and ``algorithms`` (default: the config's), and write the CSV and Markdown tables;
    disagreement is reported in them, not raised. ``subject`` (:data:`SUBJECTS`) names what the runs differ in."""
    algorithms = ["sft", *(cfg["algorithms"] if algorithms is None else algorithms)]
    a = read_evals(results_a, algorithms, cfg["seeds"])
    b = read_evals(results_b, algorithms, cfg["seeds"])
    df = compare(a, b)
    csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv, index=False, float_format="%.6g")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(cfg, df, label_a, label_b, _capabilities(a), _capabilities(b), subject))
    return df
