"""The learning-rate search table: every grid point listed, the best validation winrate selected."""

import json

import pandas as pd
import yaml

from eval.search import write_search_table


def test_search_selects_the_best_validation_winrate_per_algorithm(tmp_path):
    cfg = {"algorithms": ["rebel", "ppo"], "search": {"seed": 0, "lr": [0.0003, 0.001, 0.003]}}
    winrates = {("rebel", 0.0003): 60.0, ("rebel", 0.001): 70.0, ("rebel", 0.003): 65.0,
                ("ppo", 0.0003): 50.0, ("ppo", 0.001): 55.0, ("ppo", 0.003): 55.0}
    rm = {("ppo", 0.001): 0.5, ("ppo", 0.003): 0.7}  # a winrate tie is broken by the RM score
    for (algorithm, lr), winrate in winrates.items():
        folder = tmp_path / "search" / algorithm / f"lr{lr:g}"
        folder.mkdir(parents=True)
        (folder / "eval.json").write_text(json.dumps({"split": "val", "winrate": winrate, "kl": 1.0,
                                                      "rm_score": rm.get((algorithm, lr), 0.0)}))
    table = write_search_table(cfg, tmp_path / "search", tmp_path / "search.csv", tmp_path / "search.md")
    assert len(table) == 6 and (pd.read_csv(tmp_path / "search.csv").split == "val").all()
    assert table[table.selected].set_index("algorithm").lr.to_dict() == {"rebel": 0.001, "ppo": 0.003}
    block = (tmp_path / "search.md").read_text().split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(block) == {"policy_overrides": {"rebel": {"lr": 0.001}, "ppo": {"lr": 0.003}}}
