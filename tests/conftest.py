"""Shared fixtures: a tiny tokenizer and GPT-NeoX models built locally (no hub, no network)."""

import random

import pytest
import torch

from rebel import data as D
from rebel import models as M
from rebel import synthetic_tldr as task


@pytest.fixture(scope="session")
def tokenizer():
    rng = random.Random(0)
    texts = []
    for _ in range(200):
        post = task.make_post(rng)
        texts.append(task.format_prompt(post.subreddit, post.title, post.body) + task.human_summary(post, rng))
    return D.train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_config(tokenizer):
    return M.scratch_config(
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "rotary_pct": 0.25,
        },
        tokenizer,
        max_positions=128,
    )


@pytest.fixture
def policy(tiny_config):
    torch.manual_seed(0)
    from transformers import GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(tiny_config).eval()


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"


def snakemake(workdir, *args, config=SMOKE, check=True):
    """Run the repository's Snakefile in ``workdir`` (outputs stay out of the repository)."""
    import subprocess

    cmd = [
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "2",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def train_command(workdir, out, algorithm="rebel", config=SMOKE):
    """``python -m rebel train`` for seed 1 on the smoke pipeline's data and models in ``workdir``."""
    import sys

    run = workdir / "results" / "smoke"
    return [
        sys.executable,
        "-m",
        "rebel",
        "train",
        "--config",
        str(config),
        "--data",
        str(run / "data"),
        "--sft",
        str(run / "sft" / "model.json"),
        "--rm",
        str(run / "rm" / "model.json"),
        "--algorithm",
        algorithm,
        "--seed",
        "1",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole smoke pipeline, once per test session (about a minute on two cores)."""
    workdir = tmp_path_factory.mktemp("smoke")
    snakemake(workdir, "tables/table1.csv")
    return workdir


@pytest.fixture(scope="session")
def rendered_cache(tmp_path_factory):
    """A fresh directory holding only the committed cache/ files (``git ls-files``, mtimes in the worst order a
    checkout can produce: the files tables are computed from newest), with every table and figure rendered from
    them (``snakemake render --config render_from=cache``; tables in ``<dir>/tables``). The dry run made before
    rendering is kept in ``<dir>/dry_run.log`` (the jobs Snakemake scheduled)."""
    import os
    import subprocess
    import sys

    workdir = tmp_path_factory.mktemp("rendered_cache")
    listing = subprocess.run(["git", "ls-files", "cache"], cwd=REPO, capture_output=True, text=True, check=True)
    tracked = sorted(listing.stdout.split(), key=lambda n: n.endswith(("metrics.jsonl", "stats.json")))
    for age, name in enumerate(tracked):
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
        os.utime(target, (1_600_000_000 + age, 1_600_000_000 + age))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--cores", "2", "render", "--config", "render_from=cache"]
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True)
    (workdir / "dry_run.log").write_text(dry.stdout + dry.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if dry.returncode != 0 or done.returncode != 0:
        raise AssertionError(f"rendering the committed cache failed:\n{(dry.stderr + done.stderr)[-3000:]}")
    return workdir
