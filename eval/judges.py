"""Pairwise judges behind one interface: the embedded gold judge, and any OpenAI-compatible chat endpoint.

A judge answers, for each (post, summary A, summary B), which summary it prefers, as the
GPT-4 judge of appendix H.1.6 does; ``None`` marks an answer that could not be parsed,
which is counted and reported rather than replaced by a coin flip.

The H.1.6 format has no tie: on equal gold quality the gold judge answers "A" (one
decision function, :func:`gold_preference`, shared with the loopback server's grader
:func:`tldr_gold_grader`). The prompt and its parsers live in the leaf :mod:`eval.judge_prompts`.
Callers show the two summaries in a per-example random order, so in expectation a tie
is a fair coin flip. A judge that can tell a tie (the gold judge) says so through
:meth:`Judge.ties`, so that a winrate counts ties as half and its interval does not take
coin flips for evidence (:func:`eval.evaluate.winrate`).
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch

from eval.judge_client import ChatClient, Endpoint
from eval.judge_prompts import (
    JUDGE_MAX_TOKENS,
    TLDR_JUDGE_PROMPT,
    Preference,
    parse_preference,
    parse_tldr_prompt,
    tldr_judge_messages,
)
from eval.judge_server import GraderReply, LoopbackJudgeServer
from rebel import data as D
from rebel import synthetic_tldr as task
from rebel.errors import HarnessError

__all__ = [
    "JUDGE_MAX_TOKENS",
    "LOOPBACK_ENDPOINT",
    "TLDR_JUDGE_PROMPT",
    "GoldJudge",
    "Judge",
    "OpenAIJudge",
    "Preference",
    "cache_file",
    "gold_preference",
    "gold_sample_monitor",
    "make_judge",
    "parse_preference",
    "parse_tldr_prompt",
    "preference_oracle",
    "tldr_gold_grader",
    "tldr_judge_messages",
]


def gold_preference(post: str, summary_a: str, summary_b: str) -> Literal["A", "B"]:
    """The gold judge's decision: the summary of higher gold quality; "A" on equal quality (the
    H.1.6 format has no tie; with the caller's random A/B order a tie is a fair coin flip)."""
    return "A" if task.gold_quality(post, summary_a) >= task.gold_quality(post, summary_b) else "B"


