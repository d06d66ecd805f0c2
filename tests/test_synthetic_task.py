"""The embedded TL;DR task: gold quality by hand, determinism, headroom and annotator noise."""

import hashlib
import os
import random
import statistics
import subprocess
import sys

import pytest
import yaml
from conftest import SMOKE

from rebel import synthetic_tldr as task
from rebel.errors import ConfigError

PROMPT = task.format_prompt(
    "tifu",
    "my sister and my car",
    "my sister borrowed my car last week . the weather was nice . "
    "my boss lost my keys yesterday . my dad sold my dog again . now i feel sad . what should i do ?",
)


@pytest.mark.parametrize(
    "summary, expected",
    [
        (" sister borrowed car , boss lost keys , dad sold dog", 1.0),
        (" boss lost keys , dad sold dog", 2 / 3),  # one fact missing
        (" so basically sister borrowed car , boss lost keys , dad sold dog", 1.0 - 2 * 0.15),  # filler
        (" sister borrowed car , boss lost phone", 1 / 3 - 0.6),  # invented fact
        (" sister borrowed car , weather was nice", 1 / 3 - 0.3),  # copied distractor
        (" sister borrowed car , sister borrowed car", 1 / 3 - 0.3),  # repetition
        (" sister borrowed , car car", -0.8),  # two garbled segments
    ],
)
def test_gold_quality_by_hand(summary, expected):
    assert task.gold_quality(PROMPT, summary) == pytest.approx(expected)


def test_missing_eos_is_penalized():
    summary = " sister borrowed car , boss lost keys , dad sold dog"
    assert task.gold_quality(PROMPT, summary, has_eos=False) == pytest.approx(0.0)


def test_post_facts_are_read_from_text():
    assert task.post_facts(PROMPT) == {("sister", "borrowed", "car"), ("boss", "lost", "keys"), ("dad", "sold", "dog")}


def test_human_references_leave_headroom():
    """Writers stop after each fact with p=HUMAN_STOP, so most references hold one fact; all are far from 1.0."""
    rng = random.Random(0)
    posts = [task.make_post(rng) for _ in range(4000)]
    breakdowns = [
        task.gold_breakdown(task.format_prompt(p.subreddit, p.title, p.body), task.human_summary(p, rng)) for p in posts
    ]
    one_fact = statistics.mean(b.correct + b.invented == 1 for b in breakdowns)
    assert one_fact == pytest.approx(task.HUMAN_STOP, abs=0.025)
    assert statistics.mean(b.score for b in breakdowns) < 0.4  # the optimum is 1.0
    assert statistics.mean(b.filler_words > 0 for b in breakdowns) == pytest.approx(0.7, abs=0.025)


def test_annotator_is_noisy_but_informative():
    rng = random.Random(1)
    good, bad = " sister borrowed car , boss lost keys , dad sold dog", " boss lost keys , dad sold dog"
    labels = [task.annotate(PROMPT, good, bad, rng, temperature=0.1) for _ in range(4000)]
    # P(good preferred) = sigmoid((1 - 2/3) / 0.1) = 0.966
    assert statistics.mean(1 - x for x in labels) == pytest.approx(0.966, abs=0.015)


def test_data_stage_is_deterministic_across_processes(tmp_path):
    """The same seed gives byte-identical files, whatever the interpreter's hash seed."""
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        subprocess.run(
            [sys.executable, "-m", "rebel", "data", "--config", str(SMOKE), "--out", str(out)],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        files = sorted(p for p in out.rglob("*") if p.is_file())
        digests.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    assert digests[0] == digests[1]
    assert {"train.jsonl", "test.jsonl", "prefs_train.jsonl", "tokenizer/tokenizer.json", "stats.json"} <= digests[
        0
    ].keys()


def test_prompts_fit_the_configured_length(tmp_path):
    from rebel import data as D

    cfg = yaml.safe_load(SMOKE.read_text())
    D.prepare_data(cfg, tmp_path)
    tokenizer = D.PreTrainedTokenizerFast.from_pretrained(tmp_path / "tokenizer")
    rows = D.read_jsonl(tmp_path / "test.jsonl")
    ids, mask = D.encode_prompts(tokenizer, rows, cfg["data"]["prompt_length"])
    assert ids.shape == (len(rows), cfg["data"]["prompt_length"])
    assert tokenizer.decode(ids[0][mask[0] == 1]).endswith("TL;DR:")


def test_smart_truncation_cuts_the_post_not_the_format(tokenizer):
    from rebel import data as D

    row = {"subreddit": "tifu", "title": "my dog", "post": " ".join(["my sister lost my car ."] * 30)}
    ids, mask = D.encode_prompts(tokenizer, [row], 40)
    text = tokenizer.decode(ids[0][mask[0] == 1])
    assert text.startswith("SUBREDDIT: r/tifu") and text.endswith("\n\nTL;DR:")
    assert text.count("my sister lost my car .") < 30
    with pytest.raises(ConfigError, match="key 'data.prompt_length': the prompt of 'my dog' does not fit in 5 tokens"):
        D.encode_prompts(tokenizer, [row], 5)
