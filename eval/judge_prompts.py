"""The TL;DR judge prompt of paper appendix H.1.6, and reading it and its replies back.

A leaf module (it imports nothing of the project): the judges that ask with this prompt
(:mod:`eval.judges`) and the graders that answer it (the loopback server's TL;DR grader,
:func:`eval.judges.tldr_gold_grader`) share it without importing each other.
"""

from __future__ import annotations

import re
from typing import Literal

Preference = Literal["A", "B"] | None

TLDR_JUDGE_PROMPT = (
    "Which of the following summaries does a better job of summarizing the most important points in the given "
    "forum post, without including unimportant or irrelevant details? Judge based on accuracy, coverage, and "
    "coherence.\n\n"
    "### Post:\n{post}\n\n"
    "### Summary A:\n{summary_a}\n\n"
    "### Summary B:\n{summary_b}\n\n"
    "### Instructions:\n"
    "FIRST provide a one-sentence comparison of the two summaries, explaining which you prefer and why. SECOND, on "
    'a new line, state only "A" or "B" to indicate your choice. Your response should use the format:\n'
    "Comparison: <one-sentence comparison and explanation>\n"
    'Preferred: <"A" or "B">'
)
"""The winrate prompt of paper appendix H.1.6 (GPT-4 judge, gpt-4-0613), word for word; the PDF's
line breaks are the original's paragraphs and its curly quotes straight ones, as in Rafailov et al. (2023)."""

JUDGE_MAX_TOKENS = 128
"""Reply length limit: H.1.6 asks for one sentence and one line (the paper's example reply is 33 words)."""

_PREFERRED = re.compile(r"Preferred:\s*([AB])")


def tldr_judge_messages(post: str, summary_a: str, summary_b: str) -> list[dict[str, str]]:
    """The H.1.6 prompt as one user message."""
    return [{"role": "user", "content": TLDR_JUDGE_PROMPT.format(post=post, summary_a=summary_a, summary_b=summary_b)}]


def parse_preference(text: str | None) -> Preference:
    """Strict parse of an H.1.6 reply: its last non-empty line is exactly ``Preferred: A`` or
    ``Preferred: B`` (spaces around allowed) and no other line starts with ``Preferred:``; else None."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines or sum(line.startswith("Preferred:") for line in lines) != 1:
        return None
    match = _PREFERRED.fullmatch(lines[-1])
    return match.group(1) if match else None  # type: ignore[return-value]


_HEAD, _REST = TLDR_JUDGE_PROMPT.split("{post}")
_BETWEEN_POST_AND_A, _REST = _REST.split("{summary_a}")
_BETWEEN_A_AND_B, _TAIL = _REST.split("{summary_b}")


def parse_tldr_prompt(content: str) -> tuple[str, str, str] | None:
    """(post, summary A, summary B) from an appendix H.1.6 prompt, or None for another prompt.
    The parts are separated by the prompt's fixed headers (a summary containing
    ``### Summary B:`` would be ambiguous; the embedded task's never do)."""
    if not (content.startswith(_HEAD) and content.endswith(_TAIL)):
        return None
    body = content[len(_HEAD) : len(content) - len(_TAIL)]
    post, sep, summaries = body.partition(_BETWEEN_POST_AND_A)
    a, sep2, b = summaries.partition(_BETWEEN_A_AND_B)
    return (post, a, b) if sep and sep2 else None