class Judge(ABC):
    """A pairwise judge; use it as a context manager (a judge may hold a server or connections)."""

    name: str

    @abstractmethod
    def judge(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[Preference]:
        """One preference per example: "A", "B", or None when the answer was unusable."""

    def ties(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[bool] | None:
        """Which examples are ties (both summaries equally good), or None when the judge cannot tell."""
        return None

    def usage(self) -> dict[str, int | float] | None:
        """Calls, cache hits, retries, failures, tokens and estimated cost so far (API judges only)."""
        return None

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class GoldJudge(Judge):
    """The embedded task's hidden gold quality (the stand-in for GPT-4; it is not the reward model).

    It reads the post's salient facts from the prompt text and prefers the summary of
    higher gold quality, "A" on equal quality (:func:`gold_preference`).
    """

    name = "gold"

    def judge(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[Preference]:
        return [gold_preference(p, a, b) for p, a, b in zip(prompts, summaries_a, summaries_b, strict=True)]

    def ties(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[bool]:
        return [
            task.gold_quality(p, a) == task.gold_quality(p, b)
            for p, a, b in zip(prompts, summaries_a, summaries_b, strict=True)
        ]


class OpenAIJudge(Judge):
    """The H.1.6 judge on an OpenAI-compatible endpoint, through :class:`eval.judge_client.ChatClient`
    (bounded retries and concurrency, disk cache); replies parsed by :func:`parse_preference`.

    With ``loopback=True`` the judge starts :class:`eval.judge_server.LoopbackJudgeServer` (with
    :func:`tldr_gold_grader`) on an ephemeral port for its lifetime and points the endpoint at it.
    """

    def __init__(self, endpoint: Endpoint, cache_path: Path, *, loopback: bool = False):
        self._stack = ExitStack()
        if loopback:
            server = self._stack.enter_context(LoopbackJudgeServer([tldr_gold_grader]))
            endpoint = replace(endpoint, base_url=server.base_url)
        self.name = endpoint.model
        self.client = ChatClient(endpoint, cache_path)

    def judge(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[Preference]:
        conversations = [
            tldr_judge_messages(p, a, b) for p, a, b in zip(prompts, summaries_a, summaries_b, strict=True)
        ]
        replies = self.client.complete(conversations, max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)
        return [parse_preference(r.text) for r in replies]

    def usage(self) -> dict[str, int | float]:
        return self.client.usage.as_dict()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


LOOPBACK_ENDPOINT = Endpoint(
    base_url="http://127.0.0.1/v1",
    model="embedded-gold",
    api_key_env="",
    timeout_s=30.0,
    max_retries=3,
    concurrency=4,
    backoff_s=0.05,
    backoff_max_s=1.0,
)
"""The gold judge behind the loopback server (``eval.judge: {type: gold, via_server: true}``); the
base URL is replaced by the server's ephemeral port."""


def tldr_gold_grader(request: dict) -> GraderReply | None:
    """The TL;DR judge of appendix H.1.6 backed by the embedded gold quality, a grader of the
    loopback server (:class:`eval.judge_server.LoopbackJudgeServer`).

    Answers ``Comparison: <one sentence>`` / ``Preferred: A|B`` with the same decision as
    :class:`GoldJudge` (:func:`gold_preference`: equal quality is "A"), so a winrate judged
    through the server equals the one judged directly.
    """
    messages = request.get("messages") or [None]
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    parsed = parse_tldr_prompt(content) if isinstance(content, str) else None
    if parsed is None:
        return None
    post, a, b = parsed
    preferred = gold_preference(post, a, b)
    qa, qb = task.gold_quality(post, a), task.gold_quality(post, b)
    return GraderReply(
        f"Comparison: Summary {preferred} covers the post's important points at least as well, "
        f"with fewer irrelevant or invented details (gold quality {qa:.2f} vs {qb:.2f}).\n"
        f"Preferred: {preferred}"
    )


def cache_file(cache_dir: Path, model: str) -> Path:
    """``<cache_dir>/<model slug>.jsonl``: one cache per judge model, shared by every policy of a run."""
    return cache_dir / (re.sub(r"[^A-Za-z0-9._-]+", "_", model) + ".jsonl")


def make_judge(cfg: dict[str, Any], cache_dir: Path | None = None) -> Judge:
    """The config's judge (``eval.judge``). API judges cache under ``cache_dir`` and check now, before
    any generation, that the key's environment variable is set."""
    spec = cfg["eval"]["judge"]
    if spec["type"] == "gold" and not spec.get("via_server", False):
        return GoldJudge()
    if cache_dir is None:
        raise HarnessError(
            f"eval.judge.type '{spec['type']}' judges through an endpoint and needs a cache directory (--judge-cache)"
        )
    if spec["type"] == "gold":
        return OpenAIJudge(LOOPBACK_ENDPOINT, cache_file(cache_dir, LOOPBACK_ENDPOINT.model), loopback=True)
    endpoint = Endpoint.from_config(spec)
    endpoint.api_key()
    return OpenAIJudge(endpoint, cache_file(cache_dir, endpoint.model))


def preference_oracle(judge: Judge) -> Callable[[list[dict[str, Any]], list[str], list[str]], torch.Tensor]:
    """The judge as the preference oracle of self-play training (Appendix D): P(a ≻ b | x) is 1 or 0;
    an unparseable answer carries no preference and counts ½. The two responses are shown in an
    order drawn from a hash of the texts (deterministic, so a resumed run asks the same questions),
    which cancels a judge's position bias and makes the gold judge's tie rule a fair coin."""

    def oracle(rows: list[dict[str, Any]], a: list[str], b: list[str]) -> torch.Tensor:
        prompts = [D.prompt_text(r) for r in rows]
        swap = [hashlib.sha256("\0".join(t).encode()).digest()[0] & 1 == 1 for t in zip(prompts, a, b, strict=True)]
        first = [y if s else x for x, y, s in zip(a, b, swap)]
        second = [x if s else y for x, y, s in zip(a, b, swap)]
        answers = judge.judge(prompts, first, second)
        return torch.tensor([0.5 if p is None else float((p == "A") != s) for p, s in zip(answers, swap)])

    return oracle


def gold_sample_monitor(rows: list[dict[str, Any]], texts: list[str], has_eos: torch.Tensor) -> dict[str, float]:
    """Mean gold quality of training samples, logged per iteration to catch reward over-optimization."""
    quality = [task.gold_quality(D.prompt_text(r), t, bool(e)) for r, t, e in zip(rows, texts, has_eos.tolist())]
    return {"gold_quality": sum(quality) / len(quality)}
