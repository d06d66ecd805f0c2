"""Loopback-server graders for the AlpacaEval, MT-Bench and Arena-Hard judge prompts, backed by the embedded gold judge.

They read the judge prompt the evaluator sent (the exact text GPT-4 would get), recover the
post and the answer(s) from it, and answer in the judge's own format from the hidden gold
quality q of ``rebel/synthetic_tldr.py`` (coverage minus penalties, at most 1):

- **AlpacaEval** (``weighted_alpaca_eval_gpt4_turbo``: one token, ``m`` = output_1 better,
  ``M`` = output_2 better, read through its top-5 logprobs): a Bradley–Terry probability
  P(m) = σ((q₁ − q₂) / τ) with τ = 0.1, the temperature of the embedded preference
  annotator (``data.synthetic.annotator_temperature`` of the shipped configs); the token is
  the likelier one and ``top_logprobs`` carries log P(m), log P(M).
- **MT-Bench** (FastChat single-answer prompts, both turns, with or without a reference
  answer): ``Rating: [[r]]`` with r = round(1 + 9 · clip((q + 1) / 2, 0, 1)), so q = 1 (every
  fact, nothing else) is 10, q = 0 is 6 and q ≤ −1 is 1. The reference answer is ignored:
  the gold judge knows the post's facts.
- **Arena-Hard v0.1** (arena-hard-auto's pairwise prompt, :mod:`eval.arena_hard`): the judge's
  own answer (the oracle summary), then ``My final verdict is: [[X]]`` from d = q_A − q_B
  (rounded to 9 decimals): ``A>>B`` if d ≥ 0.5, ``A>B`` if d ≥ 0.1, ``A=B`` if |d| < 0.1,
  ``B>A`` if d ≤ −0.1, ``B>>A`` if d ≤ −0.5. A strong verdict takes half the post's facts more
  (or an invented fact, −0.6); a slight one any single flaw (the smallest, a filler word, is −0.15).

A prompt of any other format is declined (``None``) so another grader can answer it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from eval.judge_server import GraderReply
from rebel import synthetic_tldr as task

BT_TEMPERATURE = 0.1
"""τ of the AlpacaEval grader's Bradley–Terry probability (the embedded annotator's temperature)."""

_ALPACA = re.compile(
    r'"instruction": """(?P<instruction>.*?)""",\s*\}.*?"model_identifier": "m",\s*"output": """(?P<output_1>.*?)"""'
    r'.*?"model_identifier": "M",\s*"output": """(?P<output_2>.*?)"""',
    re.DOTALL,
)
_SINGLE = re.compile(
    r"\[Question\]\n(?P<question>.*?)\n\n(?:\[The Start of Reference Answer\]\n.*?\n\n)?"
    r"\[The Start of Assistant's Answer\]\n(?P<answer>.*?)\n\[The End of Assistant's Answer\]",
    re.DOTALL,
)
_ARENA_HARD = re.compile(
    r"<\|User Prompt\|>\n(?P<question>.*?)\n\n<\|The Start of Assistant A's Answer\|>\n(?P<answer_a>.*?)"
    r"\n<\|The End of Assistant A's Answer\|>\n\n<\|The Start of Assistant B's Answer\|>\n(?P<answer_b>.*?)"
    r"\n<\|The End of Assistant B's Answer\|>",
    re.DOTALL,
)
ARENA_HARD_STRONG, ARENA_HARD_SLIGHT = 0.5, 0.1
"""Arena-Hard grader: |q_A − q_B| from which a verdict is strong (``>>``) / slight (``>``); below: a tie."""
_MULTI = re.compile(
    r"<\|The Start of Assistant A's Conversation with User\|>\n\n### User:\n(?P<question_1>.*?)"
    r"\n\n### Assistant A:\n(?P<answer_1>.*?)\n\n### User:\n(?P<question_2>.*?)"
    r"\n\n### Assistant A:\n(?P<answer_2>.*?)\n\n<\|The End of Assistant A's Conversation",
    re.DOTALL,
)


def _text(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in request.get("messages", []))


def alpaca_judgment(request: dict[str, Any]) -> tuple[str, list[dict[str, float]]] | None:
    """(token, per-token top logprobs) for an AlpacaEval ``m``/``M`` prompt, else None."""
    match = _ALPACA.search(_text(request))
    if match is None:
        return None
    instruction = match["instruction"]
    margin = (
        task.gold_quality(instruction, match["output_1"]) - task.gold_quality(instruction, match["output_2"])
    ) / BT_TEMPERATURE
    log_m = -math.log1p(math.exp(-margin)) if margin > -700 else margin
    log_big_m = -math.log1p(math.exp(margin)) if margin < 700 else -margin
    return ("m" if log_m >= log_big_m else "M"), [{"m": log_m, "M": log_big_m}]


def gold_rating(question: str, answer: str) -> int:
    """MT-Bench rating 1-10 of an answer to a TL;DR question from its gold quality."""
    quality = task.gold_quality(question, answer)
    return round(1 + 9 * min(max((quality + 1) / 2, 0.0), 1.0))


def mt_bench_judgment(request: dict[str, Any]) -> str | None:
    """The judgment text for a FastChat single-answer prompt (turn 1 or 2), else None."""
    text = _text(request)
    if (match := _MULTI.search(text)) is not None:
        question, answer, turn = match["question_2"], match["answer_2"], 2
    elif (match := _SINGLE.search(text)) is not None:
        question, answer, turn = match["question"], match["answer"], 1
    else:
        return None
    if not task.post_facts(question):
        return None
    rating = gold_rating(question, answer)
    return f"The answer to turn {turn} has gold quality {task.gold_quality(question, answer):.2f}. Rating: [[{rating}]]"


def arena_hard_verdict(difference: float) -> str:
    """The Arena-Hard label for a gold-quality difference d = q_A − q_B (thresholds in the module docstring)."""
    d = round(difference, 9)  # differences of sums of tenths and thirds: 0.6 - 0.5 must be 0.1
    if abs(d) < ARENA_HARD_SLIGHT:
        return "A=B"
    better, worse = ("A", "B") if d > 0 else ("B", "A")
    return f"{better}{'>>' if abs(d) >= ARENA_HARD_STRONG else '>'}{worse}"


def arena_hard_judgment(request: dict[str, Any]) -> str | None:
    """The judgment text for arena-hard-auto's pairwise prompt (its first attempt or the follow-up), else None."""
    user = next((m for m in request.get("messages", []) if m.get("role") == "user"), {})
    match = _ARENA_HARD.fullmatch(str(user.get("content", "")))
    if match is None or not task.post_facts(match["question"]):
        return None
    question = match["question"]
    q_a, q_b = task.gold_quality(question, match["answer_a"]), task.gold_quality(question, match["answer_b"])
    verdict = arena_hard_verdict(q_a - q_b)
    return (
        f"My own answer to the prompt would be:{task.oracle_summary(question)}\n\n"
        f"Assistant A's answer has gold quality {q_a:.2f}; Assistant B's answer has gold quality {q_b:.2f}.\n\n"
        f"My final verdict is: [[{verdict}]]"
    )


def alpaca_grader(request: dict[str, Any]) -> GraderReply | None:
    """Loopback-server grader for AlpacaEval's annotator prompt (see the module docstring)."""
    judged = alpaca_judgment(request)
    return None if judged is None else GraderReply(text=judged[0], top_logprobs=judged[1])


def mt_bench_grader(request: dict[str, Any]) -> GraderReply | None:
    """Loopback-server grader for FastChat's single-answer MT-Bench prompts (see the module docstring)."""
    judged = mt_bench_judgment(request)
    return None if judged is None else GraderReply(text=judged)


def arena_hard_grader(request: dict[str, Any]) -> GraderReply | None:
    """Loopback-server grader for arena-hard-auto's v0.1 pairwise prompt (see the module docstring)."""
    judged = arena_hard_judgment(request)
    return None if judged is None else GraderReply(text=judged)


CHAT_GRADERS = (alpaca_grader, mt_bench_grader, arena_hard_grader)
