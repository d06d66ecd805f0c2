"""The image setting's table and Figures 3 and 4 (paper §5.3), from the runs' files alone (``curve.jsonl``,
``run.json``), so that they regenerate from a cached result set without training.

- **Figure 3**: the mean reward of every policy's fixed-noise pictures (:mod:`eval.image_eval`) against the
  reward queries spent, per algorithm: the IQM over seeds with its 95% stratified-bootstrap interval
  (rliable, :func:`eval.aggregate.iqm_intervals`). Curves are compared at equal reward queries: REBEL's
  half-batch variant (``rebel_half``) spends the baseline's queries per iteration.
- **Figure 4**: the first seed's pictures of the first ``figure4.prompts`` prompts under each of
  ``figure4.algorithms`` at ``figure4.reward_queries`` (an intermediate checkpoint), beside the starting
  policy's, each with its reward under it.
- **Table** (``tables/image.csv``), after checking that every algorithm of a seed drew its prompts from the
  same seeded stream (:func:`eval.tables.check_identical_prompts`): per algorithm, the starting and final
  reward (IQM and CI over seeds), the gain in seed standard deviations, the budget (pictures, reward queries,
  optimizer steps) and the runtime and peak memory of one iteration; the paper gives Figure 3 only as a plot,
  so its column holds the mean LAION aesthetic score of Figure 4's pictures (the paper's intermediate
  checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from eval.aggregate import iqm_intervals  # noqa: E402
from eval.figures import _color, _save  # noqa: E402 - the other figures' colours and file output (PNG and PDF)
from eval.image_eval import read_strip  # noqa: E402
from eval.tables import check_identical_prompts, display_name  # noqa: E402
from rebel.errors import HarnessError  # noqa: E402

PAPER_FIGURE4 = {"rebel": [7.29, 7.38, 7.37, 7.27, 7.14], "clipped_pg": [6.85, 6.17, 6.00, 6.29, 7.06]}
"""The LAION aesthetic scores printed under the paper's Figure 4 pictures (REBEL's row, then PPO's)."""


def _label(cfg: dict[str, Any], algorithm: str) -> str:
    """The algorithm's display name; a variant (``rebel_half``) whose name another algorithm of the config
    shares gets its config name too."""
    from rebel.registry import BUILTIN

    label = display_name(algorithm, cfg)
    shared = sum(display_name(other, cfg) == label for other in cfg["algorithms"]) > 1
    return f"{label} ({algorithm})" if shared and algorithm not in BUILTIN else label


def read_runs(cfg: dict[str, Any], results: Path) -> pd.DataFrame:
    """Every curve point of every algorithm and seed: ``algorithm, seed, reward_model_calls, image_reward, …``."""
    frames = []
    for algorithm in cfg["algorithms"]:
        for seed in cfg["seeds"]:
            path = results / algorithm / f"seed{seed}" / "curve.jsonl"
            if not path.is_file():
                raise HarnessError(f"'{path}' not found; train the run first (snakemake figures/fig3.png)")
            points = pd.read_json(path, lines=True)
            frames.append(points.assign(algorithm=algorithm, seed=seed))
    return pd.concat(frames, ignore_index=True)


