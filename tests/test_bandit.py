"""The exact-optimum testbed: the closed-form optimum, the tabular policy's log-probs, and convergence."""

import dataclasses
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, snakemake

from rebel import models as M
from rebel.bandit import BanditConfig, Problem, TabularPolicy, bradley_terry_policy, run
from rebel.cli import main
from rebel.errors import ConfigError
from rebel.paths import CONFIG_DIR

DEFAULT = BanditConfig.load(CONFIG_DIR / "testbed" / "bandit.yaml")


def test_optimum_maximizes_the_objective_and_the_gap_is_beta_kl():
    problem = Problem.make(dataclasses.replace(DEFAULT, beta=0.3))
    best = problem.objective(problem.optimal_logprobs)
    assert best == pytest.approx(
        (0.3 * torch.logsumexp(problem.ref_logprobs + problem.rewards / 0.3, -1)).mean().item()
    )
    for seed in range(5):
        logits = torch.randn(problem.rewards.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        logprobs = torch.log_softmax(logits, -1)
        gap = best - problem.objective(logprobs)
        assert gap > 0
        # J(π*) − J(π) = β KL(π‖π*): the regularized objective's gap is exactly a KL.
        assert gap == pytest.approx(0.3 * problem.kl_to_optimum(logprobs), rel=1e-10)


def test_tabular_policy_log_probs_through_the_shared_code():
    policy = TabularPolicy(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)))
    contexts, responses = torch.tensor([[0], [2], [2]]), torch.tensor([[4], [1], [3]])
    ones = torch.ones(3, 1, dtype=torch.long)
    logprobs = M.response_logprobs(policy, contexts, ones, responses, ones, temperature=1.0)
    expected = torch.log_softmax(policy.logits, -1)[contexts[:, 0], responses[:, 0]]
    torch.testing.assert_close(logprobs[:, 0], expected)


def test_rebel_reaches_the_optimum_and_iterative_dpo_does_not():
    cfg = dataclasses.replace(DEFAULT, seeds=(1,))
    rebel, idpo = run(cfg, "rebel", 1), run(cfg, "iterative_dpo", 1)
    assert rebel[0]["relative_gap"] == 1.0 and rebel[-1]["iteration"] == cfg.iterations
    assert rebel[-1]["relative_gap"] < 1e-3  # below 1e-3 of the starting gap
    # Sign labels keep only the order of the rewards: iterative DPO's fixed point is not π*.
    assert idpo[-1]["relative_gap"] > 1e-3
    assert rebel[-1]["reward_queries"] == cfg.iterations * cfg.contexts_per_iteration * 2


def test_bad_bandit_config_fails_in_one_line(tmp_path):
    path = tmp_path / "bandit.yaml"
    path.write_text("algorithms: [rebel]\nseeds: [1]\nlr: {rebel: 1.0}\nbetta: 1.0\n")
    with pytest.raises(ConfigError, match=r"unknown key 'betta'; allowed keys: algorithm_params, algorithms"):
        BanditConfig.load(path)
    path.write_text("algorithms: [rebel]\nlr: {rebel: 1.0}\n")
    with pytest.raises(ConfigError, match=r"key 'seeds' is missing"):
        BanditConfig.load(path)
    with pytest.raises(ConfigError, match=r"key 'algorithm_params.rebel': eta must be > 0"):
        BanditConfig(algorithms=("rebel",), seeds=(1,), lr={"rebel": 1.0}, algorithm_params={"rebel": {"eta": 0}})
    with pytest.raises(ConfigError, match=r"key 'lr.ppo': missing"):
        BanditConfig(algorithms=("ppo",), seeds=(1,))
    with pytest.raises(ConfigError, match=r"'dpo' is offline"):
        BanditConfig(algorithms=("dpo",), seeds=(1,), lr={"dpo": 1.0})


