"""Open LLM Leaderboard v1 tasks for lm-eval: the shipped tasks (real runs) or local stand-ins (embedded).

The paper's Tables 2/3 report the HF Open LLM Leaderboard v1: MMLU 5-shot (acc), GSM8K
5-shot (exact match, strict), ARC-challenge 25-shot (acc_norm), Winogrande 5-shot (acc),
TruthfulQA-mc2 0-shot (mc2; lm-eval's key ``acc``) and HellaSwag 10-shot (acc_norm)
(:data:`LEADERBOARD_V1`; the fewshot counts of lm-eval's own ``openllm`` group).

In the embedded world each task is a local YAML that ``include:``s the shipped one and
overrides only its data (``dataset_path: json``, local files and a datasets cache next to
them) and its name; GSM8K also caps ``max_gen_toks``, which must fit in the embedded model's
context. lm-eval 0.4.13 resolves ``include:`` against the including file's folder or as an
absolute path, so the YAMLs are written at run time with the absolute path of the installed
package's task file.
The items are generated from a seed in the synthetic TL;DR task's vocabulary
(:mod:`rebel.synthetic_tldr`), in each shipped task's own schema: questions about a
short post made of 2–3 fact sentences ("my sister borrowed my car . my boss lost my keys .").
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rebel import synthetic_tldr as task
from rebel.errors import HarnessError

N_ITEMS = 24
"""Evaluation items per local task (before ``eval.leaderboard.limit``)."""


@dataclass(frozen=True)
class Benchmark:
    """One leaderboard column: its lm-eval task, fewshot count and reported metric."""

    name: str  # column name, as in paper-results.csv
    task: str  # shipped lm-eval task (or group) name
    num_fewshot: int
    metric: str  # lm-eval result key "<metric>,<filter>"
    include: str  # shipped YAML the local task includes, relative to lm_eval/tasks
    splits: dict[str, str]  # local split name -> role: "eval" or "fewshot"


LEADERBOARD_V1: tuple[Benchmark, ...] = (
    Benchmark("mmlu", "mmlu", 5, "acc,none", "mmlu/default/_default_template_yaml", {"dev": "fewshot", "test": "eval"}),
    Benchmark(
        "gsm8k", "gsm8k", 5, "exact_match,strict-match", "gsm8k/gsm8k.yaml", {"train": "fewshot", "test": "eval"}
    ),
    Benchmark(
        "arc",
        "arc_challenge",
        25,
        "acc_norm,none",
        "arc/arc_challenge.yaml",
        {"train": "fewshot", "validation": "eval", "test": "eval"},
    ),
    Benchmark(
        "winogrande", "winogrande", 5, "acc,none", "winogrande/default.yaml", {"train": "fewshot", "validation": "eval"}
    ),
    Benchmark("truthfulqa", "truthfulqa_mc2", 0, "acc,none", "truthfulqa/truthfulqa_mc2.yaml", {"validation": "eval"}),
    Benchmark(
        "hellaswag",
        "hellaswag",
        10,
        "acc_norm,none",
        "hellaswag/hellaswag.yaml",
        {"train": "fewshot", "validation": "eval"},
    ),
)

GSM8K_MAX_GEN_TOKS = 16
"""Local GSM8K answers are ≤ 12 tokens; lm-eval's default 256 exceeds the embedded context."""


def local_task_name(benchmark: Benchmark) -> str:
    return f"rebel_{benchmark.task}"


def shipped_task_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


# ---------------------------------------------------------------- items in each task's schema


def _post(rng: random.Random) -> tuple[str, tuple[task.Fact, ...]]:
    """A short post: the fact sentences of a synthetic post, and its facts."""
    facts = task.make_post(rng).facts
    return " ".join(f"my {s} {v} my {o} ." for s, v, o in facts), facts


def _options(true: str, confusable: list[str], invent: Callable[[], str], n: int, rng: random.Random) -> list[str]:
    """``true`` among ``n`` distinct options: confusable ones first, then invented ones, shuffled."""
    options = [true] + [c for c in dict.fromkeys(confusable) if c != true][: n - 1]
    while len(options) < n:
        candidate = invent()
        if candidate not in options:
            options.append(candidate)
    rng.shuffle(options)
    return options


def _absent_object(facts: tuple[task.Fact, ...], rng: random.Random) -> str:
    return rng.choice([o for o in task.OBJECTS if o not in {f[2] for f in facts}])


def mmlu_item(rng: random.Random, i: int) -> dict[str, Any]:
    """Who did it? The fact's subject among the post's other subjects (letter answer)."""
    text, facts = _post(rng)
    s, v, o = rng.choice(facts)
    choices = _options(s, [f[0] for f in facts], lambda: rng.choice(task.SUBJECTS), 4, rng)
    return {"question": f"{text} who {v} my {o} ?", "subject": "posts", "choices": choices, "answer": choices.index(s)}


def gsm8k_item(rng: random.Random, i: int) -> dict[str, Any]:
    """How many facts? The answer lists them (a TL;DR) and ends with ``#### <count>``."""
    text, facts = _post(rng)
    summary = task.SEPARATOR.join(task.fact_phrase(f) for f in facts)
    return {"question": f"{text} how many facts ?", "answer": f"{summary} .\n#### {len(facts)}"}


