"""The cross-kernel-path check: the statistic on hand-computed numbers, and the pipeline on the smoke config; the
generation-backend check's parse-time errors and plan (its run: tests/test_vllm_pipeline.py)."""

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import REPO, SMOKE, snakemake

from eval.reproducibility import compare, write_reproducibility
from rebel.errors import HarnessError


def evals(values: dict[str, list[float]], metric: str = "winrate") -> dict:
    return {(algo, seed): {metric: v} for algo, vs in values.items() for seed, v in enumerate(vs, start=1)}


def row(df: pd.DataFrame, algorithm: str, metric: str = "winrate") -> SimpleNamespace:
    return SimpleNamespace(**df[(df.algorithm == algorithm) & (df.metric == metric)].iloc[0].to_dict())


def test_means_within_three_standard_errors_agree():
    r = row(compare(evals({"rebel": [70, 72, 74]}), evals({"rebel": [71, 73, 75]})), "rebel")
    assert (r.n_a, r.n_b, r.mean_a, r.mean_b, r.diff) == (3, 3, 72, 73, 1)
    assert r.se == pytest.approx(math.sqrt(4 / 3 + 4 / 3)) == pytest.approx(1.633, abs=1e-3)
    assert r.z == pytest.approx(0.612, abs=1e-3)
    assert r.agree and not r.identical


def test_means_beyond_three_standard_errors_disagree():
    # diff = 5, se = sqrt(1/3 + 1/3) = 0.816, z = 6.12
    r = row(compare(evals({"ppo": [70, 71, 72]}), evals({"ppo": [75, 76, 77]})), "ppo")
    assert r.diff == 5 and r.z == pytest.approx(5 / math.sqrt(2 / 3))
    assert not r.agree and not r.identical


def test_identical_runs_and_zero_spread():
    df = compare(evals({"sft": [0.0, 0.0]}, "kl"), evals({"sft": [0.0, 0.0]}, "kl"))
    r = row(df, "sft", "kl")
    assert (r.diff, r.se, r.z) == (0, 0, 0) and r.agree and r.identical
    # No spread on either side but different means: infinitely many standard errors apart.
    r = row(compare(evals({"sft": [1.0, 1.0]}), evals({"sft": [2.0, 2.0]})), "sft")
    assert r.se == 0 and r.z == math.inf and not r.agree
    # ... unless they differ by float32 rounding only (the SFT RM score measured under portable and native).
    portable, native = -0.5848588347434998, -0.5848588943481445
    r = row(compare(evals({"sft": [portable, portable]}), evals({"sft": [native, native]})), "sft")
    assert r.z == -math.inf and r.agree and not r.identical
    r = row(compare(evals({"sft": [portable, portable]}), evals({"sft": [native * (1 + 1e-5)] * 2})), "sft")
    assert not r.agree


def test_one_seed_gives_no_z_and_agrees_only_when_identical():
    r = row(compare(evals({"dpo": [70.0]}), evals({"dpo": [71.0]})), "dpo")
    assert math.isnan(r.se) and math.isnan(r.z) and not r.agree
    r = row(compare(evals({"dpo": [70.0]}), evals({"dpo": [70.0]})), "dpo")
    assert math.isnan(r.z) and r.agree and r.identical


def test_metrics_missing_everywhere_are_skipped_and_partly_missing_ones_fail():
    a = {
        ("sft", 1): {"winrate": 1.0, "rm_score": 0.1, "kl": 0.0},
        ("sft", 2): {"winrate": 2.0, "rm_score": 0.2, "kl": 0.0},
    }
    df = compare(a, a)
    assert list(df.metric) == ["winrate", "rm_score", "kl"]  # no gold_quality off the synthetic task
    b = {**a, ("sft", 2): {"winrate": 2.0, "kl": 0.0}}
    with pytest.raises(HarnessError, match="run b: eval.json of sft seed 2 has no 'rm_score'"):
        compare(a, b)


