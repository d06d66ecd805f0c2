"""The learning-rate search table: every grid point of every algorithm, and the selection.

Each algorithm is trained once per learning rate of ``search.lr`` at ``search.seed`` (a seed
the reported runs do not use), with the reported runs' budget, and judged on the
validation prompts; the selected learning rate maximizes the validation winrate (ties:
the higher RM score). The selection is written as the ``policy_overrides`` block to put
in the config, so that the table's runs use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from eval.tables import display_name


def search_table(cfg: dict[str, Any], results: Path) -> pd.DataFrame:
    """One row per (algorithm, lr) with its validation numbers and a ``selected`` flag."""
    records = []
    for algorithm in cfg["algorithms"]:
        for lr in cfg["search"]["lr"]:
            run = results / algorithm / f"lr{lr:g}"
            evaluation = json.loads((run / "eval.json").read_text())
            records.append({"algorithm": algorithm, "label": display_name(algorithm), "lr": lr,
                            **{k: evaluation.get(k, float("nan"))
                               for k in ("split", "winrate", "rm_score", "kl", "gold_quality", "eos_rate")}})
    df = pd.DataFrame(records)
    best = df.sort_values(["winrate", "rm_score"], ascending=False).groupby("algorithm").head(1).index
    df["selected"] = df.index.isin(best)
    return df


def write_search_table(cfg: dict[str, Any], results: Path, out_csv: Path, out_md: Path) -> pd.DataFrame:
    df = search_table(cfg, results)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False, float_format="%.4f")
    chosen = {row.algorithm: {"lr": float(row.lr)} for row in df[df.selected].itertuples()}
    out_md.write_text(
        f"Learning-rate search: seed {cfg['search']['seed']}, validation prompts, the same grid "
        f"{cfg['search']['lr']} and budget for every algorithm (selected: highest winrate).\n\n"
        + df.drop(columns="algorithm").to_markdown(index=False, floatfmt=".4g")
        + "\n\nConfig block for the selection:\n\n```yaml\n"
        + yaml.safe_dump({"policy_overrides": chosen}, sort_keys=False) + "```\n")
    return df
