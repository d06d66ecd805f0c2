"""Data stage: prompts, reference summaries, preference pairs and a tokenizer on local disk.

Every later stage reads only what this stage wrote (``results/<name>/data/``):

- ``{train,val,test}.jsonl``: ``{"id", "subreddit", "title", "post", "reference"}``
- ``prefs_{train,val}.jsonl``: ``{"id", "subreddit", "title", "post", "chosen", "rejected"}``
- ``tokenizer/``: a Hugging Face tokenizer (trained locally, or the model's own)
- ``stats.json``: measured properties of the data

References and responses carry a leading space and no EOS; the EOS token is appended
when encoding (implementation notes: ``" {summary}<|endoftext|>"``).

With ``data.format: chat`` (the general-chat setting, §5.2) every row also has ``messages`` (the
conversation, its last turn the user's) and ``prompt`` (its rendering by the tokenizer's chat template,
ending with the assistant's generation prompt), which is what is encoded: the synthetic task's chat form
(:mod:`rebel.synthetic_chat`), or a chat data set's prompts (:func:`prepare_hub_chat`: Nectar,
UltraFeedback) kept when they fit in ``data.prompt_length`` tokens (appendix H.2.2: 1,024). A chat
response ends with the tokenizer's EOS token, the template's end of an assistant turn.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from rebel import synthetic_chat as chat
from rebel import synthetic_tldr as task
from rebel.errors import ConfigError, HarnessError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "[PAD]"


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"data file '{path}' not found; run the data stage first")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def prompt_text(row: dict[str, Any]) -> str:
    """The prompt a row asks: its chat rendering, else the TL;DR prompt of its post."""
    if "prompt" in row:
        return row["prompt"]
    return task.format_prompt(row["subreddit"], row["title"], row["post"])


# ---------------------------------------------------------------- synthetic task


def _synthetic_rows(rng: random.Random, n: int, split: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        post = task.make_post(rng)
        yield {
            "id": f"{split}-{i}",
            "subreddit": post.subreddit,
            "title": post.title,
            "post": post.body,
            "reference": task.human_summary(post, rng),
        }


def _preference_rows(
    rng: random.Random, n: int, minimal_fraction: float, temperature: float, split: str
) -> Iterator[dict[str, Any]]:
    for i in range(n):
        post = task.make_post(rng)
        a = task.candidate_summary(post, rng)
        b = task.corrupt(post, a, rng) if rng.random() < minimal_fraction else task.candidate_summary(post, rng)
        prompt = task.format_prompt(post.subreddit, post.title, post.body)
        label = task.annotate(prompt, a, b, rng, temperature)
        chosen, rejected = (a, b) if label == 0 else (b, a)
        yield {
            "id": f"pref-{split}-{i}",
            "subreddit": post.subreddit,
            "title": post.title,
            "post": post.body,
            "chosen": chosen,
            "rejected": rejected,
        }


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, extra_special_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as GPT-NeoX uses) trained on the task's own text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, *extra_special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, bos_token=EOS_TOKEN, padding_side="left"
    )


def prepare_synthetic(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Generate the embedded TL;DR task; returns the measured data statistics."""
    syn = cfg["data"]["synthetic"]
    rng = random.Random(cfg["data"]["seed"])
    splits = {s: list(_synthetic_rows(rng, syn[f"n_{s}"], s)) for s in ("train", "val", "test")}
    prefs = {
        s: list(
            _preference_rows(rng, syn[f"n_pref_{s}"], syn["minimal_pair_fraction"], syn["annotator_temperature"], s)
        )
        for s in ("train", "val")
    }
    is_chat = cfg["data"].get("format", "tldr") == "chat"
    if is_chat:  # the same posts asked as chat instructions (rebel.synthetic_chat)
        splits = {s: [chat.with_instruction(r, rng) for r in rows] for s, rows in splits.items()}
        prefs = {s: [chat.with_instruction(r, rng) for r in rows] for s, rows in prefs.items()}
    content = (lambda r: r["messages"][-1]["content"]) if is_chat else prompt_text
    texts = [content(r) + r["reference"] for rows in splits.values() for r in rows]
    texts += [content(r) + r["chosen"] + r["rejected"] for r in prefs["train"]]
    tokenizer = train_tokenizer(texts, syn["vocab_size"], chat.ROLE_TOKENS if is_chat else ())
    if is_chat:
        tokenizer.chat_template = chat.CHAT_TEMPLATE
        splits = {
            s: [r | {"prompt": chat.render(tokenizer, r["messages"])} for r in rows] for s, rows in splits.items()
        }
        prefs = {s: [r | {"prompt": chat.render(tokenizer, r["messages"])} for r in rows] for s, rows in prefs.items()}
    for split, rows in splits.items():
        write_jsonl(out / f"{split}.jsonl", rows)
    for split, rows in prefs.items():
        write_jsonl(out / f"prefs_{split}.jsonl", rows)
    tokenizer.save_pretrained(out / "tokenizer")
    val_prefs = prefs["val"]
    gold_agree = [
        task.gold_quality(prompt_text(r), r["chosen"]) >= task.gold_quality(prompt_text(r), r["rejected"])
        for r in val_prefs
    ]
    return {
        "source": "synthetic",
        "format": cfg["data"].get("format", "tldr"),
        "n": {k: len(v) for k, v in splits.items()} | {f"prefs_{k}": len(v) for k, v in prefs.items()},
        "reference_gold_quality_mean": statistics.mean(
            task.gold_quality(prompt_text(r), r["reference"]) for r in splits["test"]
        ),
        "optimal_gold_quality_mean": 1.0,
        "annotator_agreement_with_gold_val": statistics.mean(gold_agree),
        "max_prompt_tokens": max(len(tokenizer(prompt_text(r))["input_ids"]) for r in splits["test"]),
        "max_reference_tokens": max(len(tokenizer(r["reference"])["input_ids"]) + 1 for r in splits["test"]),
        "vocab_size": len(tokenizer),
    }