def test_write_reproducibility_names_a_missing_eval_json(tmp_path):
    cfg = {"name": "t", "model_size": "smoke", "algorithms": ["rebel"], "seeds": [1, 2]}
    for side in ("a", "b"):
        for algo in ("sft", "rebel"):
            for seed in (1, 2):
                path = tmp_path / side / algo / f"seed{seed}" / "eval.json"
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps({"winrate": 50.0 + seed + (side == "b"), "kl": 0.0}))
    df = write_reproducibility(
        cfg, tmp_path / "a", tmp_path / "b", "portable", "scalar", tmp_path / "r.csv", tmp_path / "r.md"
    )
    assert len(df) == 4 and pd.read_csv(tmp_path / "r.csv").shape == (4, 11)
    md = (tmp_path / "r.md").read_text()
    assert "under `portable` and again under `scalar`, 2 seeds [1, 2]. 4 of 4 algorithm × metric rows agree" in md
    (tmp_path / "b" / "rebel" / "seed2" / "eval.json").unlink()
    with pytest.raises(HarnessError, match="rebel/seed2/eval.json' not found"):
        write_reproducibility(
            cfg, tmp_path / "a", tmp_path / "b", "portable", "scalar", tmp_path / "r.csv", tmp_path / "r.md"
        )


def test_equal_kernel_paths_fail_at_parse_time(tmp_path):
    result = snakemake(
        tmp_path, "-n", "tables/reproducibility.csv", "--config", "reproducibility={kernels: portable}", check=False
    )
    assert result.returncode != 0
    assert "config error: config: key 'reproducibility.kernels': 'portable' is runtime.cpu_kernels" in result.stderr


def test_the_backend_check_needs_known_algorithms(tmp_path):
    unknown = snakemake(tmp_path, "-n", "tables/backends.csv", "--config", "backends={algorithms: [x]}", check=False)
    assert unknown.returncode != 0
    assert "config error: config: key 'backends.algorithms': ['x'] are not among this config's" in unknown.stderr


def test_the_backend_check_plans_a_second_run_with_the_other_backend_in_its_venv(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "tables/backends.csv")
    lines = (result.stdout + result.stderr).splitlines()
    command = next(line for line in lines if "--directory results/backends/vllm" in line)
    assert f"PATH={REPO / '.venv-vllm'}/bin:$PATH snakemake results/smoke/sft/seed1/eval.json " in command
    assert "runtime='{generation_backend: vllm}' render_from=" in command
    # A vllm run's check runs hf in its own environment; a vllm run does not trip over it.
    result = snakemake(tmp_path, "-n", "-p", "tables/backends.csv", "--config", "runtime={generation_backend: vllm}")
    command = next(
        line for line in (result.stdout + result.stderr).splitlines() if "--directory results/backends/hf" in line
    )
    assert "runtime='{generation_backend: hf}' render_from=" in command


@pytest.mark.slow
def test_reproducibility_pipeline_on_smoke(tmp_path):
    """The small version CI runs: the smoke config with two seeds, two algorithms, a third of the data and one
    SFT and reward-model epoch (most of the time), under portable and again under scalar."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg |= {"seeds": [1, 2], "algorithms": ["dpo", "rebel"], "figures": {"fig5": ["rebel"]}}
    cfg["data"]["synthetic"] |= {"n_train": 300, "n_pref_train": 300}
    cfg["sft"]["epochs"] = cfg["reward_model"]["epochs"] = 1
    cfg["algorithm_params"]["dpo"]["epochs"] = 0.5  # 150 of the 300 pairs, about the online runs' 160 prompts
    cfg["eval"]["curve"]["every"] = None
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    snakemake(work, "tables/reproducibility.csv", config=config)

    df = pd.read_csv(work / "tables" / "reproducibility.csv")
    assert [tuple(r) for r in df[["algorithm", "metric"]].itertuples(index=False)] == [
        (a, m) for a in ("sft", "dpo", "rebel") for m in ("winrate", "gold_quality", "rm_score", "kl")
    ]
    assert (df.n_a == 2).all() and (df.n_b == 2).all()
    md = (work / "tables" / "reproducibility.md").read_text()
    assert "of 12 algorithm × metric rows agree within 3 standard errors" in md
    for results, path, capability in (
        (work / "results" / "smoke", "portable", "AVX2"),
        (work / "results" / "reproducibility" / "scalar" / "results" / "smoke", "scalar", "DEFAULT"),
    ):
        for algo in ("sft", "dpo", "rebel"):
            for seed in (1, 2):
                kernels = json.loads((results / algo / f"seed{seed}" / "eval.json").read_text())["kernels"]
                assert (kernels["cpu_kernels"], kernels["cpu_capability"]) == (path, capability)