@pytest.mark.slow
def test_snakemake_builds_the_testbed_table_and_figure(tmp_path):
    snakemake(tmp_path, "tables/bandit.csv")
    table = pd.read_csv(tmp_path / "tables" / "bandit.csv").set_index("algorithm")
    assert list(table.index) == ["Iterative DPO", "PPO", "REINFORCE", "RLOO (k=2)", "RLOO (k=4)", "REBEL"]
    assert (table.n_seeds == 3).all()
    assert table.loc["REBEL", "final_relative_gap_mean"] < 1e-3
    assert (tmp_path / "figures" / "bandit.png").stat().st_size > 10_000 and (
        tmp_path / "figures" / "bandit.pdf"
    ).is_file()


def test_spo_rebel_approaches_the_minimax_winner_where_bradley_terry_cannot():
    """Appendix D: on a rock–paper–scissors preference (intransitive), REBEL with SPO self-play
    rewards drives the duality gap of its average policy towards 0 (the minimax winner is uniform);
    a Bradley–Terry reward fitted to the same preferences, optimized at any β, stays far from it."""
    cfg = BanditConfig(
        algorithms=("rebel",),
        seeds=(1,),
        lr={"rebel": 0.03},
        contexts=4,
        responses=3,
        reference_std=1.5,
        preference_strength=0.6,
        beta=0.0,
        iterations=1000,
        contexts_per_iteration=32,
        minibatch_contexts=16,
    )
    records = run(cfg, "rebel", 1)
    assert records[0]["duality_gap"] > 0.7  # π_ref, the starting policy
    assert records[-1]["average_duality_gap"] < 0.1
    problem = Problem.make(cfg)
    for beta in (0.01, 0.1, 1.0, 10.0):
        gap = problem.duality_gap(bradley_terry_policy(dataclasses.replace(cfg, beta=beta)))
        assert gap > 0.5, (beta, gap)


def test_bandit_cli_runs_and_reports_the_preference_setting(tmp_path):
    """The testbed config with Appendix D's preference setting runs through
    ``python -m rebel bandit`` (self-play records have no reward gap: it reports the duality gap)
    and through the report (table and figure of duality gaps)."""
    settings = yaml.safe_load((CONFIG_DIR / "testbed" / "bandit.yaml").read_text())
    settings |= {
        "algorithms": ["rebel", "rloo_k2"],
        "seeds": [1, 2],
        "responses": 3,
        "preference_strength": 0.6,
        "contexts": 4,
        "iterations": 20,
        "contexts_per_iteration": 16,
        "minibatch_contexts": 8,
        "lr": {"rebel": 0.03, "rloo_k2": 0.3},
    }
    config = tmp_path / "bandit-preference.yaml"
    config.write_text(yaml.safe_dump(settings))
    for algorithm in settings["algorithms"]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rebel",
                "bandit",
                "--threads",
                "1",
                "--bandit-config",
                str(config),
                "--algorithm",
                algorithm,
                "--out",
                str(tmp_path / "results" / algorithm),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"bandit: {algorithm} seed 1: average_duality_gap " in result.stdout
        records = pd.read_json(tmp_path / "results" / algorithm / "seed2.jsonl", lines=True)
        assert "gap" not in records and records.iteration.max() == 20
        assert records.average_duality_gap.between(0, 2 * 0.6).all() and records.duality_gap.notna().all()
    out = tmp_path / "tables"
    assert (
        main(
            [
                "bandit-report",
                "--threads",
                "1",
                "--bandit-config",
                str(config),
                "--results",
                str(tmp_path / "results"),
                "--csv",
                str(out / "bandit.csv"),
                "--md",
                str(out / "bandit.md"),
                "--png",
                str(tmp_path / "figures" / "bandit.png"),
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "bandit.csv").set_index("algorithm")
    assert list(table.index) == ["REBEL", "RLOO (k=2)"] and (table.n_seeds == 2).all()
    assert table.final_average_duality_gap_mean.between(0, 1.2).all() and "final_gap_mean" not in table
    assert (tmp_path / "figures" / "bandit.png").stat().st_size > 10_000
