"""MT-Bench single-answer grading (paper Tables 2-3) and its radar chart (paper Figure 7).

FastChat (``fschat``, installed without its ``llm_judge`` extra, whose ``openai<1`` conflicts with
``alpaca-eval``) provides MT-Bench's constants and helpers, from ``fastchat.llm_judge.common``:
the reference-answer categories ``NEED_REF_CATS``, the answer temperatures
``temperature_config``, the rating patterns ``one_score_pattern`` / ``one_score_pattern_backup``
and the judge-prompt loader ``load_judge_prompts``; and, from ``fastchat.conversation``, the
conversation templates MT-Bench answers are generated with (:func:`fastchat_prompt`). FastChat's
own judge calls (``chat_completion_openai``, ``run_judge_single``) use the ``openai<1`` API, so
grading follows FastChat's ``llm_judge`` (``gen_judgment.py --mode single``, ``common.py``) with
our :class:`~eval.judge_client.ChatClient`:

- prompts: FastChat's ``judge_prompts.jsonl`` at a pinned commit (the four single-answer
  prompts, verbatim in ``workflow/resources/mt_bench/judge_prompts_single.jsonl``, read by
  FastChat's loader): ``single-v1`` for turn 1, ``single-v1-multi-turn`` for turn 2 (the whole
  conversation, judged on the second answer); the categories math, reasoning and coding use the
  reference-answer variants ``single-math-v1`` / ``single-math-v1-multi-turn`` with the GPT-4
  reference answers;
- the judge sees a system message (the prompt's ``system_prompt``) and one user message,
  at temperature 0 with up to ``judge_max_tokens`` (FastChat: 2048) tokens;
- rating: FastChat's patterns, the first ``[[x]]`` in the judgment, else the first ``[x]``; none
  is -1 (FastChat's value), counted as a parse failure and excluded from every mean;
- the score is the mean over all valid turn ratings; a category's score is the mean over
  its questions' valid ratings of both turns (Figure 7).

``fastchat.llm_judge.common`` is imported on first use (:func:`fastchat_judge`; the module
attributes ``NEED_REF_CATS``, ``temperature_config``, ``one_score_pattern`` and
``one_score_pattern_backup`` are FastChat's objects, looked up lazily): its import loads torch,
transformers, openai and anthropic (seconds), which Table 2's radar chart and
``mt-bench-setup`` do not need.

Real runs read the 80 questions and GPT-4's reference answers from FastChat's public
repository at a pinned commit (:func:`download_fastchat`, run once at setup).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from eval.chat_data import MT_BENCH_CATEGORIES
from eval.judge_client import ChatClient
from rebel.errors import HarnessError
from rebel.paths import REPO_ROOT

JUDGE_PROMPTS = REPO_ROOT / "workflow" / "resources" / "mt_bench" / "judge_prompts_single.jsonl"
FASTCHAT_CACHE = REPO_ROOT / "workflow" / "resources" / "mt_bench" / "cache"
"""Where ``python -m rebel mt-bench-setup`` puts FastChat's questions and reference answers (git-ignored)."""
FASTCHAT_RAW = "https://raw.githubusercontent.com/lm-sys/FastChat/{commit}/fastchat/llm_judge/data/mt_bench/{file}"
FASTCHAT_FILES = ("question.jsonl", "reference_answer/gpt-4.jsonl")

FROM_FASTCHAT = ("NEED_REF_CATS", "temperature_config", "one_score_pattern", "one_score_pattern_backup")
"""Module attributes that are ``fastchat.llm_judge.common``'s own objects (resolved on first access)."""
DEFAULT_TEMPERATURE = 0.7
"""FastChat ``gen_model_answer.py``'s temperature for a category missing from ``temperature_config``."""


def fastchat_judge() -> ModuleType:
    """``fastchat.llm_judge.common``, imported on first use (its import takes seconds: torch, transformers,
    openai, anthropic)."""
    from fastchat.llm_judge import common

    return common


