"""Table 2 (paper §5.2, Tables 2-3): AlpacaEval 2.0, MT-Bench and Open LLM Leaderboard per policy,
the MT-Bench category table and the radar chart of Figure 7.

One row per policy: the SFT policy ("Base", the paper's name for the starting model) and
each algorithm, mean and std (ddof=1) over the config's seeds. Every number is read from a
file the pipeline wrote: ``<policy>/seed<k>/chat/{alpaca_eval,mt_bench}.json`` and, when the
leaderboard stage ran, ``<policy>/seed<k>/leaderboard.json`` (its columns stay empty
otherwise). When the config mirrors a paper chat setting (``paper_setting`` of table2/table3
rows in ``paper-results.csv``), the paper's numbers stand beside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eval.chat_data import MT_BENCH_CATEGORIES
from eval.mt_bench import radar_chart
from eval.tables import PAPER_RESULTS, display_name

CHAT = ("alpacaeval2_lc_winrate", "alpacaeval2_winrate", "mt_bench")
LEADERBOARD = ("mmlu", "gsm8k", "arc", "winogrande", "truthfulqa", "hellaswag")
METRICS = (*CHAT, *LEADERBOARD, "average")
COUNTS = (
    "alpaca_parse_failures",
    "mt_bench_parse_failures",
    "judge_requests",
    "judge_cache_hits",
    "judge_retries",
    "judge_failures",
    "judge_cost_usd",
)


def _label(algorithm: str) -> str:
    return "Base" if algorithm == "sft" else display_name(algorithm)


def policy_record(policy_dir: Path) -> dict[str, Any]:
    """The Table 2 numbers of one policy and seed from the files under ``policy_dir``."""
    alpaca = json.loads((policy_dir / "chat" / "alpaca_eval.json").read_text())
    mt = json.loads((policy_dir / "chat" / "mt_bench.json").read_text())
    usage = {k: alpaca["judge_usage"][k] + mt["judge_usage"][k] for k in alpaca["judge_usage"]}
    record: dict[str, Any] = {
        "alpacaeval2_lc_winrate": alpaca["lc_winrate"],
        "alpacaeval2_winrate": alpaca["winrate"],
        "mt_bench": mt["score"],
        "alpaca_parse_failures": alpaca["parse_failures"],
        "mt_bench_parse_failures": mt["parse_failures"],
        "judge_requests": usage["requests"],
        "judge_cache_hits": usage["cache_hits"],
        "judge_retries": usage["retries"],
        "judge_failures": usage["failures"],
        "judge_cost_usd": usage["cost_usd"],
        **{f"mt_bench_{c}": mt["categories"][c] for c in MT_BENCH_CATEGORIES},
    }
    leaderboard = policy_dir / "leaderboard.json"
    if leaderboard.is_file():
        scores = json.loads(leaderboard.read_text())
        record |= {task: scores["tasks"][task]["value"] for task in LEADERBOARD if task in scores["tasks"]}
        record["average"] = scores.get("average", np.nan)
    return record


def paper_rows(setting: dict[str, str] | None) -> pd.DataFrame:
    """The paper's Table 2/3 numbers for a chat setting, ``paper_<metric>`` columns by algorithm."""
    if setting is None:
        return pd.DataFrame(columns=["algorithm"])
    df = pd.read_csv(PAPER_RESULTS)
    df = df[
        df.table.isin(["table2", "table3"])
        & (df.setting == setting["setting"])
        & (df.model_size == setting["model_size"])
    ]
    wide = df.pivot_table(index="algorithm", columns="metric", values="value", aggfunc="first")
    wide.columns = [f"paper_{m}" for m in wide.columns]
    return wide.reset_index()


