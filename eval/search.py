"""The search table: every grid point of every algorithm, and the selections.

Two sweeps, one factor at a time, each run once at ``search.seed`` (a seed the reported runs do
not use) with the reported runs' budget and judged on the validation prompts:

- learning rate: every algorithm at every ``search.lr``, at the config's ``policy.kl_coef``; the
  selected learning rate maximizes the algorithm's validation winrate (ties: the higher RM
  score) and goes into ``policy_overrides``;
- KL coefficient γ (Eq. 22): every online algorithm at every ``search.kl_coef``, at its
  configured learning rate. γ defines the KL-regularized reward every algorithm optimizes, so
  it stays one value for all: the selected γ maximizes the mean validation winrate over the
  online algorithms (each algorithm's own best is listed too). DPO has no KL-shaped reward.

The selections are written as the config block to put in the config, so that the table's runs
use them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from eval.tables import display_name
from rebel.algorithms import resolve_algorithm
from rebel.config import policy_settings

COLUMNS = ("split", "winrate", "rm_score", "kl", "gold_quality", "eos_rate")


def online_algorithms(cfg: dict[str, Any]) -> list[str]:
    return [a for a in cfg["algorithms"] if not resolve_algorithm(a, cfg.get("variants")).offline]


def kl_sweep(cfg: dict[str, Any]) -> list[tuple[str, float]]:
    """The (algorithm, γ) runs of the KL sweep: each online algorithm at each ``search.kl_coef`` except the
    config's own γ when the learning-rate sweep already has that point (the algorithm's configured lr)."""
    grid = cfg["search"].get("kl_coef") or []
    runs = []
    for algorithm in online_algorithms(cfg):
        lr = policy_settings(cfg, algorithm)["policy"]["lr"]
        for kl in grid:
            if not (kl == cfg["policy"]["kl_coef"] and lr in cfg["search"]["lr"]):
                runs.append((algorithm, kl))
    return runs


def _read(folder: Path) -> dict[str, Any]:
    evaluation = json.loads((folder / "eval.json").read_text())
    return {k: evaluation.get(k, float("nan")) for k in COLUMNS}


def search_table(cfg: dict[str, Any], results: Path) -> pd.DataFrame:
    """One row per grid point (``sweep`` lr or kl_coef) with its validation numbers and a ``selected`` flag."""
    kl_config = cfg["policy"]["kl_coef"]
    records = [
        {
            "sweep": "lr",
            "algorithm": algorithm,
            "label": display_name(algorithm, cfg),
            "lr": lr,
            "kl_coef": kl_config,
            **_read(results / algorithm / f"lr{lr:g}"),
        }
        for algorithm in cfg["algorithms"]
        for lr in cfg["search"]["lr"]
    ]
    swept = set(kl_sweep(cfg))
    for algorithm in online_algorithms(cfg) if cfg["search"].get("kl_coef") else []:
        lr = policy_settings(cfg, algorithm)["policy"]["lr"]
        for kl in cfg["search"]["kl_coef"]:
            folder = results / algorithm / (f"kl{kl:g}" if (algorithm, kl) in swept else f"lr{lr:g}")
            records.append(
                {
                    "sweep": "kl_coef",
                    "algorithm": algorithm,
                    "label": display_name(algorithm, cfg),
                    "lr": lr,
                    "kl_coef": kl,
                    **_read(folder),
                }
            )
    df = pd.DataFrame(records)
    lrs = df[df.sweep == "lr"]
    best_lr = lrs.sort_values(["winrate", "rm_score"], ascending=False).groupby("algorithm").head(1).index
    df["selected"] = df.index.isin(best_lr)
    kls = df[df.sweep == "kl_coef"]
    if len(kls):
        df.loc[kls.index[kls.kl_coef == selected_kl_coef(df)], "selected"] = True
    return df


def kl_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per γ of the KL sweep: the mean validation winrate over the online algorithms, and each one's."""
    kls = df[df.sweep == "kl_coef"]
    wide = kls.pivot(index="kl_coef", columns="label", values="winrate")
    wide.insert(0, "mean winrate", wide.mean(axis=1))
    return wide.reset_index()


def selected_kl_coef(df: pd.DataFrame) -> float:
    """The γ of the highest mean validation winrate over the online algorithms (ties: the larger γ, closer to π_ref)."""
    summary = kl_summary(df)
    return float(summary.sort_values(["mean winrate", "kl_coef"], ascending=False).kl_coef.iloc[0])


def write_search_table(cfg: dict[str, Any], results: Path, out_csv: Path, out_md: Path) -> pd.DataFrame:
    df = search_table(cfg, results)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False, float_format="%.4f")
    lrs = df[df.sweep == "lr"]
    block: dict[str, Any] = {
        "policy_overrides": {row.algorithm: {"lr": float(row.lr)} for row in lrs[lrs.selected].itertuples()}
    }
    text = (
        f"Learning-rate search: seed {cfg['search']['seed']}, validation prompts, the same grid "
        f"{cfg['search']['lr']} and budget for every algorithm, at kl_coef {cfg['policy']['kl_coef']:g} "
        "(selected: highest winrate).\n\n"
        + lrs.drop(columns=["sweep", "algorithm"]).to_markdown(index=False, floatfmt=".4g")
        + "\n"
    )
    if (df.sweep == "kl_coef").any():
        chosen = selected_kl_coef(df)
        block["policy"] = {"kl_coef": chosen}
        text += (
            f"\nKL-coefficient search: the same seed and prompts, grid {cfg['search']['kl_coef']} for every "
            "online algorithm at its configured learning rate. γ defines the reward all of them optimize "
            f"(Eq. 22), so one γ is selected for all: the highest mean winrate over the algorithms, {chosen:g}.\n\n"
            + kl_summary(df).to_markdown(index=False, floatfmt=".4g")
            + "\n\nEvery KL-sweep point:\n\n"
            + df[df.sweep == "kl_coef"].drop(columns=["sweep", "algorithm"]).to_markdown(index=False, floatfmt=".4g")
            + "\n"
        )
    out_md.write_text(
        text + "\nConfig block for the selection:\n\n```yaml\n" + yaml.safe_dump(block, sort_keys=False) + "```\n"
    )
    return df
