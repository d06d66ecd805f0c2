"""The shared loop: identical prompt order for every algorithm, and exact resumption after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import SMOKE
from conftest import train_command as _train
from safetensors.torch import load_file

from eval.tables import check_identical_prompts
from rebel.algorithms import build_algorithm
from rebel.errors import ConfigError
from rebel.loop import prompt_schedule

TIMING = ("seconds", "peak_", "lr")


def test_prompt_schedule_depends_only_on_seed_and_sizes():
    a = prompt_schedule(100, 16, 20, seed=3)
    assert a.shape == (20, 16)
    np.testing.assert_array_equal(a, prompt_schedule(100, 16, 20, seed=3))
    assert not np.array_equal(a, prompt_schedule(100, 16, 20, seed=4))
    # Each pass over the data visits every prompt once before any repeats.
    assert sorted(a.reshape(-1)[:100].tolist()) == list(range(100))
    # A shorter run sees a prefix of the same order.
    np.testing.assert_array_equal(prompt_schedule(100, 16, 5, seed=3), a[:5])


def _smoke_variant(tmp_path, name, change):
    """The smoke config with ``change(config)`` applied, written to ``tmp_path/name.yaml``."""
    config = yaml.safe_load(SMOKE.read_text())
    change(config)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _metrics(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rebel", "reinforce", "ppo", "dpo"])  # a baseline, a critic, offline data
def test_killed_run_resumes_to_identical_results(smoke_run, tmp_path, algorithm):
    subprocess.run(_train(smoke_run, tmp_path / "straight", algorithm), check=True, capture_output=True)

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(_train(smoke_run, resumed, algorithm), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = resumed / "checkpoint" / "state" / "meta.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text())["iteration"] >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "run.json").exists(), "the run finished before it could be killed"
    killed_at = len((resumed / "checkpoint" / "metrics.jsonl").read_text().splitlines())

    subprocess.run(_train(smoke_run, resumed, algorithm), check=True, capture_output=True)
    straight_rows, resumed_rows = _metrics(tmp_path / "straight" / "metrics.jsonl"), _metrics(resumed / "metrics.jsonl")
    assert 0 < killed_at < len(straight_rows)
    assert resumed_rows == straight_rows
    a = load_file(tmp_path / "straight" / "policy" / "adapter_model.safetensors")
    b = load_file(resumed / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_two_processes_split_prompts_and_sum_counters(smoke_run, tmp_path):
    """Under torchrun with 2 processes: same prompt order and budget as one process, one writer."""
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run(_train(smoke_run, single), check=True, capture_output=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "rebel"]
    subprocess.run(launcher + _train(smoke_run, double)[3:], check=True, capture_output=True)
    one, two = (json.loads((run / "run.json").read_text()) for run in (single, double))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["prompt_order_sha256"] == one["prompt_order_sha256"]
    assert two["counters"] == one["counters"]
    assert len(_metrics(double / "metrics.jsonl")) == one["iterations"]
    learning_rates = [
        [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (single, double)
    ]
    assert learning_rates[0] == learning_rates[1]  # one scheduler step per global optimizer step
    assert not (double / "checkpoint").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm, k, passes",
    [
        ("iterative_dpo", 2, 2),
        ("ppo", 1, 2),
        ("reinforce", 1, 1),
        ("rloo_k2", 2, 1),
        ("rloo_k4", 4, 1),
        ("rebel", 2, 2),
    ],
)
def test_each_online_algorithm_runs_on_the_shared_loop(smoke_run, algorithm, k, passes):
    """The smoke pipeline's runs: same prompts as REBEL, k samples per prompt, the algorithm's own passes."""
    folder = smoke_run / "results" / "smoke"
    run = json.loads((folder / algorithm / "seed1" / "run.json").read_text())
    rebel = json.loads((folder / "rebel" / "seed1" / "run.json").read_text())
    assert run["prompt_order_sha256"] == rebel["prompt_order_sha256"]
    counters = run["counters"]
    assert (
        counters["generations"]
        == counters["reward_model_calls"]
        == k * counters["prompts"]
        == k * rebel["counters"]["prompts"]
    )
    assert counters["optimizer_steps"] == run["iterations"] * passes * 2  # 16 prompts in minibatches of 8
    rows = [json.loads(line) for line in (folder / algorithm / "seed1" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.slow
def test_dpo_runs_offline_on_the_preference_pairs(smoke_run):
    folder = smoke_run / "results" / "smoke" / "dpo" / "seed1"
    run = json.loads((folder / "run.json").read_text())
    assert run["data"] == "preference pairs"
    assert run["iterations"] == math.ceil(0.16 * 1000 / 16)  # algorithm_params.dpo.epochs of the 1,000 pairs
    counters = run["counters"]
    assert counters["prompts"] == 16 * run["iterations"]
    assert counters["generations"] == counters["generated_tokens"] == counters["reward_model_calls"] == 0
    assert counters["optimizer_steps"] == run["iterations"] * 2  # one pass, minibatches of 8 pairs
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["chosen_logratio"] == pytest.approx(0.0, abs=1e-5)  # π_t = π_0 before the first update
    assert "rm_score" not in rows[-1] and "kl" not in rows[-1]
    # DPO separates the pairs: the chosen responses gain probability relative to the rejected ones.
    assert rows[-1]["chosen_logratio"] - rows[-1]["rejected_logratio"] > 0
    assert rows[-1]["preference_accuracy"] > rows[0]["preference_accuracy"]


def test_iterations_matched_by_reward_model_calls():
    pol = {"iterations": 40, "prompts_per_iteration": 64, "reward_model_calls": None}
    rebel, reinforce, rloo_k4, dpo = (
        build_algorithm(a, {"algorithm_params": {a: p}})
        for a, p in (("rebel", {}), ("reinforce", {}), ("rloo_k4", {}), ("dpo", {"epochs": 0.5}))
    )
    assert [a.source.iterations(a, pol, 1000) for a in (rebel, reinforce, rloo_k4)] == [40, 40, 40]
    assert dpo.source.iterations(dpo, pol, 1000) == math.ceil(500 / 64)
    pol["reward_model_calls"] = 40 * 64 * 2  # REBEL's calls at 40 iterations
    assert [a.source.iterations(a, pol, 1000) for a in (rebel, reinforce, rloo_k4)] == [40, 80, 20]
    pol["reward_model_calls"] = 100
    with pytest.raises(ConfigError, match=r"^key 'policy.reward_model_calls': 100 calls do not cover one iteration"):
        rebel.source.iterations(rebel, pol, 1000)


@pytest.mark.slow
def test_matched_by_reward_model_calls_a_run_draws_more_of_the_same_prompt_stream(smoke_run, tmp_path):
    # REBEL's calls in the smoke pipeline: 10 iterations × 16 prompts × 2 samples
    config = _smoke_variant(tmp_path, "calls", lambda c: c["policy"].update(reward_model_calls=10 * 16 * 2))
    subprocess.run(_train(smoke_run, tmp_path / "reinforce", "reinforce", config), check=True, capture_output=True)
    run = json.loads((tmp_path / "reinforce" / "run.json").read_text())
    rebel = json.loads((smoke_run / "results/smoke/rebel/seed1/run.json").read_text())
    assert run["iterations"] == 2 * rebel["iterations"]
    assert run["counters"]["reward_model_calls"] == rebel["counters"]["reward_model_calls"]
    assert run["prompt_stream_sha256"] == rebel["prompt_stream_sha256"]
    assert run["prompt_order_sha256"] != rebel["prompt_order_sha256"]
    check_identical_prompts({("rebel", 1): rebel, ("reinforce", 1): run})


@pytest.mark.slow
def test_rebel_self_play_scores_samples_by_preference_against_an_opponent(smoke_run, tmp_path):
    """Appendix D.2 on the language task: k = 2 samples plus one opponent per prompt, judged, no reward model."""
    config = _smoke_variant(tmp_path, "self_play", lambda c: c["algorithm_params"]["rebel"].update(self_play=True))
    subprocess.run(_train(smoke_run, tmp_path / "run", "rebel", config), check=True, capture_output=True)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    counters = run["counters"]
    assert counters["reward_model_calls"] == 0
    assert counters["preference_queries"] == 2 * counters["prompts"]
    assert counters["generations"] == 3 * counters["prompts"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1.0 <= r["preference_score"] <= 1.0 and "rm_score" not in r for r in rows)
    assert all(math.isfinite(r["loss"]) for r in rows)
