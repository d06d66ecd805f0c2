"""Export the small result files every table and figure is rendered from, to commit as a cached result set.

``python -m rebel export-cache --results results --out cache`` copies, from a results root, only
the files the render rules read (``RENDER_FILES``: eval.json, run.json, metrics.jsonl,
generations.jsonl, the chat evaluations (with Arena-Hard) and leaderboard.json of every policy, the data and
reward-model statistics, the
search and bandit records, the GPU benchmark's JSON/CSV), keeping their modification times, and refuses any
file larger than ``MAX_BYTES`` (model weights never qualify). ``snakemake <target> --config render_from=cache``
then renders from the copy: no rule writes under ``cache/``, so Snakemake schedules no training
or generation job whatever the files' modification times.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rebel.errors import HarnessError

MAX_BYTES = 2 * 1024 * 1024
RENDER_FILES = (
    "*/data/stats.json",
    "*/rm/eval.json",
    *(
        f"*/*/seed*/{name}"
        for name in (
            "eval.json",
            "run.json",
            "metrics.jsonl",
            "generations.jsonl",
            "kl_samples.jsonl",
            "curve.jsonl",
            "curve.json",
        )
    ),
    *(f"*/ablation/eta*/seed*/{name}" for name in ("eval.json", "run.json", "metrics.jsonl", "generations.jsonl")),
    *(
        f"{policy}/{name}"
        # TL;DR policies; the chat setting's starting policy, runs and their snapshots (Tables 2, 3)
        for policy in ("*/*/seed*", "*/sft", "*/*/seed*/iter*", "*/external/*")
        for name in ("chat/alpaca_eval.json", "chat/mt_bench.json", "chat/arena_hard.json", "leaderboard.json")
    ),
    "*/search/*/lr*/eval.json",
    "*/search/*/kl*/eval.json",
    "reproducibility/*/results/*/*/seed*/eval.json",
    "backends/*/results/*/*/seed*/eval.json",
    "bandit/*/seed*.jsonl",
    "benchmark/**/*.json",
    "benchmark/**/*.csv",
)
"""Glob patterns, relative to the results root, of the files the render rules read."""


def render_files(results: Path) -> list[Path]:
    """The files under ``results`` that match ``RENDER_FILES``, sorted."""
    found = {path for pattern in RENDER_FILES for path in results.glob(pattern) if path.is_file()}
    return sorted(found)


def export_cache(results: Path, out: Path, max_bytes: int = MAX_BYTES) -> list[Path]:
    """Copy the render inputs of ``results`` to ``out`` (same relative paths, modification times kept)."""
    files = render_files(results)
    if not files:
        raise HarnessError(f"no result files under '{results}' (expected e.g. <name>/<algorithm>/seed<S>/eval.json)")
    for path in files:
        size = path.stat().st_size
        if size > max_bytes:
            raise HarnessError(
                f"'{path}' is {size / 2**20:.1f} MiB, over the cache limit of "
                f"{max_bytes / 2**20:.1f} MiB per file; the cache holds only small result files"
            )
    copied = []
    for path in files:
        target = out / path.relative_to(results)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(target)
    return copied
