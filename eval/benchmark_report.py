"""Figure 2 (paper §5.1): runtime and peak memory per policy iteration, from ``benchmark.json`` files.

``python -m rebel benchmark`` writes the files (:mod:`rebel.benchmark`); this module only reads
them. Figure: per benchmark, stacked bars of seconds per iteration (generation, scoring, policy
update) and bars of peak memory, methods in the order of paper Figure 2 (ascending winrate),
a dashed line between the lower-winrate methods and the top group (PPO, RLOO k=4, REBEL).
Table: the same numbers with the ratios REBEL / method for time and memory, and the paper's
claim that REBEL is faster and needs less memory than PPO and RLOO (k=4).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from eval.tables import PAPER_RESULTS, display_name  # noqa: E402
from rebel.benchmark import FIGURE2_ALGORITHMS  # noqa: E402
from rebel.errors import HarnessError  # noqa: E402

TOP_GROUP = ("ppo", "rloo_k4", "rebel")
"""Right of Figure 2's dashed line: winrates comparable to REBEL's (§5.1)."""
CLAIM_BASELINES = ("ppo", "rloo_k4")
"""§5.1: 'Compared to PPO and RLOO (k=4), REBEL demonstrates shorter runtimes and lower peak memory usage.'"""
PHASES = (
    ("generation", "generation (sampling)", "#4c72b0"),
    ("scoring", "scoring (log π_t, log π_0, RM, critic)", "#8fb0d9"),
    ("update", "policy update", "#dd8452"),
)
REQUIRED = ("shape", "device", "settings", "algorithms", "note")


def paper_winrates() -> dict[str, tuple[float, str]]:
    """Paper Table 1 TL;DR winrate per algorithm: at 2.8B (Figure 2's size) where reported, else at
    6.9B (REINFORCE and RLOO are reported only there, quoted from Ahmadian et al. 2024)."""
    df = pd.read_csv(PAPER_RESULTS)
    df = df[(df.table == "table1") & (df.setting == "tldr") & (df.metric == "winrate")]
    out: dict[str, tuple[float, str]] = {}
    for size in ("6.9b", "2.8b"):  # 2.8B last, so it wins
        for row in df[df.model_size == size].itertuples():
            out[row.algorithm] = (float(row.value), size)
    return out


def load_benchmark(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise HarnessError(f"benchmark result '{path}' not found; run: python -m rebel benchmark --shape S --out DIR")
    result = json.loads(path.read_text())
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise HarnessError(f"benchmark result '{path}' lacks key '{missing[0]}'")
    return result


def benchmark_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (benchmark, algorithm), methods in Figure 2's order (others after them)."""
    winrates = paper_winrates()
    rows = []
    for result in results:
        by_name = {a["algorithm"]: a for a in result["algorithms"]}
        if "rebel" not in by_name:
            raise HarnessError(f"benchmark of shape '{result['shape']}' has no 'rebel' entry to compare against")
        order = [a for a in FIGURE2_ALGORITHMS if a in by_name] + [a for a in by_name if a not in FIGURE2_ALGORITHMS]
        rebel = by_name["rebel"]
        # On a CPU the process's CPU seconds (steady under other load); on a GPU wall seconds, as the paper.
        basis = "cpu_" if "cpu_total_s" in rebel else ""
        for name in order:
            entry, label = by_name[name], display_name(name)
            winrate, size = winrates.get(label, (float("nan"), ""))
            rows.append(
                {
                    "shape": result["shape"],
                    "device": result["device"]["name"],
                    "algorithm": label,
                    "paper_winrate": winrate,
                    "paper_winrate_size": size,
                    "group": "top" if name in TOP_GROUP else ("lower" if name in FIGURE2_ALGORITHMS else ""),
                    "samples_per_prompt": entry["samples_per_prompt"],
                    "update_passes": entry["update_passes"],
                    "generation_s": entry["generation_s"],
                    "scoring_s": entry["scoring_s"],
                    "update_s": entry["update_s"],
                    "total_s": entry["total_s"],
                    **{
                        f"cpu_{p}_s": entry.get(f"cpu_{p}_s", float("nan"))
                        for p in ("generation", "scoring", "update", "total")
                    },
                    "peak_memory_gib": entry["peak_memory_gib"],
                    "memory_kind": entry["memory_kind"],
                    "time_basis": "CPU seconds" if basis else "wall seconds",
                    "rebel_time_ratio": rebel[f"{basis}total_s"] / entry[f"{basis}total_s"],
                    "rebel_memory_ratio": rebel["peak_memory_gib"] / entry["peak_memory_gib"],
                }
            )
    return pd.DataFrame(rows)


def claims_table(table: pd.DataFrame) -> pd.DataFrame:
    """REBEL / PPO and REBEL / RLOO (k=4), time and memory, against the paper's claim (< 1)."""
    rows = []
    for shape, group in table.groupby("shape", sort=False):
        for name in CLAIM_BASELINES:
            match = group[group.algorithm == display_name(name)]
            if match.empty:
                continue
            row = match.iloc[0]
            for what, column in (("time", "rebel_time_ratio"), ("memory", "rebel_memory_ratio")):
                basis = f" ({row.time_basis})" if what == "time" else ""
                rows.append(
                    {
                        "shape": shape,
                        "device": row.device,
                        "ratio": f"REBEL / {row.algorithm} {what}{basis}",
                        "measured": row[column],
                        "paper_claim": "< 1 (REBEL faster / less memory, §5.1)",
                        "holds": bool(row[column] < 1),
                    }
                )
    return pd.DataFrame(rows)


def _plot(results: list[dict[str, Any]], table: pd.DataFrame, png: Path) -> None:
    fig, axes = plt.subplots(len(results), 2, figsize=(13, 4.6 * len(results)), squeeze=False)
    for (time_ax, mem_ax), result in zip(axes, results):
        rows = table[table["shape"] == result["shape"]].reset_index(drop=True)
        x = range(len(rows))
        labels = [name.replace(" (", "\n(").replace("Iterative DPO", "Iterative\nDPO") for name in rows.algorithm]
        cpu = rows.time_basis.iloc[0] == "CPU seconds"
        prefix = "cpu_" if cpu else ""
        bottom = pd.Series(0.0, index=rows.index)
        for phase, legend, color in PHASES:
            time_ax.bar(x, rows[f"{prefix}{phase}_s"], bottom=bottom, color=color, label=legend, width=0.7)
            bottom += rows[f"{prefix}{phase}_s"]
        for i, total in enumerate(rows[f"{prefix}total_s"]):
            time_ax.annotate(f"{total:.3g}", (i, total), ha="center", va="bottom", fontsize=8)
        gpu = rows.memory_kind.iloc[0] == "gpu"
        mem_ax.bar(x, rows.peak_memory_gib, color="#55a868", width=0.7)
        for i, peak in enumerate(rows.peak_memory_gib):
            mem_ax.annotate(f"{peak:.3g}", (i, peak), ha="center", va="bottom", fontsize=8)
        settings = result["settings"]
        where = (
            f"{result['device']['name']} · {result['shape']} shape, random init (timing only) · "
            f"{settings['prompts_per_iteration']} prompts × {settings['prompt_length']} tokens, "
            f"{settings['response_length']} new tokens · mean of {settings['iterations_averaged']} iteration(s) "
            f"after {settings['warmup_iterations']} warm-up, {settings['repeats']} round(s)"
        )
        time_ax.set_title(where, loc="left", fontsize=9)
        time_ax.set_ylabel("CPU time per iteration (s, user + system)" if cpu else "time per iteration (s)")
        mem_ax.set_ylabel("peak GPU memory allocated (GiB)" if gpu else "peak resident memory, RSS (GiB)")
        split = [i for i, g in enumerate(rows.group) if g == "top"]
        for ax in (time_ax, mem_ax):
            ax.set_xticks(list(x), labels, fontsize=9)
            ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
            ax.grid(axis="y", alpha=0.3)
            if split and split[0] > 0:
                ax.axvline(split[0] - 0.5, color="black", linestyle="--", linewidth=1)
        time_ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Figure 2 reproduction: runtime and peak memory of one policy iteration. Methods in ascending "
        "paper winrate\n(Table 1 TL;DR: 2.8B; REINFORCE and RLOO at 6.9B); right of the dashed line: "
        "winrates comparable to REBEL's (PPO, RLOO k=4, REBEL)",
        fontsize=10,
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)