def arc_item(rng: random.Random, i: int) -> dict[str, Any]:
    """What did the subject do? Its action among the other subjects' actions and invented ones."""
    text, facts = _post(rng)
    s, v, o = rng.choice(facts)
    choices = _options(
        f"{v} my {o}",
        [f"{f[1]} my {f[2]}" for f in facts],
        lambda: f"{rng.choice(task.VERBS)} my {_absent_object(facts, rng)}",
        4,
        rng,
    )
    labels = ["A", "B", "C", "D"]
    return {
        "id": f"rebel-arc-{i}",
        "question": f"{text} what did my {s} do ?",
        "choices": {"text": choices, "label": labels},
        "answerKey": labels[choices.index(f"{v} my {o}")],
    }


def winogrande_item(rng: random.Random, i: int) -> dict[str, Any]:
    """Fill the blank with the subject who did it, against another subject of the same post."""
    text, facts = _post(rng)
    (s, v, o), other = rng.sample(facts, 2)
    first = rng.random() < 0.5
    return {
        "sentence": f"{text} so my _ {v} my {o} .",
        "option1": s if first else other[0],
        "option2": other[0] if first else s,
        "answer": "1" if first else "2",
    }


def truthfulqa_item(rng: random.Random, i: int) -> dict[str, Any]:
    """Which statements are true of the post? Its facts; false: a wrong object, swapped subjects."""
    text, facts = _post(rng)
    true = [f"my {s} {v} my {o} ." for s, v, o in facts]
    false = [f"my {s} {v} my {_absent_object(facts, rng)} ." for s, v, _ in facts]
    false.append(f"my {facts[1][0]} {facts[0][1]} my {facts[0][2]} .")
    return {
        "question": f"{text} what happened ?",
        "mc1_targets": {"choices": [true[0], *false], "labels": [1] + [0] * len(false)},
        "mc2_targets": {"choices": true + false, "labels": [1] * len(true) + [0] * len(false)},
    }


def hellaswag_item(rng: random.Random, i: int) -> dict[str, Any]:
    """Continue the post: its last fact sentence against three word-order scrambles of it."""
    facts = _post(rng)[1]
    s, v, o = facts[-1]
    context = " ".join(f"my {a} {b} my {c} ." for a, b, c in facts[:-1]) + " my"
    true = f"{s} {v} my {o} ."
    scrambles = [" ".join(p) + " ." for p in itertools.permutations((s, v, "my", o))]
    endings = _options(true, [], lambda: rng.choice(scrambles), 4, rng)
    subreddit = rng.choice(task.SUBREDDITS)
    return {
        "ind": i,
        "activity_label": subreddit,
        "ctx_a": context,
        "ctx_b": "",
        "ctx": context,
        "endings": endings,
        "source_id": f"rebel-{i}",
        "split": "val",
        "split_type": "indomain",
        "label": str(endings.index(true)),
    }


ITEMS: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "mmlu": mmlu_item,
    "gsm8k": gsm8k_item,
    "arc": arc_item,
    "winogrande": winogrande_item,
    "truthfulqa": truthfulqa_item,
    "hellaswag": hellaswag_item,
}


def local_items(benchmark: Benchmark, split: str, seed: int) -> list[dict[str, Any]]:
    """The items of one local split: ``N_ITEMS`` to evaluate, ``num_fewshot + 5`` for fewshot
    (lm-eval draws k + 1 and drops the evaluated item if drawn)."""
    n = N_ITEMS if benchmark.splits[split] == "eval" else benchmark.num_fewshot + 5
    rng = random.Random(f"{seed}-{benchmark.name}-{split}")
    return [ITEMS[benchmark.name](rng, i) for i in range(n)]


# ---------------------------------------------------------------- task YAMLs


def write_local_tasks(out: Path, seed: int) -> dict[str, str]:
    """Write the items (JSON lines) and one YAML per task to ``out``; return benchmark -> task name."""
    shipped = shipped_task_dir()
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for benchmark in LEADERBOARD_V1:
        include = shipped / benchmark.include
        if not include.is_file():
            raise HarnessError(
                f"lm-eval task file '{include}' not found; eval.leaderboard.tasks 'local' "
                "includes the shipped leaderboard tasks of lm-eval 0.4.13"
            )
        files = {}
        for split in benchmark.splits:
            path = (out / f"{benchmark.name}_{split}.jsonl").resolve()
            path.write_text("".join(json.dumps(row) + "\n" for row in local_items(benchmark, split, seed)))
            files[split] = str(path)
        spec: dict[str, Any] = {
            "include": str(include),
            "task": local_task_name(benchmark),
            "tag": ["rebel_leaderboard_local"],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files, "cache_dir": str((out / "cache").resolve())},
        }
        if benchmark.name == "mmlu":
            spec["description"] = "The following are multiple choice questions (with answers) about posts.\n\n"
        if benchmark.name == "gsm8k":
            shipped_kwargs = yaml.safe_load((shipped / benchmark.include).read_text())["generation_kwargs"]
            spec["generation_kwargs"] = shipped_kwargs | {"max_gen_toks": GSM8K_MAX_GEN_TOKS}
        (out / f"{local_task_name(benchmark)}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        names[benchmark.name] = local_task_name(benchmark)
    return names
