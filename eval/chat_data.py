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


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "subreddit", "title", "post", "messages") if k in row}


def _asked(row: dict[str, Any]) -> str:
    """What a test row asks: its user turn (chat form), else its TL;DR prompt."""
    return row["messages"][-1]["content"] if "messages" in row else D.prompt_text(row)


def embedded_instructions(test_rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """AlpacaEval-format instructions from a seeded subset of ``n`` test posts."""
    if n > len(test_rows):
        raise HarnessError(f"chat_eval.alpaca.n_instructions = {n} exceeds the {len(test_rows)} test prompts")
    index = sorted(random.Random(seed).sample(range(len(test_rows)), n))
    return [
        {
            "instruction": _asked(test_rows[i]),
            "output": test_rows[i]["reference"],
            "generator": "human_reference",
            "dataset": "embedded_tldr",
            "row": _row_fields(test_rows[i]),
        }
        for i in index
    ]


def embedded_questions(test_rows: list[dict[str, Any]], n_per_category: int, seed: int) -> list[dict[str, Any]]:
    """``8 * n_per_category`` two-turn MT-Bench-format questions from seeded test posts.

    Turn posts are drawn without replacement while the split lasts, then cycle. The categories graded
    with reference answers are FastChat's ``NEED_REF_CATS`` (``fastchat.llm_judge.common``, imported here
    because its import takes seconds).
    """
    from fastchat.llm_judge.common import NEED_REF_CATS

    order = list(range(len(test_rows)))
    random.Random(seed).shuffle(order)
    questions = []
    for i in range(len(MT_BENCH_CATEGORIES) * n_per_category):
        rows = [test_rows[order[(2 * i + t) % len(order)]] for t in range(2)]
        category = MT_BENCH_CATEGORIES[i // n_per_category]
        question = {
            "question_id": 81 + i,
            "category": category,
            "turns": [_asked(r) for r in rows],
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

    Embedded TL;DR rows are posts (``subreddit``, ``title``, ``post``), encoded as in training.
    """
    from eval.evaluate import sample_eval_responses

    if cfg["data"]["source"] != "synthetic":
        raise HarnessError(
            "TL;DR policies answer the embedded task only; a chat policy (data.format: chat) answers any prompt"
        )
    device = next(policy.parameters()).device
    _, _, r_ids, r_mask, _ = sample_eval_responses(
        cfg, policy, tokenizer, rows, seed=seed, max_new_tokens=max_new_tokens, device=device
    )
    return D.decode_responses(tokenizer, r_ids, r_mask)


def chat_answers(
    cfg: dict[str, Any],
    policy: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    *,
    seed: int,
    max_new_tokens: int,
    temperature: float | None = None,
) -> list[str]:
    """A chat policy's answer to each rendered prompt (its chat template, or FastChat's conversation template),
    sampled as in the Table 1 evaluation; prompts may be longer than ``data.prompt_length`` (a second turn)."""
    from eval.evaluate import sample_eval_responses

    rows = [{"id": f"prompt-{i}", "prompt": p} for i, p in enumerate(prompts)]
    length = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    device = next(policy.parameters()).device
    _, _, r_ids, r_mask, _ = sample_eval_responses(
        cfg,
        policy,
        tokenizer,
        rows,
        seed=seed,
        max_new_tokens=max_new_tokens,
        device=device,
        temperature=temperature,
        prompt_length=max(length, cfg["data"]["prompt_length"]),
    )
    return D.decode_responses(tokenizer, r_ids, r_mask)