def _markdown(table: pd.DataFrame, claims: pd.DataFrame, results: list[dict[str, Any]]) -> str:
    lines = ["# Figure 2: runtime and peak memory per policy iteration", ""]
    for result in results:
        lines += [
            f"- `{result['shape']}` on {result['device']['name']} ({result['date']}; torch "
            f"{result['versions']['torch']}, transformers {result['versions']['transformers']}, peft "
            f"{result['versions']['peft']}): {result['note']}. Memory: {result['memory_measured']}."
        ]
    shown = (
        table.drop(
            columns=[
                "device",
                "memory_kind",
                "group",
                "time_basis",
                "cpu_generation_s",
                "cpu_scoring_s",
                "cpu_update_s",
            ]
        )
        .dropna(axis=1, how="all")
        .rename(
            columns={
                "paper_winrate": "paper winrate %",
                "paper_winrate_size": "at",
                "samples_per_prompt": "k",
                "update_passes": "passes",
                "generation_s": "generation s",
                "scoring_s": "scoring s",
                "update_s": "update s",
                "total_s": "total s",
                "cpu_total_s": "total CPU s",
                "peak_memory_gib": "peak GiB",
                "rebel_time_ratio": "REBEL/this time",
                "rebel_memory_ratio": "REBEL/this memory",
            }
        )
    )
    lines += [
        "",
        shown.to_markdown(index=False, floatfmt=".3g"),
        "",
        "Methods in paper Figure 2's order (ascending paper winrate); REBEL/this < 1: REBEL faster or smaller. "
        "Seconds per phase are wall seconds; on a CPU the time ratios use the process's CPU seconds "
        "(total CPU s), which other processes on a shared machine disturb less.",
        "",
        "## Against the paper's claim (§5.1)",
        "",
        claims.to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    return "\n".join(lines)


def write_figure2(benchmarks: list[Path], png: Path, csv: Path, md: Path) -> pd.DataFrame:
    """Render ``png`` (and the PDF beside it), ``csv`` and ``md`` from benchmark result files."""
    results = [load_benchmark(Path(path)) for path in benchmarks]
    table = benchmark_table(results)
    claims = claims_table(table)
    _plot(results, table, png)
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False, float_format="%.4g")
    md.write_text(_markdown(table, claims, results))
    return table