def __getattr__(name: str) -> Any:
    if name in FROM_FASTCHAT:
        return getattr(fastchat_judge(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_judge_prompts(path: Path = JUDGE_PROMPTS) -> dict[str, dict[str, str]]:
    """Judge prompts by name, read by FastChat's ``load_judge_prompts`` (every line of ``path``; the pinned
    file holds the four single-answer prompts)."""
    return fastchat_judge().load_judge_prompts(str(path))


def answer_temperature(category: str) -> float:
    """The sampling temperature of an MT-Bench answer in ``category``, FastChat's ``temperature_config``
    (``gen_model_answer.py``; 0 means greedy decoding there). A category missing from ``temperature_config``
    gets 0.7, FastChat's default."""
    return float(fastchat_judge().temperature_config.get(category, DEFAULT_TEMPERATURE))


def fastchat_prompt(template: str, turns: list[str], answers: list[str]) -> str:
    """The generation prompt of turn ``len(answers) + 1`` of a question in FastChat's conversation
    ``template`` (e.g. ``"openchat_3.5"``), as ``gen_model_answer.py`` builds it: the earlier turns with their
    answers, then the turn to answer and an empty assistant message."""
    from fastchat.conversation import conv_templates, get_conv_template

    if template not in conv_templates:
        raise HarnessError(f"FastChat has no conversation template '{template}'")
    if len(answers) >= len(turns):
        raise ValueError(f"{len(answers)} answers for {len(turns)} turns: no turn left to answer")
    conv = get_conv_template(template)
    for question, answer in zip(turns, answers):
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], answer)
    conv.append_message(conv.roles[0], turns[len(answers)])
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def prompt_name(category: str, turn: int) -> str:
    """FastChat's judge prompt for a question's category and turn (1 or 2)."""
    if turn not in (1, 2):
        raise ValueError(f"MT-Bench turn must be 1 or 2, not {turn}")
    name = "single-math-v1" if category in fastchat_judge().NEED_REF_CATS else "single-v1"
    return name + ("-multi-turn" if turn == 2 else "")


def judge_messages(
    prompts: dict[str, dict[str, str]], question: dict[str, Any], answers: list[str], turn: int
) -> list[dict[str, str]]:
    """The judge conversation for one turn of one answered question (FastChat ``run_judge_single``)."""
    template = prompts[prompt_name(question["category"], turn)]
    kwargs: dict[str, str] = {}
    if question["category"] in fastchat_judge().NEED_REF_CATS:
        if "reference" not in question:
            raise HarnessError(
                f"MT-Bench question {question['question_id']} ({question['category']}) has no reference answer"
            )
        kwargs["ref_answer_1"] = question["reference"][0]
        if turn == 2:
            kwargs["ref_answer_2"] = question["reference"][1]
    if turn == 2:
        user = template["prompt_template"].format(
            question_1=question["turns"][0],
            question_2=question["turns"][1],
            answer_1=answers[0],
            answer_2=answers[1],
            **kwargs,
        )
    else:
        user = template["prompt_template"].format(question=question["turns"][0], answer=answers[0], **kwargs)
    return [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user}]


def parse_rating(judgment: str | None) -> float:
    """FastChat's rating parser (``run_judge_single``): its ``one_score_pattern`` (``[[x]]``), else
    ``one_score_pattern_backup`` (``[x]``); -1 when neither is found (or no reply)."""
    if judgment is None:
        return -1
    common = fastchat_judge()
    match = common.one_score_pattern.search(judgment) or common.one_score_pattern_backup.search(judgment)
    return float(match.group(1)) if match else -1


def download_fastchat(cache_dir: Path, commit: str) -> None:
    """Fetch the 80 questions and GPT-4 reference answers at ``commit`` into ``cache_dir`` (real runs, setup)."""
    for file in FASTCHAT_FILES:
        target = cache_dir / commit / file
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(FASTCHAT_RAW.format(commit=commit, file=file), timeout=60) as response:
            data = response.read()
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)


