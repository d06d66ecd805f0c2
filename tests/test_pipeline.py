"""The smoke pipeline end to end through Snakemake: it learns, tables are complete, reruns are minimal."""

import json

import pandas as pd
import pytest
from conftest import snakemake

from eval.tables import CEILING

pytestmark = pytest.mark.slow


ROWS = {
    "SFT": "sft",
    "DPO": "dpo",
    "Iterative DPO": "iterative_dpo",
    "PPO": "ppo",
    "REINFORCE": "reinforce",
    "RLOO (k=2)": "rloo_k2",
    "RLOO (k=4)": "rloo_k4",
    "REBEL": "rebel",
}


def test_table1_has_every_algorithm_row_from_pipeline_files(smoke_run):
    table = pd.read_csv(smoke_run / "tables" / "table1.csv")
    assert table.algorithm.tolist() == [*ROWS, CEILING]
    assert (table.n_seeds == 1).all()
    ceiling = json.loads((smoke_run / "results" / "smoke" / "ceiling" / "seed1" / "eval.json").read_text())
    assert ceiling["gold_quality"] == 1.0 and ceiling["winrate"] > table.winrate_mean.iloc[:-1].max()
    for algorithm, folder in ROWS.items():
        written = json.loads((smoke_run / "results" / "smoke" / folder / "seed1" / "eval.json").read_text())
        row = table[table.algorithm == algorithm].iloc[0]
        assert row.winrate_mean == pytest.approx(written["winrate"], abs=1e-4)
        assert row.rm_score_mean == pytest.approx(written["rm_score"], abs=1e-4)
        assert row.kl_mean == pytest.approx(written["kl"], abs=1e-4)
    assert "reward model held-out accuracy" in (smoke_run / "tables" / "table1.md").read_text()
    budget = pd.read_csv(smoke_run / "tables" / "table1_budget.csv").set_index("algorithm")
    assert budget.index.tolist() == list(ROWS)[1:]
    for algorithm, folder in list(ROWS.items())[1:]:
        run = json.loads((smoke_run / "results" / "smoke" / folder / "seed1" / "run.json").read_text())
        assert budget.loc[algorithm, "reward_model_calls"] == run["counters"]["reward_model_calls"]
    assert budget.loc["REBEL", "reward_model_calls"] == 2 * budget.loc["REBEL", "prompts"]
    assert budget.loc["DPO", "reward_model_calls"] == 0 and budget.loc["DPO", "data"] == "preference pairs"
    assert budget.prompts.nunique() == 1  # matched by iterations: the same prompts (pairs for DPO) for all


def test_online_algorithms_of_a_seed_saw_identical_prompts(smoke_run):
    runs = {
        folder: json.loads((smoke_run / "results" / "smoke" / folder / "seed1" / "run.json").read_text())
        for folder in list(ROWS.values())[1:]
    }
    online = {a: r for a, r in runs.items() if a != "dpo"}
    assert all(r["data"] == "prompts" for r in online.values())
    assert len({r["prompt_order_sha256"] for r in online.values()}) == 1
    assert len({r["prompt_stream_sha256"] for r in online.values()}) == 1
    assert runs["dpo"]["prompt_order_sha256"] not in {r["prompt_order_sha256"] for r in online.values()}


def test_reward_goes_up_during_training(smoke_run):
    rows = [
        json.loads(line) for line in (smoke_run / "results/smoke/rebel/seed1/metrics.jsonl").read_text().splitlines()
    ]
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.05, (first, last)
    counters = rows[-1]
    assert counters["prompts"] == 16 * len(rows)
    assert counters["generations"] == counters["reward_model_calls"] == 2 * counters["prompts"]


def test_run_records_prompt_order_and_budget(smoke_run):
    run = json.loads((smoke_run / "results/smoke/rebel/seed1/run.json").read_text())
    assert len(run["prompt_order_sha256"]) == 64
    assert run["samples_per_prompt"] == 2
    assert run["counters"]["optimizer_steps"] == run["iterations"] * 2 * 2  # epochs x minibatches


def test_rerun_with_nothing_changed_does_nothing(smoke_run):
    result = snakemake(smoke_run, "tables/table1.csv", "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_deleting_a_table_reruns_only_the_table_rule(smoke_run):
    (smoke_run / "tables" / "table1.csv").unlink()
    result = snakemake(smoke_run, "tables/table1.csv", "-n", "--quiet", "rules")
    out = result.stdout + result.stderr
    assert "table1" in out
    for rule in ("data", "sft", "reward_model", "train", "evaluate"):
        assert f"\n{rule} " not in out and not out.lstrip().startswith(f"{rule} ")
    snakemake(smoke_run, "tables/table1.csv")
    assert (smoke_run / "tables" / "table1.csv").is_file()


def test_lint_is_clean(tmp_path):
    result = snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