def table2(cfg: dict[str, Any], results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table 2, MT-Bench per category): one row per policy, mean and std over seeds."""
    algorithms = ["sft", *cfg["algorithms"]]
    records = [
        {"algorithm": _label(a), "seed": s, **policy_record(results / a / f"seed{s}")}
        for a in algorithms
        for s in cfg["seeds"]
    ]
    df = pd.DataFrame(records)
    for column in (*METRICS, *COUNTS):
        if column not in df:
            df[column] = np.nan
    grouped = df.groupby("algorithm", sort=False)
    table = pd.DataFrame({"model_size": cfg["model_size"], "algorithm": [_label(a) for a in algorithms]})
    table["n_seeds"] = table.algorithm.map(grouped.size())
    for metric in METRICS:
        table[metric] = table.algorithm.map(grouped[metric].mean())
        table[f"{metric}_std"] = table.algorithm.map(grouped[metric].std(ddof=1))
    for count in COUNTS:
        table[count] = table.algorithm.map(grouped[count].sum())
    table = table.merge(paper_rows(cfg["paper_setting"]), on="algorithm", how="left")
    categories = pd.DataFrame({"algorithm": table.algorithm})
    for c in MT_BENCH_CATEGORIES:
        categories[c] = categories.algorithm.map(grouped[f"mt_bench_{c}"].mean())
    categories["overall"] = table["mt_bench"]
    return table, categories


def cell(row: pd.Series, metric: str) -> str:
    """A ``mean (std)`` cell of ``metric`` (empty without a mean; the mean alone without a std)."""
    mean, std = row[metric], row.get(f"{metric}_std", np.nan)
    return "" if pd.isna(mean) else f"{mean:.2f}" + ("" if pd.isna(std) else f" ({std:.2f})")


def category_lines(categories: pd.DataFrame) -> list[str]:
    """The MT-Bench-per-category table as markdown lines, after a blank line and its caption."""
    lines = [
        "",
        "MT-Bench per category (mean over seeds of both turns' ratings):",
        "",
        "| policy | " + " | ".join(MT_BENCH_CATEGORIES) + " | overall |",
        "|" + "---|" * 10,
    ]
    for _, row in categories.iterrows():
        lines.append(
            f"| {row.algorithm} | " + " | ".join(f"{row[c]:.2f}" for c in (*MT_BENCH_CATEGORIES, "overall")) + " |"
        )
    return lines


def write_outputs(
    table: pd.DataFrame,
    categories: pd.DataFrame,
    text: str,
    title: str,
    csv: Path,
    md: Path,
    mt_bench_csv: Path,
    png: Path,
) -> None:
    """A chat table (``csv``, its markdown ``text`` to ``md``), MT-Bench per category (``mt_bench_csv``) and their
    radar chart (``png`` and the same name ``.pdf``)."""
    for path in (csv, md, mt_bench_csv, png):
        path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False)
    categories.to_csv(mt_bench_csv, index=False)
    md.write_text(text)
    scores = {row.algorithm: {c: row[c] for c in MT_BENCH_CATEGORIES} for _, row in categories.iterrows()}
    radar_chart(scores, png, png.with_suffix(".pdf"), title=title)


def markdown(table: pd.DataFrame, categories: pd.DataFrame) -> str:
    """Both tables as markdown: ``mean (std)`` cells, paper numbers beside when present."""
    paper = [m for m in METRICS if f"paper_{m}" in table]
    head = [
        "model",
        "policy",
        "seeds",
        "AlpacaEval 2.0 LC %",
        "AlpacaEval 2.0 %",
        "MT-Bench",
        *LEADERBOARD,
        "average",
        "parse failures (AE / MT)",
        "judge calls (last run)",
        "cost $",
        *(f"paper {m}" for m in paper),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        lines.append(
            "| "
            + " | ".join(
                [
                    row.model_size,
                    row.algorithm,
                    str(row.n_seeds),
                    *(cell(row, m) for m in METRICS),
                    f"{int(row.alpaca_parse_failures)} / {int(row.mt_bench_parse_failures)}",
                    str(int(row.judge_requests)),
                    f"{row.judge_cost_usd:.2f}",
                    *("" if pd.isna(row[f"paper_{m}"]) else f"{row[f'paper_{m}']:g}" for m in paper),
                ]
            )
            + " |"
        )
    return "\n".join([*lines, *category_lines(categories)]) + "\n"


def write_table2(cfg: dict[str, Any], results: Path, csv: Path, md: Path, mt_bench_csv: Path, png: Path) -> None:
    """The TL;DR policies' chat table (``csv``, ``md``), MT-Bench per category and its radar chart."""
    table, categories = table2(cfg, results)
    write_outputs(
        table, categories, markdown(table, categories), f"MT-Bench ({cfg['name']})", csv, md, mt_bench_csv, png
    )
