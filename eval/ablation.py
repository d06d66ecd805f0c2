"""Table 6 (paper appendix J): REBEL at each η of ``ablation.eta``, everything else as in Table 1.

η is the only hyperparameter REBEL adds (Eq. 1); the paper tries η ∈ {0.3, 0.7, 1.0, 2.0} on
TL;DR at 2.8B with the appendix H.1.5 settings otherwise. Each η is trained and evaluated for
every seed of the config under ``results/<name>/ablation/eta<η>/seed<S>/``; the config's own η
(``algorithm_params.rebel.eta``) reuses Table 1's REBEL runs when REBEL is one of the
``algorithms``. Every number is read from those runs' ``eval.json``; the paper's 2.8B numbers
(``workflow/resources/paper-results.csv``, the only size the paper ablates) stand beside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from eval.tables import METRICS, paper_numbers
from rebel.algorithms.rebel import REBELParams

PAPER_SETTING = {"setting": "tldr", "model_size": "2.8b"}


def eta_label(eta: float) -> str:
    """The η as written in run folders (``eta0.3``) and on the train command line."""
    return f"{eta:g}"


def own_eta(cfg: dict[str, Any]) -> float | None:
    """The η of Table 1's REBEL runs, or None when REBEL is not one of the config's algorithms."""
    if "rebel" not in cfg["algorithms"]:
        return None
    return float(cfg["algorithm_params"].get("rebel", {}).get("eta", REBELParams.eta))


def run_dirs(cfg: dict[str, Any], results: Path) -> dict[tuple[float, int], Path]:
    """The run folder of every (η, seed) of the ablation under a results folder ``results/<name>``."""
    reused = own_eta(cfg)
    return {
        (float(eta), seed): (
            results / "rebel" if float(eta) == reused else results / "ablation" / f"eta{eta_label(eta)}"
        )
        / f"seed{seed}"
        for eta in cfg["ablation"]["eta"]
        for seed in cfg["seeds"]
    }


def table6(cfg: dict[str, Any], results: Path) -> pd.DataFrame:
    """One row per η (the config's order): mean, std (ddof=1) and n over seeds; the paper's numbers beside."""
    dirs = run_dirs(cfg, results)
    records = [
        {"eta": eta, "seed": seed, **json.loads((path / "eval.json").read_text())} for (eta, seed), path in dirs.items()
    ]
    grouped = pd.DataFrame(records).groupby("eta", sort=False)
    out = pd.DataFrame({"model_size": cfg["model_size"], "eta": [float(e) for e in cfg["ablation"]["eta"]]})
    out["n_seeds"] = out.eta.map(grouped.size())
    for metric in METRICS:
        out[f"{metric}_mean"] = out.eta.map(grouped[metric].mean())
        out[f"{metric}_std"] = out.eta.map(grouped[metric].std(ddof=1))
    out["table1_runs"] = out.eta == own_eta(cfg)
    paper = paper_numbers(PAPER_SETTING, "table6")
    paper = paper.assign(eta=paper.algorithm.str.extract(r"eta=([0-9.]+)", expand=False).astype(float))
    out = out.merge(paper.drop(columns="algorithm"), on="eta", how="left")
    for metric in METRICS:
        if f"paper_{metric}" not in out:
            out[f"paper_{metric}"] = float("nan")
    return out.drop(columns=[c for c in out if c.startswith("paper_") and c.endswith("_std")])


def markdown(cfg: dict[str, Any], df: pd.DataFrame) -> str:
    """Table 6 as ``mean (std)`` cells, the best value per column in bold (highest winrate and RM score,
    lowest KL, as the paper marks them), the paper's 2.8B numbers beside."""
    best = {"winrate": df.winrate_mean.max(), "rm_score": df.rm_score_mean.max(), "kl": df.kl_mean.min()}

    def cell(row: Any, metric: str) -> str:
        mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
        text = f"{mean:.2f}" + ("" if pd.isna(std) else f" ({std:.2f})")
        return f"**{text}**" if mean == best[metric] else text

    def paper(value: float) -> str:
        return "" if pd.isna(value) else f"{value:g}"

    lines = [
        f"Table 6 (appendix J): REBEL η ablation, config '{cfg['name']}' (model {cfg['model_size']}), "
        f"mean (std) over seeds {cfg['seeds']}; paper: TL;DR 2.8B, one run per η.",
        "",
        "| η | seeds | winrate % | RM score | KL(π_T‖π_ref,T) | paper winrate % | paper RM score | paper KL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in df.itertuples():
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{row.eta:g}" + (" (Table 1 runs)" if row.table1_runs else ""),
                    str(row.n_seeds),
                    *(cell(row, m) for m in METRICS),
                    *(paper(getattr(row, f"paper_{m}")) for m in METRICS),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_table6(cfg: dict[str, Any], results: Path, out_csv: Path, out_md: Path) -> pd.DataFrame:
    df = table6(cfg, results)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False, float_format="%.4f")
    out_md.write_text(markdown(cfg, df))
    return df
