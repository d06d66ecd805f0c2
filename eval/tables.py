"""Table 1 (paper §5.1): winrate, RM score and KL(π_T‖π_ref,T) per algorithm, mean and std over seeds,
and its budget table (prompts, generations, tokens, reward-model calls, optimizer steps).

Every number comes from an ``eval.json`` the pipeline wrote; when the config reproduces a
paper setting, the paper's numbers (``workflow/resources/paper-results.csv``, copied from
the paper's Table 1) stand beside ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from eval import aggregate
from rebel.algorithms import build_algorithm
from rebel.errors import HarnessError
from rebel.loop import COUNTERS
from rebel.paths import REPO_ROOT

PAPER_RESULTS = REPO_ROOT / "workflow" / "resources" / "paper-results.csv"
METRICS = ("winrate", "rm_score", "kl")


class UnfairComparison(HarnessError):
    """Runs of one seed that did not see the same prompts in the same order."""


def display_name(algorithm: str, config: dict[str, Any] | None = None) -> str:
    """The algorithm's label (it may depend on its parameters: "RLOO (k=4)"), else its name. Built with
    ``config``'s variants and parameters when given, else the registry's (built-in variants only)."""
    if algorithm == "sft":
        return "SFT"
    return build_algorithm(algorithm, config or {}).label or algorithm


def paper_numbers(setting: dict[str, str] | None, table: str = "table1") -> pd.DataFrame:
    """The paper's rows for a setting, one row per algorithm, ``paper_<metric>[_std]`` columns."""
    if setting is None:
        return pd.DataFrame(columns=["algorithm"])
    df = pd.read_csv(PAPER_RESULTS)
    df = df[(df.table == table) & (df.setting == setting["setting"]) & (df.model_size == setting["model_size"])]
    wide = df.pivot_table(index="algorithm", columns="metric", values=["value", "std"], aggfunc="first")
    wide.columns = [f"paper_{metric}" if kind == "value" else f"paper_{metric}_std" for kind, metric in wide.columns]
    return wide.reset_index()


CEILING = "Ceiling (oracle summaries)"
BASELINE = "rebel"
"""The algorithm every other is compared with (probability of improvement, paper §5)."""


def table1(
    cfg: dict[str, Any], evals: dict[tuple[str, int], Path], ceiling: dict[int, Path] | None = None
) -> pd.DataFrame:
    """One row per algorithm (SFT first, then the config's order, then the task's ceiling when given):
    mean, std (ddof=1) and n over seeds; the winrate's IQM over seeds with its 95% stratified-bootstrap
    CI and each algorithm's probability of improvement over REBEL (rliable, :mod:`eval.aggregate`)."""
    records = [
        {"algorithm": display_name(algo, cfg), "seed": seed, **json.loads(path.read_text())}
        for (algo, seed), path in evals.items()
    ]
    records += [
        {"algorithm": CEILING, "seed": seed, **json.loads(path.read_text())} for seed, path in (ceiling or {}).items()
    ]
    df = pd.DataFrame(records)
    order = [display_name(a, cfg) for a in ["sft", *cfg["algorithms"]]] + ([CEILING] if ceiling else [])
    grouped = df.groupby("algorithm", sort=False)
    out = pd.DataFrame({"model_size": cfg["model_size"], "algorithm": order})
    out["n_seeds"] = out.algorithm.map(grouped.size())
    for metric in (*METRICS, "kl_se", "greedy_logratio", "gold_quality", "ties"):
        if metric in df and df[metric].notna().any():
            out[f"{metric}_mean"] = out.algorithm.map(grouped[metric].mean())
            out[f"{metric}_std"] = out.algorithm.map(grouped[metric].std(ddof=1))
    # The judging interval of one seed's winrate (95%, ties as half and not as evidence; eval.json), averaged
    # over seeds.
    for bound in ("winrate_ci_low", "winrate_ci_high"):
        out[bound] = out.algorithm.map(grouped[bound].mean()) if bound in df else float("nan")
    out["judge_parse_failures"] = out.algorithm.map(grouped["judge_parse_failures"].sum())
    policies = {name: group.sort_values("seed").winrate.to_numpy() for name, group in grouped if name != CEILING}
    iqm = aggregate.iqm_intervals(policies)
    for i, column in enumerate(("winrate_iqm", "winrate_iqm_ci_low", "winrate_iqm_ci_high")):
        out[column] = out.algorithm.map({name: values[i] for name, values in iqm.items()})
    baseline = display_name(BASELINE)
    if baseline in policies:
        improvement = aggregate.probability_of_improvement(policies, baseline)
        for i, column in enumerate(("p_improve_vs_rebel", "p_improve_vs_rebel_ci_low", "p_improve_vs_rebel_ci_high")):
            out[column] = out.algorithm.map({name: values[i] for name, values in improvement.items()})
    paper = paper_numbers(cfg["paper_setting"])
    out = out.merge(paper, on="algorithm", how="left")
    for metric in METRICS:
        for col in (f"paper_{metric}", f"paper_{metric}_std"):
            if col not in out:
                out[col] = float("nan")
    return out


