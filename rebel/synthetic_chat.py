"""The chat form of the synthetic task (the embedded stand-in of the paper's general-chat setting, §5.2):
the same posts, facts and hidden gold quality as :mod:`rebel.synthetic_tldr`, asked as a user instruction
and answered in an assistant turn of a chat template, as OpenChat-3.5 and Llama-3-8B-Instruct are asked
Nectar's and UltraFeedback's prompts.

- A user turn is one of :data:`INSTRUCTIONS` followed by the post in the TL;DR fields
  (``SUBREDDIT: ... TITLE: ... POST: ...``), so the gold judge finds the post's facts in any text
  that contains the turn (it reads the sentences after ``POST:``).
- :data:`CHAT_TEMPLATE` (Jinja, the tokenizer's ``chat_template``) writes every turn as
  ``<|role|>\\n{content}{eos}\\n`` and ends a generation prompt with ``<|assistant|>\\n``: the assistant
  ends its turn with the EOS token, as Llama-3-Instruct ends it with ``<|eot_id|>``.
- Rows keep the TL;DR fields and add ``messages`` (the conversation so far) and ``prompt`` (its rendering
  by the tokenizer's template, with the generation prompt): every later stage encodes ``prompt``.
"""

from __future__ import annotations

import random
from typing import Any

ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
"""Special tokens of the embedded chat template's turn headers."""
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
INSTRUCTIONS = (
    "Summarize this post.",
    "What are the key facts of the post below?",
    "Give me a short summary of this post.",
    "TL;DR this post for me, please.",
    "What happened here? Answer briefly.",
)
"""User instructions of the embedded chat task: each user turn asks one of them about a post."""


def user_turn(row: dict[str, Any], instruction: str) -> str:
    """The user message asking ``instruction`` about a row's post."""
    return f"{instruction}\n\nSUBREDDIT: r/{row['subreddit']}\n\nTITLE: {row['title']}\n\nPOST: {row['post']}"


def with_instruction(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A TL;DR row as a one-turn conversation (``messages``) asking a seeded instruction about its post."""
    return row | {"messages": [{"role": "user", "content": user_turn(row, rng.choice(INSTRUCTIONS))}]}


def render(tokenizer, messages: list[dict[str, str]]) -> str:
    """The prompt text of a conversation: the tokenizer's chat template, ending with the generation prompt."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