def curve_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm and reward-query count: the IQM of the reward over seeds and its 95% interval."""
    rows = []
    for (algorithm, queries), group in runs.groupby(["algorithm", "reward_model_calls"], sort=False):
        values = group["image_reward"].to_numpy(dtype=float)
        iqm, low, high = iqm_intervals({"x": values})["x"] if len(values) > 1 else (values[0],) * 3
        rows.append(
            {
                "algorithm": algorithm,
                "reward_queries": int(queries),
                "iqm": iqm,
                "ci_low": low,
                "ci_high": high,
                "seeds": len(values),
            }
        )
    return pd.DataFrame(rows)


def image_table(cfg: dict[str, Any], results: Path, csv: Path, md: Path) -> pd.DataFrame:
    """The table of the module docstring, written as CSV and Markdown."""

    runs, rows = read_runs(cfg, results), []
    infos = {
        (algorithm, seed): json.loads((results / algorithm / f"seed{seed}" / "run.json").read_text())
        for algorithm in cfg["algorithms"]
        for seed in cfg["seeds"]
    }
    check_identical_prompts(infos)  # every algorithm of a seed drew from the same seeded prompt stream
    for algorithm in cfg["algorithms"]:
        points = runs[runs.algorithm == algorithm]
        start = points[points.iterations == 0].sort_values("seed")["image_reward"].to_numpy()
        last = points.sort_values("iterations").groupby("seed").tail(1).sort_values("seed")
        final = last["image_reward"].to_numpy()
        seed_infos = [infos[algorithm, seed] for seed in cfg["seeds"]]
        counters, profile = seed_infos[0]["counters"], [info["profile"] for info in seed_infos]
        stats = iqm_intervals({"start": start, "final": final}) if len(final) > 1 else None
        (s_iqm, *_), (f_iqm, f_low, f_high) = stats.values() if stats else ((start[0],), (final[0],) * 3)
        spread = float(np.std(final, ddof=1)) if len(final) > 1 else float("nan")
        paper = PAPER_FIGURE4.get(algorithm)
        rows.append(
            {
                "algorithm": _label(cfg, algorithm),
                "seeds": len(final),
                "start_reward": round(float(s_iqm), 3),
                "final_reward_iqm": round(float(f_iqm), 3),
                "final_ci_low": round(float(f_low), 3),
                "final_ci_high": round(float(f_high), 3),
                "final_seed_std": round(spread, 3),
                "gain_in_seed_stds": round(float((np.mean(final) - np.mean(start)) / spread), 1)
                if spread > 0
                else None,
                "images": counters["generations"],
                "reward_queries": counters["reward_model_calls"],
                "optimizer_steps": counters["optimizer_steps"],
                "iteration_s": round(float(np.mean([p["seconds"]["total"] for p in profile])), 2),
                "peak_memory_gib": round(float(max(_peak(p) for p in profile)), 3),
                "paper_fig4_laion": round(float(np.mean(paper)), 2) if paper else None,
            }
        )
        if "colour_fidelity" in points:  # the embedded task: do the pictures still show the prompt's colour?
            rows[-1] |= {
                "start_colour_fidelity": round(float(points[points.iterations == 0]["colour_fidelity"].mean()), 3),
                "final_colour_fidelity": round(float(last["colour_fidelity"].mean()), 3),
            }
    table = pd.DataFrame(rows)
    csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False)
    reward = _reward_name(cfg)
    md.write_text(
        f"# Image generation ({cfg['name']}): reward = {reward}\n\n"
        f"IQM and 95% stratified-bootstrap CI over seeds {cfg['seeds']} of the fixed-noise pictures' mean reward "
        "after the whole budget; `paper_fig4_laion`: the mean LAION score under the paper's Figure 4 pictures "
        "(its only printed numbers; a different reward from the embedded one)."
        + (
            " `*_colour_fidelity`: the share of pixels in the prompt's colour (mean over seeds), a check on reward "
            "over-optimization: a policy that raises the reward by drawing other colours loses it."
            if "start_colour_fidelity" in table
            else ""
        )
        + "\n\n"
        + table.to_markdown(index=False)
        + "\n"
    )
    return table


def figure3(cfg: dict[str, Any], results: Path, png: Path) -> pd.DataFrame:
    """Figure 3 (module docstring); also writes its points beside it as ``<png stem>.csv``."""
    table = curve_table(read_runs(cfg, results))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algorithm, points in table.groupby("algorithm", sort=False):
        color = _color(cfg, algorithm)
        ax.plot(points.reward_queries, points.iqm, marker="o", ms=3, color=color, label=_label(cfg, algorithm))
        ax.fill_between(points.reward_queries, points.ci_low, points.ci_high, color=color, alpha=0.2)
    reward = _reward_name(cfg)
    ax.set(xlabel="reward queries", ylabel=f"{reward} (IQM over {len(cfg['seeds'])} seeds)")
    ax.set_title(f"Figure 3: image reward vs reward queries ({cfg['name']})\n95% stratified-bootstrap CIs (rliable)")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, png)
    table.to_csv(png.with_suffix(".csv"), index=False)
    return table


def figure4(cfg: dict[str, Any], results: Path, png: Path) -> None:
    """Figure 4 (module docstring)."""
    runs, spec, seed = read_runs(cfg, results), cfg["figure4"], cfg["seeds"][0]
    first = runs[(runs.seed == seed)]
    rows = [("starting policy", first[(first.algorithm == spec["algorithms"][0]) & (first.iterations == 0)])]
    for algorithm in spec["algorithms"]:
        point = first[(first.algorithm == algorithm) & (first.reward_model_calls == spec["reward_queries"])]
        if point.empty:
            raise HarnessError(
                f"key 'figure4.reward_queries': {spec['reward_queries']} is not a curve point of {algorithm} "
                f"(points: {sorted(first[first.algorithm == algorithm].reward_model_calls)})"
            )
        rows.append((_label(cfg, algorithm), point))
    count = len(rows[0][1].iloc[0]["strip_rewards"])
    prompts = cfg["data"]["prompts"]
    if prompts == "embedded":
        from rebel.synthetic_images import embedded_prompts

        prompts = embedded_prompts()
    fig, axes = plt.subplots(len(rows), count, figsize=(1.5 * count, 1.75 * len(rows)), squeeze=False)
    for r, (label, point) in enumerate(rows):
        record = point.iloc[0]
        for c, (image, reward) in enumerate(
            zip(read_strip(record["strip_png_base64"], count), record["strip_rewards"])
        ):
            ax = axes[r, c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{reward:.2f}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0:
                ax.set_title(f'"{prompts[c]}"', fontsize=9)
    fig.suptitle(
        f"Figure 4: pictures at {spec['reward_queries']} reward queries (seed {seed}; reward under each)", fontsize=10
    )
    _save(fig, png)


def _reward_name(cfg: dict[str, Any]) -> str:
    return "colourfulness / 10" if cfg["reward"]["type"] == "colorfulness" else "LAION aesthetic score"


def _peak(profile: dict[str, Any]) -> float:
    """Peak memory of an iteration (GiB): GPU memory on CUDA, else the resident set (rebel.profiling)."""
    return (profile.get("peak_gpu_gib") or profile["peak_rss_gib"])["all"]
