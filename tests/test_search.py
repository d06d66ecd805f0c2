"""The search table: every grid point listed, the best validation winrate selected (lr per algorithm,
one kl_coef for all online algorithms)."""

import json

import pandas as pd
import yaml

from eval.search import write_search_table


def test_search_selects_the_best_validation_winrate_per_algorithm(tmp_path):
    cfg = {
        "algorithms": ["rebel", "ppo"],
        "search": {"seed": 0, "lr": [0.0003, 0.001, 0.003]},
        "policy": {"kl_coef": 0.1, "lr": 0.001},
        "policy_overrides": {},
    }
    winrates = {
        ("rebel", 0.0003): 60.0,
        ("rebel", 0.001): 70.0,
        ("rebel", 0.003): 65.0,
        ("ppo", 0.0003): 50.0,
        ("ppo", 0.001): 55.0,
        ("ppo", 0.003): 55.0,
    }
    rm = {("ppo", 0.001): 0.5, ("ppo", 0.003): 0.7}  # a winrate tie is broken by the RM score
    for (algorithm, lr), winrate in winrates.items():
        folder = tmp_path / "search" / algorithm / f"lr{lr:g}"
        folder.mkdir(parents=True)
        (folder / "eval.json").write_text(
            json.dumps({"split": "val", "winrate": winrate, "kl": 1.0, "rm_score": rm.get((algorithm, lr), 0.0)})
        )
    table = write_search_table(cfg, tmp_path / "search", tmp_path / "search.csv", tmp_path / "search.md")
    assert len(table) == 6 and (pd.read_csv(tmp_path / "search.csv").split == "val").all()
    assert table[table.selected].set_index("algorithm").lr.to_dict() == {"rebel": 0.001, "ppo": 0.003}
    block = (tmp_path / "search.md").read_text().split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(block) == {"policy_overrides": {"rebel": {"lr": 0.001}, "ppo": {"lr": 0.003}}}


def test_kl_coef_search_runs_every_online_algorithm_and_selects_one_gamma_for_all(tmp_path):
    """γ grid {0.05, 0.1, 0.2} at each algorithm's configured lr; the config's γ = 0.1 at that lr is the
    learning-rate sweep's run (not repeated); DPO (offline, no KL-shaped reward) is not swept."""
    from eval.search import kl_sweep

    cfg = {
        "algorithms": ["dpo", "rebel", "ppo"],
        "search": {"seed": 0, "lr": [0.001, 0.003], "kl_coef": [0.05, 0.1, 0.2]},
        "policy": {"kl_coef": 0.1, "lr": 0.001},
        "policy_overrides": {"ppo": {"lr": 0.003}},
    }
    assert kl_sweep(cfg) == [("rebel", 0.05), ("rebel", 0.2), ("ppo", 0.05), ("ppo", 0.2)]
    # REBEL is best at γ 0.05, PPO at 0.2; the mean over both is highest at 0.2 (65 vs 62.5 and 60).
    winrates = {
        "lr0.001": {"dpo": 50.0, "rebel": 60.0, "ppo": 40.0},
        "lr0.003": {"dpo": 52.0, "rebel": 58.0, "ppo": 60.0},
        "kl0.05": {"rebel": 70.0, "ppo": 55.0},
        "kl0.2": {"rebel": 62.0, "ppo": 68.0},
    }
    for point, by_algorithm in winrates.items():
        for algorithm, winrate in by_algorithm.items():
            folder = tmp_path / "search" / algorithm / point
            folder.mkdir(parents=True)
            (folder / "eval.json").write_text(json.dumps({"split": "val", "winrate": winrate, "rm_score": 0.0}))
    table = write_search_table(cfg, tmp_path / "search", tmp_path / "search.csv", tmp_path / "search.md")
    kls = table[table.sweep == "kl_coef"]
    assert len(kls) == 6 and set(kls.algorithm) == {"rebel", "ppo"}
    assert kls.set_index(["algorithm", "kl_coef"]).winrate[("ppo", 0.1)] == 60.0  # the lr sweep's run at lr 0.003
    assert set(kls[kls.selected].kl_coef) == {0.2}
    block = yaml.safe_load((tmp_path / "search.md").read_text().split("```yaml\n")[1].split("```")[0])
    assert block == {
        "policy_overrides": {"dpo": {"lr": 0.003}, "rebel": {"lr": 0.001}, "ppo": {"lr": 0.003}},
        "policy": {"kl_coef": 0.2},
    }


def test_search_target_schedules_the_kl_sweep_beside_the_lr_sweep(tmp_path):
    """``snakemake -n tables/search.csv`` on the smoke config: each algorithm at each lr, each online one at
    the γ the lr sweep does not cover (smoke: kl_coef 0.05 at its lr is an lr-sweep run)."""
    import re

    from conftest import snakemake

    out = snakemake(tmp_path, "tables/search.csv", "-n", "--quiet", "rules").stdout
    counts = {rule: int(n) for rule, n in re.findall(r"(?m)^(search_\w+)\s+(\d+)", out)}
    assert counts["search_train"] == 7 * 2 and counts["search_kl_train"] == 6
    assert counts["search_evaluate"] == 7 * 2 + 6 and counts["search_table"] == 1