def markdown(df: pd.DataFrame, records: dict[str, Any]) -> str:
    """Table 1 as ``mean (std)`` cells (std over seeds), the winrate's IQM over seeds with its 95%
    stratified-bootstrap CI, the probability of improvement over REBEL with its CI, the judging 95%
    interval of one seed's winrate (Wilson, mean of the seeds' bounds), paper numbers beside, then the
    run's measured properties."""

    def cell(mean: float, std: float) -> str:
        return "" if pd.isna(mean) else f"{mean:.2f}" + ("" if pd.isna(std) else f" ({std:.2f})")

    def interval(low: float, high: float, digits: int = 1) -> str:
        return "" if pd.isna(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"

    def get(row: Any, column: str) -> float:
        return getattr(row, column, float("nan"))

    lines = [
        "| model | algorithm | seeds | winrate % | winrate IQM [95% CI] | P(> REBEL) [95% CI] | judging 95% CI "
        "| ties | RM score | KL(π_T‖π_ref,T) | greedy log-ratio | gold quality | paper winrate | paper RM "
        "| paper KL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in df.itertuples():
        iqm = (
            ""
            if pd.isna(get(row, "winrate_iqm"))
            else (f"{row.winrate_iqm:.2f} {interval(row.winrate_iqm_ci_low, row.winrate_iqm_ci_high)}")
        )
        improve = (
            ""
            if pd.isna(get(row, "p_improve_vs_rebel"))
            else (
                f"{row.p_improve_vs_rebel:.2f} "
                f"{interval(row.p_improve_vs_rebel_ci_low, row.p_improve_vs_rebel_ci_high, 2)}"
            )
        )
        lines.append(
            "| "
            + " | ".join(
                [
                    row.model_size,
                    row.algorithm,
                    str(row.n_seeds),
                    cell(row.winrate_mean, row.winrate_std),
                    iqm,
                    improve,
                    interval(row.winrate_ci_low, row.winrate_ci_high),
                    "" if pd.isna(get(row, "ties_mean")) else f"{row.ties_mean:.0f}",
                    *(
                        cell(get(row, f"{m}_mean"), get(row, f"{m}_std"))
                        for m in ("rm_score", "kl", "greedy_logratio", "gold_quality")
                    ),
                    *(cell(getattr(row, f"paper_{m}"), getattr(row, f"paper_{m}_std")) for m in METRICS),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Winrate: ties (both summaries equally good, when the judge can tell: the gold judge) count as half, "
        "whatever the judge's tie-breaking A/B order decided; `ties` is their mean number per seed. The judging "
        "interval takes only the decided comparisons as evidence (Wilson, n = judged − ties), so coin flips "
        "never narrow it. KL(π_T‖π_ref,T): k1 estimate (mean sequence log-ratio) on a separate draw from the "
        "policy at the training temperature T, log-probs at T (eval.json `kl`, its standard error `kl_se`). "
        "Greedy log-ratio: the same log-ratio on the near-greedy evaluation samples (eval.temperature), the "
        "reference code's \"KL\", the one comparable with the paper's KL column; it is not a divergence.",
        "",
        "Measured properties of this run (from the files named):",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in records.items()]
    return "\n".join(lines) + "\n"


def check_identical_prompts(runs: dict[tuple[str, int], dict[str, Any]]) -> None:
    """Fail unless the online algorithms of a seed drew their prompts from the same seeded stream
    (``prompt_stream_sha256`` of each ``run.json``) and runs of equal length saw the same prompts
    in the same order (``prompt_order_sha256``). Runs differ in length only when matched by
    reward-model calls; offline runs (DPO) read preference pairs instead and are not compared.
    """
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for (algorithm, seed), run in runs.items():
        if run["data"] == "prompts":
            by_seed.setdefault(seed, {})[algorithm] = run
    for seed, seed_runs in sorted(by_seed.items()):
        for key, groups in (("prompt_stream_sha256", [seed_runs]), ("prompt_order_sha256", _by_length(seed_runs))):
            for group in groups:
                if len({run[key] for run in group.values()}) > 1:
                    listed = ", ".join(f"{a}={run[key][:12]}" for a, run in sorted(group.items()))
                    raise UnfairComparison(
                        f"seed {seed}: the algorithms trained on different prompts ({key}: "
                        f"{listed}); rerun them with the same data and policy settings"
                    )


def _by_length(runs: dict[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    groups: dict[int, dict[str, dict[str, Any]]] = {}
    for algorithm, run in runs.items():
        groups.setdefault(run["counters"]["prompts"], {})[algorithm] = run
    return list(groups.values())


def budget_table(cfg: dict[str, Any], runs: dict[tuple[str, int], dict[str, Any]]) -> pd.DataFrame:
    """What each algorithm consumed, mean over seeds: prompts, generations, tokens, reward-model calls, steps."""
    records = [
        {
            "algorithm": display_name(algo, cfg),
            "seed": seed,
            "data": run["data"],
            "lr": run["lr"],
            "iterations": run["iterations"],
            "samples_per_prompt": run["samples_per_prompt"],
            **run["counters"],
        }
        for (algo, seed), run in runs.items()
    ]
    grouped = pd.DataFrame(records).groupby("algorithm", sort=False)
    out = pd.DataFrame(
        {"model_size": cfg["model_size"], "algorithm": [display_name(a, cfg) for a in cfg["algorithms"]]}
    )
    out["n_seeds"] = out.algorithm.map(grouped.size())
    for column in ("data", "lr", "iterations", "samples_per_prompt"):
        out[column] = out.algorithm.map(grouped[column].first())
    for counter in COUNTERS:
        out[counter] = out.algorithm.map(grouped[counter].mean())
    return out


def write_table1(
    cfg: dict[str, Any],
    evals: dict[tuple[str, int], Path],
    runs: dict[tuple[str, int], Path],
    data_stats: Path,
    rm_eval: Path,
    out_csv: Path,
    out_md: Path,
    out_budget: Path,
    ceiling: dict[int, Path] | None = None,
) -> pd.DataFrame:
    """Table 1 and its budget table, after checking that the runs of a seed saw identical prompts."""
    for path in [*evals.values(), *runs.values(), *(ceiling or {}).values()]:
        if not path.is_file():
            raise HarnessError(f"'{path}' not found; run the pipeline stage that writes it first")
    run_records = {key: json.loads(path.read_text()) for key, path in runs.items()}
    check_identical_prompts(run_records)
    df = table1(cfg, evals, ceiling)
    budget = budget_table(cfg, run_records)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False, float_format="%.4f")
    budget.to_csv(out_budget, index=False, float_format="%.6g")
    stats, rm = json.loads(data_stats.read_text()), json.loads(rm_eval.read_text())
    records = {f"reward model held-out accuracy ({rm_eval})": round(rm["val_accuracy"], 4)}
    if "val_gold_accuracy" in rm:
        records[f"reward model agreement with the gold judge ({rm_eval})"] = round(rm["val_gold_accuracy"], 4)
    if "reference_gold_quality_mean" in stats:
        records[f"gold quality of human references ({data_stats})"] = round(stats["reference_gold_quality_mean"], 4)
    sft = df[df.algorithm == "SFT"].iloc[0]
    if ceiling:
        top = df[~df.algorithm.isin(["SFT", CEILING])].sort_values("winrate_mean").iloc[-1]
        roof = df[df.algorithm == CEILING].iloc[0]
        records["ceiling: winrate of the oracle summaries (mean over seeds' A/B orders)"] = (
            f"{roof.winrate_mean:.2f}; highest algorithm mean {top.algorithm} {top.winrate_mean:.2f}, "
            f"{roof.winrate_mean - top.winrate_mean:.2f} points below it"
        )
    for row in df[~df.algorithm.isin(["SFT", CEILING])].itertuples():
        for metric in ("winrate", "rm_score"):
            gap = getattr(row, f"{metric}_mean") - sft[f"{metric}_mean"]
            spread = max(getattr(row, f"{metric}_std"), sft[f"{metric}_std"])
            records[f"{row.algorithm} − SFT {metric}"] = (
                f"{gap:+.3f} ({gap / spread:+.1f} seed std)" if spread > 0 else f"{gap:+.3f}"
            )
    if "p_improve_vs_rebel" in df:
        decided = [
            f"{row.algorithm} {'above' if row.p_improve_vs_rebel_ci_low > 0.5 else 'below'}"
            for row in df.itertuples()
            if not pd.isna(row.p_improve_vs_rebel)
            and (row.p_improve_vs_rebel_ci_low > 0.5 or row.p_improve_vs_rebel_ci_high < 0.5)
        ]
        records["orderings against REBEL whose probability-of-improvement CI excludes 0.5"] = (
            ", ".join(decided) or "none: every other algorithm is within the seed noise of REBEL"
        )
    records["prompt order"] = (
        "the same seeded prompt stream for every online algorithm of a seed, identical order "
        "for runs of equal length (SHA-256 in each run.json); DPO reads the preference pairs"
    )
    out_md.write_text(
        markdown(df, records)
        + "\nBudget per run (mean over seeds, from each run.json):\n\n"
        + budget.drop(columns="model_size").to_markdown(index=False, floatfmt=".6g")
        + "\n"
    )
    return df