# ---------------------------------------------------------------- Hugging Face Hub data (paper configs)


def prepare_hub(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Download the TL;DR SFT and preference sets (implementation notes) and write them locally.

    Uses the policy base model's tokenizer; needs the optional ``datasets`` package, and
    network access unless the config names local copies (``{path: ...}``).
    """
    from datasets import load_dataset

    from rebel.models import load_tokenizer

    def load(ref: dict[str, Any]):
        return load_dataset(ref["path"]) if "path" in ref else load_dataset(ref["id"], revision=ref["revision"])

    hub = cfg["data"]["hub"]
    sft, prefs = load(hub["sft_dataset"]), load(hub["preference_dataset"])
    fields = ("subreddit", "title", "post")
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = sft[name]
        limit = hub["max_train"] if split == "train" and hub["max_train"] else len(rows)
        write_jsonl(
            out / f"{split}.jsonl",
            (
                {"id": str(r["id"]), **{k: r[k] for k in fields}, "reference": " " + r["summary"].strip()}
                for r in rows.select(range(min(limit, len(rows))))
            ),
        )
    for split, name in (("train", "train"), ("val", "validation")):
        rows = prefs[name]
        limit = hub["max_pref_train"] if split == "train" and hub["max_pref_train"] else len(rows)
        write_jsonl(
            out / f"prefs_{split}.jsonl",
            (
                {
                    "id": f"pref-{split}-{i}",
                    **{k: r["info"][k] or "" for k in fields},
                    "chosen": " " + r["summaries"][r["choice"]]["text"].strip(),
                    "rejected": " " + r["summaries"][1 - r["choice"]]["text"].strip(),
                }
                for i, r in enumerate(rows.select(range(min(limit, len(rows)))))
            ),
        )
    load_tokenizer(cfg["model"]["base"]).save_pretrained(out / "tokenizer")
    return {"source": "hub", "sft_dataset": hub["sft_dataset"], "preference_dataset": hub["preference_dataset"]}


def _hh_messages(text: str) -> list[dict[str, str]]:
    """Anthropic-HH transcript ("\\n\\nHuman: ... \\n\\nAssistant: ...", ending with an open assistant turn:
    Nectar's ``prompt``) as chat messages."""
    messages = []
    for part in text.split("\n\nHuman: ")[1:]:
        user, _, assistant = part.partition("\n\nAssistant:")
        messages.append({"role": "user", "content": user.strip()})
        if assistant.strip():
            messages.append({"role": "assistant", "content": assistant.strip()})
    if not messages or messages[-1]["role"] != "user":
        raise HarnessError(f"data.chat.prompt_format 'hh': a prompt does not end with a Human turn: {text[:80]!r}")
    return messages


def chat_messages(record: dict[str, Any], field: str, prompt_format: str) -> list[dict[str, str]]:
    """The conversation of one chat data set record: ``field`` holds messages, an HH transcript or plain text."""
    value = record[field]
    if prompt_format == "messages":  # up to the last user turn
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        while messages and messages[-1]["role"] != "user":
            messages.pop()
        return messages
    if prompt_format == "hh":
        return _hh_messages(value)
    return [{"role": "user", "content": value}]


def prepare_hub_chat(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """A chat data set's prompts (appendix H.2.1: Nectar for Table 2, UltraFeedback for Table 3), rendered
    with the policy's chat template and kept when they fit in ``data.prompt_length`` tokens (H.2.2: prompts
    longer than 1,024 tokens, 2.3%, are filtered out); ``data.chat.n_eval`` of them (seeded) are held out as
    the validation and test prompts. The data sets have no reference answers (``reference`` is empty) and
    no preference pairs: the chat algorithms learn from the reward model (DPO of Table 3 from REBEL's pairs).
    Needs the optional ``datasets`` package, and network access unless ``data.chat.dataset`` is a local copy."""
    from datasets import load_dataset

    from rebel.models import load_tokenizer

    spec, length = cfg["data"]["chat"], cfg["data"]["prompt_length"]
    ref = spec["dataset"]
    records = (
        load_dataset(ref["path"], split=spec["split"])
        if "path" in ref
        else load_dataset(ref["id"], revision=ref["revision"], split=spec["split"])
    )
    tokenizer = load_tokenizer(cfg["model"]["base"], cfg["model"].get("pad_token"))
    rows, too_long = [], 0
    for i, record in enumerate(records):
        if spec["max_prompts"] is not None and len(rows) >= spec["max_prompts"]:
            break
        messages = chat_messages(record, spec["prompt_field"], spec["prompt_format"])
        prompt = chat.render(tokenizer, messages)
        if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > length:
            too_long += 1
            continue
        rows.append({"id": f"{spec['split']}-{i}", "messages": messages, "prompt": prompt, "reference": ""})
    order = random.Random(cfg["data"]["seed"]).sample(range(len(rows)), len(rows))
    held_out = sorted(order[: 2 * spec["n_eval"]])
    excluded = set(held_out)
    splits = {
        "val": [rows[i] for i in held_out[0::2]],
        "test": [rows[i] for i in held_out[1::2]],
        "train": [r for i, r in enumerate(rows) if i not in excluded],
    }
    for split, split_rows in splits.items():
        write_jsonl(out / f"{split}.jsonl", split_rows)
    for split in ("train", "val"):
        write_jsonl(out / f"prefs_{split}.jsonl", [])
    tokenizer.save_pretrained(out / "tokenizer")
    return {
        "source": "hub",
        "format": "chat",
        "dataset": ref,
        "n": {k: len(v) for k, v in splits.items()},
        "filtered_too_long": too_long,
    }


def prepare_data(cfg: dict[str, Any], out: Path) -> None:
    if cfg["data"]["source"] == "synthetic":
        stats = prepare_synthetic(cfg, out)
    elif cfg["data"].get("format", "tldr") == "chat":
        stats = prepare_hub_chat(cfg, out)
    else:
        stats = prepare_hub(cfg, out)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))


# ---------------------------------------------------------------- encoding


def encode_prompts(
    tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, Any]], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask of exactly ``length`` tokens.

    A post that does not fit is cut at its last newline (else sentence end, else word)
    that fits, as in the reference implementation's "smart truncation".
    """
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens = _chat_prompt(tokenizer, row, length) if "prompt" in row else _fit_prompt(tokenizer, row, length)
        ids[i, length - len(tokens) :] = torch.tensor(tokens)
    mask = torch.zeros_like(ids)
    for i in range(len(rows)):
        mask[i, length - int((ids[i] != tokenizer.pad_token_id).sum()) :] = 1
    return ids, mask


def _fit_prompt(tokenizer: PreTrainedTokenizerFast, row: dict[str, Any], length: int) -> list[int]:
    post = row["post"]
    while True:
        tokens = tokenizer(task.format_prompt(row["subreddit"], row["title"], post))["input_ids"]
        excess = len(tokens) - length
        if excess <= 0:
            return tokens
        if not post:
            raise ConfigError(
                f"key 'data.prompt_length': the prompt of '{row.get('id', row['title'])}' does "
                f"not fit in {length} tokens even without its post"
            )
        # Keep the post's tokens that fit, then back off to a boundary; one or two rounds.
        offsets = tokenizer(post, return_offsets_mapping=True)["offset_mapping"]
        keep = len(offsets) - excess
        cut = _cut_at_boundary(post[: offsets[keep - 1][1]] if keep > 0 else "")
        post = cut if len(cut) < len(post) else _cut_at_boundary(post[:-1])


def _chat_prompt(tokenizer: PreTrainedTokenizerFast, row: dict[str, Any], length: int) -> list[int]:
    """The tokens of a rendered chat prompt (its special tokens are in the text); a chat prompt is not cut."""
    tokens = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    if len(tokens) > length:
        raise ConfigError(
            f"key 'data.prompt_length': the chat prompt of '{row.get('id', '?')}' has {len(tokens)} tokens, "
            f"more than {length} (the data stage keeps only prompts that fit)"
        )
    return tokens


def _cut_at_boundary(text: str) -> str:
    """``text`` up to its last newline, else its last sentence end, else its last word."""
    for separator, keep in (("\n", 0), (". ", 1), (" ", 0)):
        at = text.rfind(separator)
        if at > 0:
            return text[: at + keep].rstrip()
    return ""


def encode_responses(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded response ids ``text + EOS`` cut to ``length`` tokens, and their mask."""
    ids = torch.full((len(texts), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, text in enumerate(texts):
        tokens = (tokenizer(text)["input_ids"] + [tokenizer.eos_token_id])[:length]
        ids[i, : len(tokens)] = torch.tensor(tokens)
        mask[i, : len(tokens)] = 1
    return ids, mask


def decode_responses(tokenizer: PreTrainedTokenizerFast, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Response text up to (not including) EOS."""
    out = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        tokens = [t for t, keep in zip(row, m) if keep and t != tokenizer.eos_token_id]
        out.append(tokenizer.decode(tokens))
    return out
