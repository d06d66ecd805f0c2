"""The chat setting's tables (paper §5.2): Table 2 (the starting policy, REBEL with pairs from π_t, published
models such as APA) and Table 3 (REBEL's large-batch iterations and DPO on their pairs), with the MT-Bench
categories (Figure 7 for Table 2).

One row per policy of :func:`policies`: "Base" (the starting policy), each algorithm ("REBEL"; with
``policy.snapshot_every``, one row per snapshot: "REBEL (iter t)", the paper's Table 3 rows), each external
policy (its label), then the paper's rows that have no counterpart (Table 2's APA in the embedded world), with
the paper's numbers only. Cells are the mean and std (ddof 1) over seeds of the numbers the chat-evaluation and
leaderboard stages wrote (:func:`eval.table2.policy_record`), with Arena-Hard's score: the Bradley–Terry win
rate against the baseline (:func:`eval.arena_hard.bradley_terry`, fitted on each seed's games) and its 95%
bootstrap CI over the seeds' pooled games. The paper's numbers stand beside (``paper_setting``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from eval.arena_hard import bradley_terry
from eval.chat_data import MT_BENCH_CATEGORIES
from eval.table2 import COUNTS, LEADERBOARD, category_lines, cell, paper_rows, policy_record, write_outputs
from eval.tables import display_name
from rebel.config import policy_settings

METRICS = ("alpacaeval2_lc_winrate", "alpacaeval2_winrate", "mt_bench", *LEADERBOARD, "average", "arena_hard")
HEADERS = {
    "alpacaeval2_lc_winrate": "AlpacaEval 2.0 LC %",
    "alpacaeval2_winrate": "AlpacaEval 2.0 %",
    "mt_bench": "MT-Bench",
    "average": "leaderboard average",
    "arena_hard": "Arena-Hard %",
}


def policies(cfg: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """``(row label, [policy folder below the run, one per seed])`` of every row, in the table's order (an online
    algorithm's snapshots are rows of their own; an offline one has no iterations of its own to snapshot)."""
    from eval.search import online_algorithms

    rows, online = [("Base", ["sft"])], online_algorithms(cfg)
    for algorithm in cfg["algorithms"]:
        label = display_name(algorithm, cfg)
        pol = policy_settings(cfg, algorithm)["policy"]
        every = pol.get("snapshot_every")
        if every and algorithm in online:
            for t in [*range(every, pol["iterations"], every), pol["iterations"]]:
                rows.append((f"{label} (iter {t})", [f"{algorithm}/seed{s}/iter{t}" for s in cfg["seeds"]]))
        else:
            rows.append((label, [f"{algorithm}/seed{s}" for s in cfg["seeds"]]))
    return rows + [(label, [f"external/{label}"]) for label in cfg["chat_eval"].get("external_policies", {})]


def chat_table(cfg: dict[str, Any], results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table, MT-Bench per category): one row per policy, mean and std over seeds."""
    rows = policies(cfg)
    games = {
        f"{label}|{folder}": json.loads((results / folder / "chat" / "arena_hard.json").read_text())["games"]
        for label, folders in rows
        for folder in folders
    }
    rounds = cfg["chat_eval"]["arena_hard"]["bootstrap_rounds"]
    per_seed = bradley_terry(games, bootstrap_rounds=rounds, seed=cfg["data"]["seed"])
    pooled = bradley_terry(
        {label: [g for folder in folders for g in games[f"{label}|{folder}"]] for label, folders in rows},
        bootstrap_rounds=rounds,
        seed=cfg["data"]["seed"],
    )
    records = [
        {"algorithm": label, "policy": folder}
        | policy_record(results / folder)
        | {"arena_hard": per_seed[f"{label}|{folder}"]["score"]}
        for label, folders in rows
        for folder in folders
    ]
    df = pd.DataFrame(records)
    grouped = df.groupby("algorithm", sort=False)
    table = pd.DataFrame({"model_size": cfg["model_size"], "algorithm": [label for label, _ in rows]})
    table["n_seeds"] = table.algorithm.map(grouped.size())
    for metric in METRICS:
        table[metric] = table.algorithm.map(grouped[metric].mean())
        table[f"{metric}_std"] = table.algorithm.map(grouped[metric].std(ddof=1))
    table["arena_hard_ci_low"] = table.algorithm.map(lambda a: pooled[a]["ci_low"])
    table["arena_hard_ci_high"] = table.algorithm.map(lambda a: pooled[a]["ci_high"])
    for count in COUNTS:
        table[count] = table.algorithm.map(grouped[count].sum())
    # The paper's rows with no counterpart here (Table 2's APA in the embedded world) follow, paper numbers only.
    paper = paper_rows(cfg["paper_setting"])
    table = pd.concat([table.merge(paper, on="algorithm", how="left"), paper[~paper.algorithm.isin(table.algorithm)]])
    table = table.reset_index(drop=True)
    categories = pd.DataFrame({"algorithm": table.algorithm[table.n_seeds.notna()]})
    for c in MT_BENCH_CATEGORIES:
        categories[c] = categories.algorithm.map(grouped[f"mt_bench_{c}"].mean())
    categories["overall"] = categories.algorithm.map(grouped["mt_bench"].mean())
    return table, categories


def markdown(table: pd.DataFrame, categories: pd.DataFrame) -> str:
    """Both tables as markdown: ``mean (std)`` cells, Arena-Hard with its CI, the paper's numbers beside."""

    def with_ci(row: pd.Series, metric: str) -> str:
        text = cell(row, metric)
        if metric == "arena_hard" and text:
            text += f" [{row.arena_hard_ci_low:.1f}, {row.arena_hard_ci_high:.1f}]"
        return text

    paper = [m for m in METRICS if f"paper_{m}" in table]
    head = [
        "policy",
        "seeds",
        *(HEADERS.get(m, m) for m in METRICS),
        "parse failures (AE / MT)",
        "judge calls (last run)",
        *(f"paper {HEADERS.get(m, m)}" for m in paper),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        lines.append(
            "| "
            + " | ".join(
                [
                    row.algorithm,
                    "paper only" if pd.isna(row.n_seeds) else str(int(row.n_seeds)),
                    *(with_ci(row, m) for m in METRICS),
                    *(
                        ["", ""]
                        if pd.isna(row.n_seeds)
                        else [
                            f"{int(row.alpaca_parse_failures)} / {int(row.mt_bench_parse_failures)}",
                            str(int(row.judge_requests)),
                        ]
                    ),
                    *("" if pd.isna(row[f"paper_{m}"]) else f"{row[f'paper_{m}']:g}" for m in paper),
                ]
            )
            + " |"
        )
    return "\n".join([*lines, *category_lines(categories)]) + "\n"


def write_chat_table(cfg: dict[str, Any], results: Path, csv: Path, md: Path, mt_bench_csv: Path, png: Path) -> None:
    """The table (``csv``, ``md``), MT-Bench per category (``mt_bench_csv``) and its radar chart (``png`` and the
    same name ``.pdf``: Figure 7 for Table 2)."""
    table, categories = chat_table(cfg, results)
    write_outputs(
        table, categories, markdown(table, categories), f"MT-Bench ({cfg['name']})", csv, md, mt_bench_csv, png
    )
