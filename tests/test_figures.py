"""Figures 5 and 6, Table 6 and the cache export on files written by hand; the example algorithm's loss."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO

from eval.ablation import run_dirs, write_table6
from eval.figures import ellipse_axes, figure5, figure6, kl_bins, pooled_training_points
from rebel.algorithms import resolve_algorithm
from rebel.cache import export_cache
from rebel.cli import _with_algorithm_params
from rebel.errors import ConfigError, HarnessError


def test_ellipse_radii_are_two_sqrt_eigenvalues():
    width, height, angle = ellipse_axes(np.diag([4.0, 1.0]))
    assert (width, height, angle % 180) == pytest.approx((2 * 2 * 2.0, 2 * 2 * 1.0, 0.0))
    # Eigenvalues 9 and 1 along axes rotated by 30°: semi-axes 2·3 = 6 and 2·1 = 2.
    rot = np.array([[math.cos(math.pi / 6), -math.sin(math.pi / 6)], [math.sin(math.pi / 6), math.cos(math.pi / 6)]])
    width, height, angle = ellipse_axes(rot @ np.diag([9.0, 1.0]) @ rot.T)
    assert (width, height, angle % 180) == pytest.approx((12.0, 4.0, 30.0))


def test_kl_bins_have_equal_size_and_bin_means():
    kl = np.array([5, 0, 9, 3, 7, 1, 8, 2, 6, 4, 10, 11], dtype=float)  # 12 generations, 10 bins
    table = kl_bins(kl, 2 * kl + 1)
    # Sorted KL 0..11 split into sizes 2, 2, then eight of 1: bins {0,1}, {2,3}, {4}, ..., {11}.
    assert table.n.tolist() == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert table.kl.tolist() == [0.5, 2.5, 4, 5, 6, 7, 8, 9, 10, 11]
    assert table.rm_score.tolist() == [2.0, 6.0, 9, 11, 13, 15, 17, 19, 21, 23]
    with pytest.raises(HarnessError, match="9 generations cannot fill 10 KL bins"):
        kl_bins(kl[:9], kl[:9])


def _loop_record(iteration: int, kl: np.ndarray, rm: np.ndarray) -> dict:
    """What the shared loop logs for an iteration: means and the ddof-0 covariance of (KL, RM score)."""
    cov = torch.cov(torch.tensor(np.stack([kl, rm])), correction=0)
    return {
        "iteration": iteration,
        "kl": kl.mean(),
        "rm_score": rm.mean(),
        "kl_var": cov[0, 0].item(),
        "rm_score_var": cov[1, 1].item(),
        "kl_rm_score_cov": cov[0, 1].item(),
        "regression_mse": 1.0 / (1 + iteration),
    }


def test_pooled_covariance_equals_the_covariance_of_all_seeds_samples():
    rng = np.random.default_rng(0)
    samples = [(rng.normal(1 + s, 1 + s, 50), rng.normal(-s, 0.5, 50)) for s in range(3)]
    points = pooled_training_points([pd.DataFrame([_loop_record(0, kl, rm)]) for kl, rm in samples])
    kl, rm = np.concatenate([s[0] for s in samples]), np.concatenate([s[1] for s in samples])
    union = np.cov(np.stack([rm, kl]), ddof=0)
    row = points.iloc[0]
    assert (row.rm_score, row.kl) == pytest.approx((rm.mean(), kl.mean()))
    assert (row.rm_var, row.kl_var, row.rm_kl_cov) == pytest.approx((union[0, 0], union[1, 1], union[0, 1]))


def _write_run(folder, iterations: int = 12, generations: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = [_loop_record(t, rng.gamma(1 + t / 3, 1, 32), rng.normal(t / 10, 0.3, 32)) for t in range(iterations)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    kl = rng.gamma(2, 1, generations)
    (folder / "kl_samples.jsonl").write_text("".join(json.dumps({"kl": k, "rm_score": 0.2 * k}) + "\n" for k in kl))


def test_figures_are_written_and_old_files_fail_in_one_line(tmp_path):
    cfg = {"name": "hand", "model_size": "tiny", "seeds": [1, 2], "algorithms": ["rebel", "ppo"]}
    for algorithm in ("rebel", "ppo"):
        for seed in cfg["seeds"]:
            _write_run(tmp_path / algorithm / f"seed{seed}", seed=seed)
    figure5(cfg, tmp_path, ["ppo", "rebel"], tmp_path / "figs" / "fig5.png")
    figure6(cfg, tmp_path, ["ppo", "rebel"], tmp_path / "figs" / "fig6.png")
    for name in ("fig5.png", "fig5.pdf", "fig6.png", "fig6.pdf"):
        assert (tmp_path / "figs" / name).stat().st_size > 10_000
    metrics = tmp_path / "ppo" / "seed1" / "metrics.jsonl"
    metrics.write_text(json.dumps({"iteration": 0, "kl": 1.0, "rm_score": 0.0}) + "\n")
    with pytest.raises(HarnessError, match=f"^'{metrics}' has no 'kl_var'"):
        figure5(cfg, tmp_path, ["ppo"], tmp_path / "figs" / "fig5.png")
    with pytest.raises(HarnessError, match="none of ppo logs 'regression_mse'"):
        figure6(cfg, tmp_path, ["ppo"], tmp_path / "figs" / "fig6.png")


def test_table6_is_the_mean_and_std_of_each_etas_eval_files(tmp_path):
    cfg = {
        "name": "hand",
        "model_size": "tiny",
        "seeds": [1, 2],
        "algorithms": ["ppo", "rebel"],
        "algorithm_params": {"rebel": {"eta": 1.0}},
        "ablation": {"eta": [0.3, 1.0, 2.0]},
    }
    written = {
        (0.3, 1): (50.0, 1.0, 4.0),
        (0.3, 2): (60.0, 2.0, 6.0),
        (1.0, 1): (70.0, 2.0, 9.0),
        (1.0, 2): (72.0, 2.5, 11.0),
        (2.0, 1): (40.0, 0.5, 1.0),
        (2.0, 2): (44.0, 0.5, 3.0),
    }
    dirs = run_dirs(cfg, tmp_path)
    assert dirs[(1.0, 1)] == tmp_path / "rebel" / "seed1"  # the config's own η: Table 1's REBEL run
    assert dirs[(0.3, 2)] == tmp_path / "ablation" / "eta0.3" / "seed2"
    for key, (winrate, rm, kl) in written.items():
        dirs[key].mkdir(parents=True)
        (dirs[key] / "eval.json").write_text(json.dumps({"winrate": winrate, "rm_score": rm, "kl": kl}))
    table = write_table6(cfg, tmp_path, tmp_path / "t6.csv", tmp_path / "t6.md").set_index("eta")
    assert table.loc[0.3, "winrate_mean"] == 55.0 and table.loc[0.3, "winrate_std"] == pytest.approx(math.sqrt(50))
    assert table.loc[1.0, "kl_mean"] == 10.0 and table.loc[1.0, "rm_score_std"] == pytest.approx(math.sqrt(0.125))
    assert table.loc[2.0, "rm_score_std"] == 0.0 and table.n_seeds.tolist() == [2, 2, 2]
    assert table.table1_runs.tolist() == [False, True, False]
    # The paper's 2.8B numbers beside (appendix J, Table 6).
    assert table.loc[0.3, "paper_winrate"] == 55.5 and table.loc[1.0, "paper_kl"] == 29.0
    assert table.loc[2.0, "paper_rm_score"] == 1.76
    md = (tmp_path / "t6.md").read_text()
    assert "| 1 (Table 1 runs) | 2 | **71.00 (1.41)** | **2.25 (0.35)** | 10.00 (1.41) | 70.2 | 2.44 | 29 |" in md
    assert pd.read_csv(tmp_path / "t6.csv").winrate_mean.tolist() == [55.0, 71.0, 42.0]


def test_export_cache_copies_only_small_render_inputs_keeping_mtimes(tmp_path):
    results, out = tmp_path / "results", tmp_path / "cache"
    run = results / "smoke" / "rebel" / "seed1"
    (run / "policy").mkdir(parents=True)
    for name in ("eval.json", "run.json", "metrics.jsonl", "generations.jsonl", "policy/model.json"):
        (run / name).write_text("{}")
    (results / "smoke" / "data").mkdir()
    (results / "smoke" / "data" / "stats.json").write_text("{}")
    (results / "smoke" / "data" / "train.jsonl").write_text("{}")
    (results / "benchmark" / "cpu").mkdir(parents=True)
    (results / "benchmark" / "cpu" / "benchmark.json").write_text("{}")
    os.utime(run / "eval.json", (1_000_000, 1_000_000))
    copied = export_cache(results, out)
    assert sorted(p.relative_to(out).as_posix() for p in copied) == [
        "benchmark/cpu/benchmark.json",
        "smoke/data/stats.json",
        *(f"smoke/rebel/seed1/{n}" for n in ("eval.json", "generations.jsonl", "metrics.jsonl", "run.json")),
    ]
    assert (out / "smoke/rebel/seed1/eval.json").stat().st_mtime == 1_000_000
    (run / "metrics.jsonl").write_bytes(b"x" * 3_000_000)
    with pytest.raises(HarnessError, match=r"metrics.jsonl' is 2.9 MiB, over the cache limit of 2.0 MiB per file"):
        export_cache(results, tmp_path / "other")
    with pytest.raises(HarnessError, match="no result files under"):
        export_cache(tmp_path / "empty", out)


def test_algorithm_param_override_is_checked_by_the_algorithm():
    cfg = {"algorithm_params": {"rebel": {"eta": 1.0}}}
    assert _with_algorithm_params(cfg, "rebel", ["eta=0.3"])["algorithm_params"]["rebel"] == {"eta": 0.3}
    assert cfg["algorithm_params"]["rebel"] == {"eta": 1.0}
    for bad, message in (
        ("eta", "expected KEY=VALUE"),
        ("eta=-1", "eta must be > 0"),
        ("zeta=1", "unknown hyperparameter 'zeta'"),
    ):
        with pytest.raises(ConfigError, match=f"^--algorithm-param.*{message}"):
            _with_algorithm_params(cfg, "rebel", [bad])


def test_example_huber_rebel_loss_by_hand(monkeypatch):
    from test_rebel_loss import NEW, OLD, REWARDS, make_rollout

    monkeypatch.syspath_prepend(str(REPO))
    cls = resolve_algorithm("examples.rebel_huber:REBELHuber")
    assert cls.label == "REBEL (Huber)" and cls.samples_per_prompt == 2
    # Residuals −0.75 and −1.0 (tests/test_rebel_loss.py). δ = 1: both quadratic, (0.5·0.5625 + 0.5·1) / 2;
    # δ = 0.5: both linear, (0.5·(0.75 − 0.25) + 0.5·(1 − 0.25)) / 2.
    for delta, expected in ((1.0, 0.390625), (0.5, 0.3125)):
        loss, stats = cls.from_config({"eta": 1.0, "delta": delta}).loss(NEW, make_rollout(OLD, REWARDS))
        assert loss.item() == pytest.approx(expected) and stats["regression_mse"].item() == pytest.approx(0.78125)
    with pytest.raises(ValueError, match="delta must be > 0|eta and delta must be > 0"):
        cls.from_config({"delta": 0.0})
