"""rliable aggregates over seeds (eval/aggregate.py) and Table 1's CI columns and ceiling row."""

import json

import numpy as np
import pytest

from eval.aggregate import iqm_intervals, probability_of_improvement
from eval.tables import CEILING, markdown, table1

REBEL = [70.0, 72.0, 74.0, 73.0, 71.0]
BETTER = [71.0, 72.0, 73.0, 74.0, 75.0]


def test_iqm_of_five_seeds_is_the_mean_of_the_middle_three_and_its_ci_brackets_it():
    # scipy.stats.trim_mean(x, 0.25) drops int(0.25 * 5) = 1 run at each end: mean(71, 72, 73) = 72.
    ((point, low, high),) = iqm_intervals({"rebel": REBEL}).values()
    assert point == pytest.approx(72.0)
    assert 70.0 <= low < point < high <= 74.0


def test_intervals_are_reproducible_and_leave_numpys_global_generator_alone():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = iqm_intervals({"rebel": REBEL, "other": BETTER})
    assert np.random.rand() == expected_next
    assert iqm_intervals({"rebel": REBEL, "other": BETTER}) == first


def test_probability_of_improvement_is_mann_whitney_with_ties_counted_half():
    # Pairs (x, y) with x from BETTER and y from REBEL: x > y in 15 of 25 pairs, x == y in 4 → (15 + 4/2) / 25 = 0.68.
    p, low, high = probability_of_improvement({"rebel": REBEL, "other": BETTER}, "rebel")["other"]
    assert p == pytest.approx(0.68)
    assert low < 0.68 < high
    clearly = probability_of_improvement({"rebel": REBEL, "worse": [x - 10 for x in REBEL]}, "rebel")["worse"]
    assert clearly == (0.0, 0.0, 0.0)


def _evals(tmp_path, values):
    evals = {}
    for algorithm, seeds in values.items():
        for seed, win in enumerate(seeds, start=1):
            path = tmp_path / f"{algorithm}{seed}.json"
            path.write_text(
                json.dumps(
                    {
                        "winrate": win,
                        "winrate_ci_low": win - 4,
                        "winrate_ci_high": win + 4,
                        "rm_score": 0.5,
                        "kl": 1.0,
                        "gold_quality": win / 100,
                        "judge_parse_failures": 0,
                    }
                )
            )
            evals[(algorithm, seed)] = path
    return evals


def test_table1_gains_iqm_and_improvement_columns_and_the_ceiling_row(tmp_path):
    evals = _evals(tmp_path, {"sft": [34.0] * 5, "rebel": REBEL, "ppo": BETTER})
    ceiling = {}
    for seed, win in enumerate([97.0, 97.5, 98.0, 97.0, 97.5], start=1):
        ceiling[seed] = tmp_path / f"ceiling{seed}.json"
        ceiling[seed].write_text(
            json.dumps(
                {
                    "winrate": win,
                    "winrate_ci_low": 95,
                    "winrate_ci_high": 99,
                    "rm_score": 1.1,
                    "gold_quality": 1.0,
                    "judge_parse_failures": 0,
                }
            )
        )
    df = table1({"model_size": "tiny", "algorithms": ["ppo", "rebel"], "paper_setting": None}, evals, ceiling)
    rows = df.set_index("algorithm")
    assert list(rows.index) == ["SFT", "PPO", "REBEL", CEILING]
    assert rows.loc["REBEL", "winrate_iqm"] == pytest.approx(72.0)
    assert rows.loc["PPO", "p_improve_vs_rebel"] == pytest.approx(0.68)
    assert np.isnan(rows.loc["REBEL", "p_improve_vs_rebel"])
    assert rows.loc[CEILING, "winrate_mean"] == pytest.approx(97.4)
    assert np.isnan(rows.loc[CEILING, "kl_mean"]) and np.isnan(rows.loc[CEILING, "winrate_iqm"])
    assert rows.loc["PPO", "gold_quality_mean"] == pytest.approx(0.73)
    text = markdown(df, {})
    assert "| tiny | PPO | 5 | 73.00 (1.58) | 73.00 [" in text
    assert "| 0.68 [" in text