def load_fastchat_questions(cache_dir: Path, commit: str) -> list[dict[str, Any]]:
    """The 80 questions, with GPT-4's reference answers attached to the reference categories."""
    paths = [cache_dir / commit / f for f in FASTCHAT_FILES]
    for path in paths:
        if not path.is_file():
            raise HarnessError(f"MT-Bench file '{path}' not found; run `python -m rebel mt-bench-setup` first")
    questions = [json.loads(line) for line in paths[0].read_text().splitlines() if line.strip()]
    references = {
        r["question_id"]: r["choices"][0]["turns"]
        for r in map(json.loads, filter(str.strip, paths[1].read_text().splitlines()))
    }
    need_ref = fastchat_judge().NEED_REF_CATS
    for q in questions:
        if q["category"] in need_ref:
            q["reference"] = references[q["question_id"]]
    return questions


def grade(
    questions: list[dict[str, Any]],
    answers: list[list[str]],
    *,
    client: ChatClient,
    judge_max_tokens: int,
    prompts: dict[str, dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One judgment per (question, turn), both turns of every question, in one batch through ``client``."""
    prompts = prompts or load_judge_prompts()
    jobs = [(q, a, turn) for q, a in zip(questions, answers, strict=True) for turn in (1, 2)]
    replies = client.complete(
        [judge_messages(prompts, q, a, t) for q, a, t in jobs], max_tokens=judge_max_tokens, temperature=0.0
    )
    return [
        {
            "question_id": q["question_id"],
            "category": q["category"],
            "turn": t,
            "judge_prompt": prompt_name(q["category"], t),
            "answer": a[t - 1],
            "judgment": r.text,
            "error": r.error,
            "score": parse_rating(r.text),
        }
        for (q, a, t), r in zip(jobs, replies)
    ]


def summarize(judgments: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall, per-turn and per-category means of the valid ratings; -1 ratings counted, excluded."""
    valid = [j for j in judgments if j["score"] != -1]

    def mean(rows: list[dict[str, Any]]) -> float:
        return float(np.mean([j["score"] for j in rows])) if rows else float("nan")

    return {
        "score": mean(valid),
        "n_judgments": len(judgments),
        "judged": len(valid),
        "parse_failures": len(judgments) - len(valid),
        "turn_1": mean([j for j in valid if j["turn"] == 1]),
        "turn_2": mean([j for j in valid if j["turn"] == 2]),
        "categories": {c: mean([j for j in valid if j["category"] == c]) for c in MT_BENCH_CATEGORIES},
    }


def run_mt_bench(
    questions: list[dict[str, Any]],
    answers: list[list[str]],
    *,
    client: ChatClient,
    judge_model: str,
    judge_max_tokens: int,
    out_dir: Path,
    name: str,
) -> dict[str, Any]:
    """Grade one model's answers; writes ``out_dir/mt_bench_judgments.jsonl`` and ``out_dir/mt_bench.json``."""
    before = client.usage.as_dict()
    judgments = grade(questions, answers, client=client, judge_max_tokens=judge_max_tokens)
    result = {
        "name": name,
        "judge_model": judge_model,
        "n_questions": len(questions),
        **summarize(judgments),
        "judge_usage": {k: v - before[k] for k, v in client.usage.as_dict().items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "mt_bench_judgments.jsonl").open("w") as f:
        for j in judgments:
            f.write(json.dumps(j) + "\n")
    (out_dir / "mt_bench.json").write_text(json.dumps(result, indent=2))
    return result


def radar_chart(
    scores: dict[str, dict[str, float]], png: Path, pdf: Path | None = None, title: str = "MT-Bench"
) -> None:
    """Paper Figure 7: one polygon per model over the 8 categories, radial scale 0-10, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = np.linspace(0, 2 * np.pi, len(MT_BENCH_CATEGORIES), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(6, 6), subplot_kw={"polar": True})
    ax.set_theta_offset(np.pi / 2)  # Writing at the top, categories clockwise
    ax.set_theta_direction(-1)
    for label, by_category in scores.items():
        values = [by_category.get(c, np.nan) for c in MT_BENCH_CATEGORIES]
        ax.plot(angles + angles[:1], values + values[:1], linewidth=1.5, label=label)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([c.capitalize() if c != "stem" else "STEM" for c in MT_BENCH_CATEGORIES])
    ax.set_ylim(0, 10)
    ax.set_yticks([2, 4, 6, 8, 10])
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=150, bbox_inches="tight")
    if pdf is not None:
        fig.savefig(pdf, bbox_inches="tight")
    plt.close(fig)
