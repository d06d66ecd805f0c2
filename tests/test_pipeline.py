"""The smoke pipeline end to end through Snakemake: it learns, tables are complete, reruns are minimal."""

import json

import pandas as pd
import pytest

from conftest import snakemake

pytestmark = pytest.mark.slow


def test_table1_has_sft_and_rebel_rows_from_pipeline_files(smoke_run):
    table = pd.read_csv(smoke_run / "tables" / "table1.csv")
    assert table.algorithm.tolist() == ["SFT", "REBEL"]
    assert (table.n_seeds == 1).all()
    for algorithm, folder in (("SFT", "sft"), ("REBEL", "rebel")):
        written = json.loads((smoke_run / "results" / "smoke" / folder / "seed1" / "eval.json").read_text())
        row = table[table.algorithm == algorithm].iloc[0]
        assert row.winrate_mean == pytest.approx(written["winrate"], abs=1e-4)
        assert row.rm_score_mean == pytest.approx(written["rm_score"], abs=1e-4)
        assert row.kl_mean == pytest.approx(written["kl"], abs=1e-4)
    assert "reward model held-out accuracy" in (smoke_run / "tables" / "table1.md").read_text()
    budget = pd.read_csv(smoke_run / "tables" / "table1_budget.csv")
    run = json.loads((smoke_run / "results" / "smoke" / "rebel" / "seed1" / "run.json").read_text())
    assert budget.algorithm.tolist() == ["REBEL"]
    assert budget.iloc[0].reward_model_calls == run["counters"]["reward_model_calls"] == 2 * budget.iloc[0].prompts


def test_reward_goes_up_during_training(smoke_run):
    rows = [json.loads(line) for line in (smoke_run / "results/smoke/rebel/seed1/metrics.jsonl").read_text().splitlines()]
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
