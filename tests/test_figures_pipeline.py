"""Table 6 and Figures 5/6 through Snakemake on the smoke pipeline, rendering from an exported cache,
and an algorithm from outside the package in every table and figure."""

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import SMOKE, snakemake

from eval.tables import CEILING

pytestmark = pytest.mark.slow

TARGETS = ("tables/table1.csv", "tables/table6.csv", "figures/fig5.png", "figures/fig6.png", "figures/curves.png")
RENDER_RULES = {"table1", "table6", "figure5", "figure6", "curves"}


def scheduled(result) -> set[str]:
    """The rules of the jobs a ``snakemake -n`` run lists."""
    return set(re.findall(r"(?m)^(?:local)?rule (\w+):", result.stdout + result.stderr))


@pytest.fixture(scope="module")
def rendered(smoke_run):
    snakemake(smoke_run, *TARGETS)
    return smoke_run


def test_table6_and_figures_come_from_the_runs_files(rendered):
    results = rendered / "results" / "smoke"
    table = pd.read_csv(rendered / "tables" / "table6.csv").set_index("eta")
    for eta, folder in ((1.0, results / "rebel" / "seed1"), (2.0, results / "ablation" / "eta2" / "seed1")):
        written = json.loads((folder / "eval.json").read_text())
        assert table.loc[eta, "winrate_mean"] == pytest.approx(written["winrate"], abs=1e-4)
        assert table.loc[eta, "kl_mean"] == pytest.approx(written["kl"], abs=1e-4)
    run = json.loads((results / "ablation" / "eta2" / "seed1" / "run.json").read_text())
    assert (
        run["prompt_order_sha256"]
        == json.loads((results / "rebel" / "seed1" / "run.json").read_text())["prompt_order_sha256"]
    )
    evaluation = json.loads((results / "rebel" / "seed1" / "eval.json").read_text())
    samples = pd.read_json(results / "rebel" / "seed1" / "kl_samples.jsonl", lines=True)  # the draw at T
    assert samples.kl.mean() == pytest.approx(evaluation["kl"], abs=1e-5)
    assert evaluation["kl_se"] == pytest.approx(samples.kl.std() / len(samples) ** 0.5, rel=1e-4)
    generations = pd.read_json(results / "rebel" / "seed1" / "generations.jsonl", lines=True)  # near greedy
    assert generations.logratio.mean() == pytest.approx(evaluation["greedy_logratio"], abs=1e-5)
    metrics = pd.read_json(results / "ppo" / "seed1" / "metrics.jsonl", lines=True)
    # Iteration 0 samples from π_t = π_0 (LoRA starts at zero): every log-ratio is 0; later ones spread.
    assert metrics.kl_var.iloc[0] == pytest.approx(0, abs=1e-10) and (metrics.kl_var.iloc[1:] > 0).all()
    assert (metrics.rm_score_var > 0).all()
    for name in ("fig5.png", "fig5.pdf", "fig6.png", "fig6.pdf"):
        assert (rendered / "figures" / name).stat().st_size > 10_000


def test_with_results_present_tables_and_figures_rerun_only_render_rules(rendered):
    for target in TARGETS:
        (rendered / target).unlink()
    assert scheduled(snakemake(rendered, *TARGETS, "-n")) == RENDER_RULES
    snakemake(rendered, *TARGETS[:2])  # restore the tables the next test compares against


def test_fresh_copy_with_exported_cache_schedules_only_render_jobs(rendered, tmp_path):
    fresh = tmp_path / "fresh"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rebel",
            "export-cache",
            "--results",
            str(rendered / "results"),
            "--out",
            str(fresh / "cache"),
        ],
        check=True,
        capture_output=True,
    )
    files = sorted(p for p in (fresh / "cache").rglob("*") if p.is_file())
    assert files and not any("policy" in p.parts or p.suffix == ".safetensors" for p in files)
    # The worst mtime order a checkout can produce: every file older than the ones it was computed from.
    for age, path in enumerate(sorted(files, key=lambda p: p.name in ("stats.json", "metrics.jsonl"))):
        os.utime(path, (1_600_000_000 + age, 1_600_000_000 + age))
    dry = snakemake(fresh, *TARGETS, "-n", "--config", "render_from=cache")
    assert scheduled(dry) == RENDER_RULES
    snakemake(fresh, *TARGETS[:2], "--config", "render_from=cache")
    for table in ("table1.csv", "table6.csv", "table1_budget.csv"):
        assert (fresh / "tables" / table).read_text() == (rendered / "tables" / table).read_text()
    assert not (fresh / "results" / "smoke" / "rebel").exists()


THROWAWAY = '''
"""REBEL with an absolute-error regression loss (a throwaway test algorithm)."""
from rebel.algorithms.rebel import REBEL, rebel_residuals


class L1REBEL(REBEL):
    label = "L1 REBEL (test)"

    def loss(self, logprobs, batch, values=None):
        residuals = rebel_residuals(batch.grouped_logratio(logprobs), batch.grouped(batch.rewards), self.params.eta)
        return residuals.abs().mean(), {"regression_mse": residuals.detach().pow(2).mean()}
'''


def test_an_algorithm_outside_the_package_appears_in_every_table_and_figure(rendered, tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "throwaway_algo.py").write_text(THROWAWAY)
    monkeypatch.setenv("PYTHONPATH", str(plugins))
    name = "throwaway_algo:L1REBEL"
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["algorithms"] = ["rebel", name]
    cfg["algorithm_params"] = {"rebel": {"eta": 1.0}, name: {"eta": 1.0}}
    cfg["ablation"] = {"eta": [1.0]}
    cfg["figures"] = {"fig5": ["rebel", name]}
    config = tmp_path / "custom.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # The same data, SFT, reward model and REBEL run as the smoke pipeline (files and mtimes copied).
    work = tmp_path / "work"
    for part in ("data", "sft", "rm", "rebel", "ceiling"):
        shutil.copytree(rendered / "results" / "smoke" / part, work / "results" / "smoke" / part)
    dry = snakemake(work, *TARGETS, "-n", config=config)
    assert scheduled(dry) == RENDER_RULES | {"train", "evaluate"}
    assert "wildcards: algorithm=rebel" not in dry.stdout  # only the new algorithm trains
    snakemake(work, *TARGETS, config=config)
    table = pd.read_csv(work / "tables" / "table1.csv")
    assert table.algorithm.tolist() == ["SFT", "REBEL", "L1 REBEL (test)", CEILING]
    budget = pd.read_csv(work / "tables" / "table1_budget.csv").set_index("algorithm")
    assert budget.loc["L1 REBEL (test)", "reward_model_calls"] == budget.loc["REBEL", "reward_model_calls"]
    run = json.loads((work / "results" / "smoke" / name / "seed1" / "run.json").read_text())
    assert (
        run["prompt_order_sha256"]
        == json.loads((work / "results/smoke/rebel/seed1/run.json").read_text())["prompt_order_sha256"]
    )
    assert pd.read_csv(work / "tables" / "table6.csv").table1_runs.tolist() == [True]
    for figure in ("fig5.png", "fig6.png", "curves.png"):
        assert (work / "figures" / figure).stat().st_size > 10_000
    assert name in pd.read_csv(work / "tables" / "curves.csv").algorithm.tolist()
