"""Pairwise judges behind one interface (the embedded gold judge now; an OpenAI-compatible one later).

A judge answers, for each (post, summary A, summary B), which summary it prefers, as the
GPT-4 judge of appendix H.1.6 does; ``None`` marks an answer that could not be parsed,
which is counted and reported rather than replaced by a coin flip.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Literal

import torch

from rebel import data as D
from rebel import synthetic_tldr as task

Preference = Literal["A", "B", "tie"] | None


class Judge(ABC):
    name: str

    @abstractmethod
    def judge(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[Preference]:
        """One preference per example: "A", "B", "tie", or None when the answer was unusable."""


class GoldJudge(Judge):
    """The embedded task's hidden gold quality (the stand-in for GPT-4; it is not the reward model).

    It reads the post's salient facts from the prompt text and prefers the summary of
    higher gold quality; equal quality is a tie, counted as half a win.
    """

    name = "gold"

    def judge(self, prompts: list[str], summaries_a: list[str], summaries_b: list[str]) -> list[Preference]:
        out: list[Preference] = []
        for prompt, a, b in zip(prompts, summaries_a, summaries_b, strict=True):
            qa, qb = task.gold_quality(prompt, a), task.gold_quality(prompt, b)
            out.append("A" if qa > qb else "B" if qb > qa else "tie")
        return out


def make_judge(cfg: dict[str, Any]) -> Judge:
    kind = cfg["eval"]["judge"]["type"]
    if kind == "gold":
        return GoldJudge()
    raise NotImplementedError(f"eval.judge.type '{kind}' is not implemented yet (the OpenAI-compatible judge is "
                              "its own issue); use 'gold' on the embedded task")


def preference_oracle(judge: Judge) -> Callable[[list[dict[str, Any]], list[str], list[str]], torch.Tensor]:
    """The judge as the preference oracle of self-play training (Appendix D): P(a ≻ b | x) is 1, 0, or
    ½ for a tie; an unparseable answer carries no preference and also counts ½."""
    def oracle(rows: list[dict[str, Any]], a: list[str], b: list[str]) -> torch.Tensor:
        answers = judge.judge([D.prompt_text(r) for r in rows], a, b)
        return torch.tensor([1.0 if p == "A" else 0.0 if p == "B" else 0.5 for p in answers])

    return oracle


def gold_sample_monitor(rows: list[dict[str, Any]], texts: list[str], has_eos: torch.Tensor) -> dict[str, float]:
    """Mean gold quality of training samples, logged per iteration to catch reward over-optimization."""
    quality = [task.gold_quality(D.prompt_text(r), t, bool(e)) for r, t, e in zip(rows, texts, has_eos.tolist())]
    return {"gold_quality": sum(quality) / len(quality)}
