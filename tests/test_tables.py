"""Table building: the identical-prompt check and the budget table, on run records written by hand."""

import json

import pytest

from eval.tables import UnfairComparison, budget_table, check_identical_prompts, markdown, table1

CFG = {"model_size": "tiny", "algorithms": ["rebel", "rloo_k4"]}


def _run(sha: str, k: int, prompts: int, stream: str = "s" * 64, data: str = "prompts") -> dict:
    return {
        "prompt_order_sha256": sha,
        "prompt_stream_sha256": stream,
        "samples_per_prompt": k,
        "data": data,
        "lr": 1e-3,
        "iterations": prompts // 10,
        "counters": {
            "prompts": prompts,
            "generations": k * prompts,
            "generated_tokens": 10 * k * prompts,
            "reward_model_calls": k * prompts,
            "preference_queries": 0,
            "optimizer_steps": 8,
        },
    }


def test_runs_of_a_seed_must_share_the_prompt_order():
    runs = {
        ("rebel", 1): _run("a" * 64, 2, 100),
        ("rloo_k4", 1): _run("a" * 64, 4, 100),
        ("rebel", 2): _run("b" * 64, 2, 100),
        ("rloo_k4", 2): _run("b" * 64, 4, 100),
        ("dpo", 2): _run("d" * 64, 2, 100, stream="p" * 64, data="preference pairs"),
    }
    check_identical_prompts(runs)  # different seeds may differ; the offline run reads other data
    runs[("rloo_k4", 2)] = _run("c" * 64, 4, 100)
    with pytest.raises(
        UnfairComparison,
        match=r"^seed 2: the algorithms trained on different prompts "
        r"\(prompt_order_sha256: rebel=bbbbbbbbbbbb, rloo_k4=cccccccccccc\)",
    ):
        check_identical_prompts(runs)


def test_runs_matched_by_reward_model_calls_share_the_prompt_stream():
    # Matched by calls, REINFORCE (k = 1) consumes twice REBEL's prompts: orders differ, the stream may not.
    runs = {("rebel", 1): _run("a" * 64, 2, 100), ("reinforce", 1): _run("b" * 64, 1, 200)}
    check_identical_prompts(runs)
    runs[("reinforce", 1)] = _run("b" * 64, 1, 200, stream="t" * 64)
    with pytest.raises(UnfairComparison, match=r"prompt_stream_sha256: rebel=ssssssssssss, reinforce=tttttttttttt"):
        check_identical_prompts(runs)


def test_budget_table_averages_counters_over_seeds():
    runs = {("rebel", 1): _run("a", 2, 100), ("rebel", 2): _run("b", 2, 300), ("rloo_k4", 1): _run("a", 4, 100)}
    table = budget_table(CFG, runs).set_index("algorithm")
    assert table.loc["REBEL", "n_seeds"] == 2 and table.loc["REBEL", "prompts"] == 200
    assert table.loc["RLOO (k=4)", "reward_model_calls"] == 400
    assert table.loc["RLOO (k=4)", "samples_per_prompt"] == 4


def test_table1_shows_the_judging_interval_beside_the_seed_spread(tmp_path):
    evals = {}
    for (algorithm, seed), (win, low, high) in {
        ("sft", 1): (30, 26, 34),
        ("sft", 2): (32, 28, 36),
        ("rebel", 1): (70, 66, 74),
        ("rebel", 2): (74, 70, 78),
    }.items():
        evals[(algorithm, seed)] = tmp_path / f"{algorithm}{seed}.json"
        evals[(algorithm, seed)].write_text(
            json.dumps(
                {
                    "winrate": win,
                    "winrate_ci_low": low,
                    "winrate_ci_high": high,
                    "rm_score": 0.0,
                    "kl": 0.0,
                    "judge_parse_failures": 1,
                }
            )
        )
    df = table1({"model_size": "tiny", "algorithms": ["rebel"], "paper_setting": None}, evals)
    rows = df.set_index("algorithm")
    assert rows.loc["REBEL", "winrate_mean"] == 72 and rows.loc["REBEL", "winrate_std"] == pytest.approx(2**1.5)
    assert (rows.loc["REBEL", "winrate_ci_low"], rows.loc["REBEL", "winrate_ci_high"]) == (68, 76)
    assert rows.loc["SFT", "judge_parse_failures"] == 2
    assert "| tiny | REBEL | 2 | 72.00 (2.83) | 72.00 [70.0, 74.0] |  | [68.0, 76.0] |" in markdown(df, {})
