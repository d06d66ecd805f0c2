"""Learning curves (eval/curves.py, stage `curves`) from hand-made curve.jsonl files."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import trim_mean

from eval.curves import curve_aggregates, curve_metric, load_curves, read_ceiling
from rebel.cli import main
from rebel.config import dump_config, load_config
from rebel.errors import HarnessError

SEEDS = (1, 2, 3)
ITERATIONS = (0, 5, 10)
PROMPTS_PER_ITERATION = 32
# Reward-model calls per prompt: REBEL (k=2) 2, PPO 1, DPO (offline) none: its `prompts` are preference pairs.
CALLS = {"rebel": 2, "ppo": 1, "dpo": 0}
# winrate[algorithm][seed] at ITERATIONS; the iterations-0 point is the SFT policy (same for every algorithm).
WINRATE = {
    "rebel": {1: [34.0, 60.0, 70.0], 2: [35.0, 62.0, 74.0], 3: [33.0, 58.0, 81.0]},
    "ppo": {1: [34.0, 50.0, 66.0], 2: [35.0, 55.0, 69.0], 3: [33.0, 57.0, 65.0]},
    "dpo": {1: [34.0, 52.0, 64.0], 2: [35.0, 49.0, 67.0], 3: [33.0, 51.0, 70.0]},
}
CEILING = {"winrate": 96.0, "gold_quality": 1.0, "rm_score": 2.1}


def config_file(folder):
    """The embedded config with this test's seeds and algorithms, as the stage reads it (--config)."""
    path = folder / "config.yaml"
    dump_config(load_config() | {"seeds": list(SEEDS)}, path)
    return str(path)


