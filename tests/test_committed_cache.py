"""The committed cache/ renders every embedded table and figure on a fresh clone without training."""

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

CACHE = REPO / "cache"
RENDER_RULES = {"table1", "table2", "table6", "search_table", "bandit_report", "figure2", "figure5", "figure6",
                "curves", "reproducibility", "render"}


def test_committed_cache_renders_every_table_and_figure_without_training(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "cache"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert any(name.endswith("eval.json") for name in tracked), "cache/ holds no committed results"
    # A fresh clone: the committed files only, in the worst mtime order a checkout can produce
    # (the files tables are computed from newest).
    for age, name in enumerate(sorted(tracked, key=lambda n: n.endswith(("metrics.jsonl", "stats.json")))):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
        os.utime(target, (1_600_000_000 + age, 1_600_000_000 + age))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", "render", "--config", "render_from=cache"]
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert set(re.findall(r"(?m)^(?:local)?rule (\w+):", dry.stdout + dry.stderr)) <= RENDER_RULES
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("fig2", "fig5", "fig6", "fig7", "bandit"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    # Every Table 1 number is the mean of the cached eval.json files it names.
    table = pd.read_csv(tmp_path / "tables" / "table1.csv").set_index("algorithm")
    rebel = [pd.read_json(path, typ="series") for path in sorted((tmp_path / "cache/embedded/rebel").glob("seed*/eval.json"))]
    assert len(rebel) == table.loc["REBEL", "n_seeds"]
    assert table.loc["REBEL", "winrate_mean"] == pytest.approx(sum(e["winrate"] for e in rebel) / len(rebel), abs=1e-3)
    assert not (tmp_path / "results" / "embedded" / "rebel").exists()
