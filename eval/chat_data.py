"""Chat evaluation sets and answers: AlpacaEval instructions and MT-Bench questions (paper Tables 2-3, Figure 7).

Real runs read AlpacaEval 2.0's 805 instructions (with gpt4_turbo's outputs as the baseline)
and MT-Bench's 80 two-turn questions. The embedded policies only know the synthetic TL;DR
vocabulary and prompt format (``rebel/synthetic_tldr.py``), so the embedded sets are built
deterministically from the embedded test split:

- instructions: TL;DR prompts of a seeded subset of test posts; the baseline output is the
  post's human reference summary (the role gpt4_turbo's outputs play in AlpacaEval 2.0);
- MT-Bench-format questions: two turns, each the TL;DR prompt of another test post; the
  8 MT-Bench categories are assigned by index (question ``81 + i`` gets category ``i // n``,
  FastChat's id layout) and are labels only in the embedded world; "reference answers" of
  the math/reasoning/coding categories are the human references.

Each embedded turn keeps its post fields (``rows``) so that the policy is prompted in the
exact format it was trained on. The embedded policies have no chat template: each turn is
generated from that turn's prompt alone.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from rebel import data as D
from rebel.errors import HarnessError

MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
"""The 8 MT-Bench categories in the order of FastChat's question ids (81-160) and paper Figure 7."""
NEED_REF_CATS = ("math", "reasoning", "coding")
"""Categories graded with the reference-answer prompts (FastChat ``llm_judge/common.py``)."""


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "subreddit", "title", "post")}


def embedded_instructions(test_rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """AlpacaEval-format instructions from a seeded subset of ``n`` test posts."""
    if n > len(test_rows):
        raise HarnessError(f"chat_eval.alpaca.n_instructions = {n} exceeds the {len(test_rows)} test prompts")
    index = sorted(random.Random(seed).sample(range(len(test_rows)), n))
    return [
        {
            "instruction": D.prompt_text(test_rows[i]),
            "output": test_rows[i]["reference"],
            "generator": "human_reference",
            "dataset": "embedded_tldr",
            "row": _row_fields(test_rows[i]),
        }
        for i in index
    ]


def embedded_questions(test_rows: list[dict[str, Any]], n_per_category: int, seed: int) -> list[dict[str, Any]]:
    """``8 * n_per_category`` two-turn MT-Bench-format questions from seeded test posts.

    Turn posts are drawn without replacement while the split lasts, then cycle.
    """
    order = list(range(len(test_rows)))
    random.Random(seed).shuffle(order)
    questions = []
    for i in range(len(MT_BENCH_CATEGORIES) * n_per_category):
        rows = [test_rows[order[(2 * i + t) % len(order)]] for t in range(2)]
        category = MT_BENCH_CATEGORIES[i // n_per_category]
        question = {
            "question_id": 81 + i,
            "category": category,
            "turns": [D.prompt_text(r) for r in rows],
            "rows": [_row_fields(r) for r in rows],
        }
        if category in NEED_REF_CATS:
            question["reference"] = [r["reference"] for r in rows]
        questions.append(question)
    return questions


def generate_answers(
    cfg: dict[str, Any],
    policy: torch.nn.Module,
    tokenizer,
    rows: list[dict[str, Any]],
    *,
    seed: int,
    max_new_tokens: int,
) -> list[str]:
    """One answer per prompt row, sampled as in the Table 1 evaluation (:func:`eval.evaluate.sample_eval_responses`).

    Embedded rows are TL;DR posts (``subreddit``, ``title``, ``post``), encoded as in training.
    """
    from eval.evaluate import sample_eval_responses

    if cfg["data"]["source"] != "synthetic":
        raise HarnessError(
            "chat answers are generated for the embedded task only; the chat training setting "
            "(a chat model and its template) is a later issue"
        )
    device = next(policy.parameters()).device
    _, _, r_ids, r_mask, _ = sample_eval_responses(
        cfg, policy, tokenizer, rows, seed=seed, max_new_tokens=max_new_tokens, device=device
    )
    return D.decode_responses(tokenizer, r_ids, r_mask)