def write_runs(results, algorithms=tuple(WINRATE), seeds=SEEDS, drop=()):
    for algorithm in algorithms:
        for seed in seeds:
            folder = results / algorithm / f"seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for i, (iterations, winrate) in enumerate(zip(ITERATIONS, WINRATE[algorithm][seed])):
                prompts = iterations * PROMPTS_PER_ITERATION
                point = {
                    "iterations": iterations,
                    "prompts": prompts,
                    "reward_model_calls": prompts * CALLS[algorithm],
                    "preference_queries": 0,
                    "n_prompts": 200,
                    "judge": "gold",
                    "winrate": winrate,
                    "judged": 200,
                    "judge_parse_failures": 0,
                    "rm_score": -0.4 + 0.1 * i + 0.01 * seed,
                    "eos_rate": 1.0,
                    "gold_quality": winrate / 100,
                }
                lines.append(json.dumps({k: v for k, v in point.items() if k not in drop}))
            (folder / "curve.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The stage `curves` run once on the hand-made runs (the embedded config with seeds 1-3), with a ceiling."""
    root = tmp_path_factory.mktemp("curves")
    results = root / "results" / "embedded"
    write_runs(results)
    for seed in SEEDS:
        (results / "ceiling" / f"seed{seed}").mkdir(parents=True)
        (results / "ceiling" / f"seed{seed}" / "curve.json").write_text(json.dumps({"split": "val", **CEILING}))
    code = main(
        [
            "curves",
            "--config",
            config_file(root),
            "--results",
            str(results),
            "--algorithms",
            *WINRATE,
            "--png",
            str(root / "figures" / "curves.png"),
            "--csv",
            str(root / "tables" / "curves.csv"),
        ]
    )
    assert code == 0
    return root


def test_iqm_over_three_seeds_is_their_mean_and_the_ci_brackets_it(rendered):
    table = pd.read_csv(rendered / "tables" / "curves.csv")
    assert list(table.columns) == [
        "algorithm",
        "iterations",
        "x",
        "x_label",
        "metric",
        "iqm",
        "ci_low",
        "ci_high",
        "n_seeds",
    ]
    assert len(table) == len(WINRATE) * len(ITERATIONS)
    assert set(table.metric) == {"winrate"} and set(table.n_seeds) == {3}
    rows = table.set_index(["algorithm", "iterations"])
    # IQM = scipy's trim_mean(x, 0.25): with 3 values int(0.25 * 3) = 0 are cut from each end, i.e. the mean.
    assert rows.loc[("rebel", 10), "iqm"] == pytest.approx(75.0)  # (70 + 74 + 81) / 3
    assert rows.loc[("ppo", 5), "iqm"] == pytest.approx(54.0)  # (50 + 55 + 57) / 3
    assert rows.loc[("dpo", 10), "iqm"] == pytest.approx(67.0)  # (64 + 67 + 70) / 3
    for algorithm, runs in WINRATE.items():
        for i, iterations in enumerate(ITERATIONS):
            values = [runs[seed][i] for seed in SEEDS]
            row = rows.loc[(algorithm, iterations)]
            assert row.iqm == pytest.approx(trim_mean(values, 0.25), abs=1e-5)
            assert min(values) - 1e-6 <= row.ci_low <= row.iqm <= row.ci_high <= max(values) + 1e-6
    assert rows.loc[("rebel", 10), "ci_low"] < 75.0 < rows.loc[("rebel", 10), "ci_high"]


def test_x_is_reward_model_queries_and_for_dpo_preference_pairs(rendered):
    rows = pd.read_csv(rendered / "tables" / "curves.csv").set_index(["algorithm", "iterations"])
    assert rows.loc[("rebel", 10), "x"] == 10 * 32 * 2 and rows.loc[("rebel", 10), "x_label"] == "reward-model queries"
    assert rows.loc[("ppo", 10), "x"] == 10 * 32 and rows.loc[("ppo", 5), "x_label"] == "reward-model queries"
    assert rows.loc[("dpo", 10), "x"] == 10 * 32 and set(rows.loc["dpo", "x_label"]) == {"preference pairs"}
    assert rows.loc[("dpo", 0), "x"] == 0


def test_png_and_pdf_are_written(rendered):
    assert (rendered / "figures" / "curves.png").stat().st_size > 10_000
    assert (rendered / "figures" / "curves.pdf").stat().st_size > 5_000


def test_iqm_of_four_seeds_drops_the_outer_quarters_and_one_seed_has_a_point_ci():
    df = pd.DataFrame(
        {
            "algorithm": "rebel",
            "seed": [1, 2, 3, 4],
            "iterations": 5,
            "prompts": 160,
            "reward_model_calls": 320,
            "preference_queries": 0,
            "rm_score": [0.1, 0.2, 0.3, 1.0],
        }
    )
    row = curve_aggregates(df, "rm_score").iloc[0]
    assert row.iqm == pytest.approx(0.25)  # mean of the middle two
    assert row.iqm == pytest.approx(trim_mean([0.1, 0.2, 0.3, 1.0], 0.25))
    assert row.n_seeds == 4 and row.x == 320
    one = curve_aggregates(df[df.seed == 2], "rm_score").iloc[0]
    assert (one.iqm, one.ci_low, one.ci_high, one.n_seeds) == (0.2, 0.2, 0.2, 1)


def test_metric_falls_back_to_gold_quality_then_rm_score_and_ceiling_is_optional(tmp_path):
    write_runs(tmp_path, algorithms=("ppo",), drop=("winrate", "judge", "judged", "judge_parse_failures"))
    df = load_curves(tmp_path, ["ppo"], list(SEEDS))
    assert "winrate" not in df and {"gold_quality", "rm_score", "reward_model_calls"} <= set(df.columns)
    assert list(df.iterations[df.seed == 2]) == list(ITERATIONS)
    assert curve_metric(df) == "gold_quality"
    assert curve_metric(df.drop(columns="gold_quality")) == "rm_score"
    assert read_ceiling(tmp_path, list(SEEDS), "gold_quality") is None
    (tmp_path / "ceiling" / "seed2").mkdir(parents=True)
    (tmp_path / "ceiling" / "seed2" / "curve.json").write_text(json.dumps(CEILING))
    assert read_ceiling(tmp_path, list(SEEDS), "winrate") == 96.0
    assert np.isclose(read_ceiling(tmp_path, list(SEEDS), "rm_score"), 2.1)


def test_a_missing_curve_file_is_a_one_line_error_naming_it(tmp_path, capsys):
    write_runs(tmp_path, algorithms=("rebel",), seeds=(1, 3))
    missing = tmp_path / "rebel" / "seed2" / "curve.jsonl"
    with pytest.raises(HarnessError, match="seed2/curve.jsonl") as error:
        load_curves(tmp_path, ["rebel"], list(SEEDS))
    assert "\n" not in str(error.value)
    code = main(
        [
            "curves",
            "--config",
            config_file(tmp_path),
            "--results",
            str(tmp_path),
            "--algorithms",
            "rebel",
            "--png",
            str(tmp_path / "c.png"),
            "--csv",
            str(tmp_path / "c.csv"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(missing) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.png").exists()
