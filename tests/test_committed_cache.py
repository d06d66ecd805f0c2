"""The committed cache/ renders every embedded table and figure on a fresh clone without training."""

import re
import subprocess

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

RENDER_RULES = {
    "table1",
    "tldr_chat",
    "chat_table2",
    "chat_table3",
    "table6",
    "search_table",
    "bandit_report",
    "figure2",
    "generation_table",
    "figure5",
    "figure6",
    "curves",
    "reproducibility",
    "backends",
    "image_report",
    "render",
}


def test_committed_cache_renders_every_table_and_figure_without_training(rendered_cache):
    """``rendered_cache`` (conftest.py) is a fresh clone's view: the committed files only, in the worst mtime order a
    checkout can produce, rendered with ``snakemake render --config render_from=cache``; the fixture fails unless
    both its dry run and the render exit 0."""
    tracked = subprocess.run(
        ["git", "ls-files", "cache"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert any(name.endswith("eval.json") for name in tracked), "cache/ holds no committed results"
    assert all((rendered_cache / name).is_file() for name in tracked)
    # The dry run made before rendering schedules render jobs only: no training, no evaluation.
    dry_run = (rendered_cache / "dry_run.log").read_text()
    assert set(re.findall(r"(?m)^(?:local)?rule (\w+):", dry_run)) <= RENDER_RULES
    for name in ("fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "bandit"):
        assert (rendered_cache / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "vllm / hf tokens/s" in (rendered_cache / "tables" / "generation.md").read_text()
    # Every Table 1 number is the mean of the cached eval.json files it names.
    table = pd.read_csv(rendered_cache / "tables" / "table1.csv").set_index("algorithm")
    rebel = [
        pd.read_json(path, typ="series")
        for path in sorted((rendered_cache / "cache/embedded/rebel").glob("seed*/eval.json"))
    ]
    assert len(rebel) == table.loc["REBEL", "n_seeds"]
    assert table.loc["REBEL", "winrate_mean"] == pytest.approx(sum(e["winrate"] for e in rebel) / len(rebel), abs=1e-3)
    assert not (rendered_cache / "results" / "embedded" / "rebel").exists()
    # The chat tables too: Table 3's DPO row is the mean of the cached evaluations of its seeds.
    table3 = pd.read_csv(rendered_cache / "tables" / "table3.csv").set_index("algorithm")
    dpo = [
        pd.read_json(path, typ="series")
        for path in sorted((rendered_cache / "cache/chat-embedded-large-batch/dpo").glob("seed*/chat/alpaca_eval.json"))
    ]
    assert len(dpo) == table3.loc["DPO", "n_seeds"] == 3
    assert table3.loc["DPO", "alpacaeval2_winrate"] == pytest.approx(sum(e["winrate"] for e in dpo) / 3, abs=1e-6)
    assert {"REBEL (iter 1)", "REBEL (iter 3)", "Base"} <= set(table3.index)
    assert "| APA | paper only |" in (rendered_cache / "tables" / "table2.md").read_text()  # a paper-only row
