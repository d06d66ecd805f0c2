"""Pipeline stages of the chat evaluation: the evaluation sets, and AlpacaEval 2.0, MT-Bench and (when
configured) Arena-Hard of one policy, judged through an OpenAI-compatible endpoint (``chat_eval.judge``).

A chat policy (``data.format: chat``) answers every prompt through its chat template (or, for MT-Bench,
FastChat's conversation template ``chat_eval.mt_bench.conv_template``), the second MT-Bench turn with the
first turn and its answer in the conversation; an embedded TL;DR policy answers each turn's TL;DR prompt.

``chat_eval.judge.type``:

- ``openai``: any OpenAI-compatible endpoint (GPT-4, a self-hosted vLLM server) at
  ``base_url``; the key is read from the environment variable ``api_key_env`` at call time;
- ``loopback``: the stage starts :class:`~eval.judge_server.LoopbackJudgeServer` in-process
  on an ephemeral 127.0.0.1 port with the embedded gold graders of :mod:`eval.chat_graders`
  and points the same client at it (``base_url`` is ignored), so the embedded world runs
  the GPT-4 code path offline.

Every reply is cached in ``results/<name>/chat/judge_cache.jsonl`` (shared by all policies;
safe for concurrent jobs), AlpacaEval's annotations also in the policy's own cache.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval import chat_data
from eval.judge_client import ChatClient, Endpoint
from rebel import data as D
from rebel import models as M
from rebel.errors import ConfigError, HarnessError

INSTRUCTIONS = "alpaca_instructions.json"
QUESTIONS = "mt_bench_questions.jsonl"
JUDGE_CACHE = "judge_cache.jsonl"
ARENA_QUESTIONS = "arena_hard_questions.jsonl"
ARENA_BASELINE = "arena_hard_baseline.jsonl"


def write_chat_sets(cfg: dict[str, Any], data_dir: Path, out: Path, fastchat_cache: Path) -> None:
    """Write the AlpacaEval instructions (with baseline outputs) and the MT-Bench questions under ``out``."""
    chat, seed = cfg["chat_eval"], cfg["data"]["seed"]
    alpaca, mt = chat["alpaca"], chat["mt_bench"]
    if alpaca["source"] == "embedded" or mt["source"] == "embedded":
        if cfg["data"]["source"] != "synthetic":
            raise ConfigError("key 'chat_eval': source 'embedded' needs data.source 'synthetic'")
        test_rows = D.read_jsonl(data_dir / "test.jsonl")
    if alpaca["source"] == "embedded":
        instructions = chat_data.embedded_instructions(test_rows, alpaca["n_instructions"], seed)
    elif alpaca["source"] == "hub":
        from alpaca_eval.constants import get_alpaca_eval_data

        instructions = [dict(r) for r in get_alpaca_eval_data()]
    else:
        path = Path(alpaca["source"]["path"])
        if not path.is_file():
            raise HarnessError(f"chat_eval.alpaca.source: file '{path}' not found")
        instructions = json.loads(path.read_text())
    if alpaca["source"] != "embedded" and alpaca["n_instructions"] is not None:
        instructions = instructions[: alpaca["n_instructions"]]
    if mt["source"] == "embedded":
        questions = chat_data.embedded_questions(test_rows, mt["n_per_category"], seed)
    else:
        from eval.mt_bench import load_fastchat_questions

        questions = load_fastchat_questions(fastchat_cache, mt["fastchat_commit"])
    out.mkdir(parents=True, exist_ok=True)
    (out / INSTRUCTIONS).write_text(json.dumps(instructions, indent=1))
    D.write_jsonl(out / QUESTIONS, questions)
    if chat.get("arena_hard") is not None:
        _write_arena_hard_set(cfg, data_dir, out)


def _write_arena_hard_set(cfg: dict[str, Any], data_dir: Path, out: Path) -> None:
    """Arena-Hard's questions and baseline answers in arena-hard-auto's formats: the embedded stand-in (seeded
    test prompts of the chat task, human references as the baseline's answers) or local copies of
    ``question.jsonl`` and ``model_answer/gpt-4-0314.jsonl``."""
    from eval import arena_hard as AH

    spec = cfg["chat_eval"]["arena_hard"]
    if spec["source"] == "embedded":
        if cfg["data"].get("format", "tldr") != "chat" or cfg["data"]["source"] != "synthetic":
            raise ConfigError("key 'chat_eval.arena_hard.source': 'embedded' needs the embedded chat task")
        questions, baseline = AH.embedded_set(
            D.read_jsonl(data_dir / "test.jsonl"), spec["n_questions"], cfg["data"]["seed"]
        )
    else:
        questions = AH.load_questions(Path(spec["source"]["questions"]))[: spec["n_questions"]]
        answers = AH.load_answers(Path(spec["source"]["baseline"]))
        missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
        if missing:
            raise HarnessError(f"chat_eval.arena_hard.source.baseline: no answer to question {missing[0]}")
        baseline = [
            {
                "question_id": q["question_id"],
                "model_id": "baseline",
                "choices": [{"index": 0, "turns": [{"content": answers[q["question_id"]]}]}],
            }
            for q in questions
        ]
    AH.write_set(questions, baseline, out)


@contextlib.contextmanager
def judge_client(cfg: dict[str, Any], cache_path: Path, model: str) -> Iterator[ChatClient]:
    """A :class:`ChatClient` for ``model`` at the configured endpoint (a loopback server started here
    for ``type: loopback``), closed with the context."""
    section = cfg["chat_eval"]["judge"]
    if section["type"] == "loopback":
        from eval.chat_graders import CHAT_GRADERS
        from eval.judge_server import LoopbackJudgeServer

        with LoopbackJudgeServer(list(CHAT_GRADERS)) as server:
            endpoint = Endpoint.from_config(section | {"base_url": server.base_url, "model": model}, "chat_eval.judge")
            yield ChatClient(endpoint, cache_path)
    else:
        yield ChatClient(Endpoint.from_config(section | {"model": model}, "chat_eval.judge"), cache_path)


def evaluate_chat(
    cfg: dict[str, Any], policy_ref: Path, *, seed: int, name: str, data_dir: Path, sets_dir: Path, out: Path
) -> dict[str, Any]:
    """AlpacaEval 2.0, MT-Bench and (with ``chat_eval.arena_hard``) Arena-Hard of one policy:
    ``out/alpaca_eval.json``, ``out/mt_bench.json``, ``out/arena_hard.json`` and their generations and judgments."""
    from eval.alpaca import run_alpaca_eval
    from eval.mt_bench import run_mt_bench

    chat = cfg["chat_eval"]
    is_chat = cfg["data"].get("format", "tldr") == "chat"
    instructions = json.loads((sets_dir / INSTRUCTIONS).read_text())
    questions = D.read_jsonl(sets_dir / QUESTIONS)
    if not is_chat:
        for item in (*instructions, *questions):
            if "row" not in item and "rows" not in item:
                raise HarnessError(
                    "a TL;DR policy answers the embedded task's sets only; a chat policy (data.format: chat) any"
                )
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    policy = M.load_policy(M.read_model_ref(policy_ref), cfg["model"]["dtype"])
    policy = policy.to(M.resolve_device(cfg["runtime"]["device"])).eval()
    answer = ChatAnswerer(cfg, policy, tokenizer, seed) if is_chat else None
    if is_chat:
        outputs = answer([[_user(i["instruction"])] for i in instructions], chat["alpaca"]["max_new_tokens"])
        answers = _mt_bench_chat_answers(cfg, answer, questions)
    else:
        outputs = chat_data.generate_answers(
            cfg,
            policy,
            tokenizer,
            [i["row"] for i in instructions],
            seed=seed,
            max_new_tokens=chat["alpaca"]["max_new_tokens"],
        )
        turns = chat_data.generate_answers(
            cfg,
            policy,
            tokenizer,
            [r for q in questions for r in q["rows"]],
            seed=seed,
            max_new_tokens=chat["mt_bench"]["max_new_tokens"],
        )
        answers = [turns[2 * i : 2 * i + 2] for i in range(len(questions))]
    model_outputs = [{**i, "output": o, "generator": name} for i, o in zip(instructions, outputs)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "alpaca_outputs.json").write_text(json.dumps(model_outputs, indent=1))
    D.write_jsonl(
        out / "mt_bench_answers.jsonl",
        ({"question_id": q["question_id"], "model_id": name, "turns": a} for q, a in zip(questions, answers)),
    )
    cache = sets_dir / JUDGE_CACHE
    with judge_client(cfg, cache, chat["alpaca"]["judge_model"]) as client:
        alpaca = run_alpaca_eval(
            model_outputs,
            instructions,
            client=client,
            judge_model=chat["alpaca"]["judge_model"],
            length_control=chat["alpaca"]["length_control"],
            out_dir=out,
            name=name,
        )
    with judge_client(cfg, cache, chat["mt_bench"]["judge_model"]) as client:
        mt = run_mt_bench(
            questions,
            answers,
            client=client,
            judge_model=chat["mt_bench"]["judge_model"],
            judge_max_tokens=chat["mt_bench"]["judge_max_tokens"],
            out_dir=out,
            name=name,
        )
    results = {"alpaca_eval": alpaca, "mt_bench": mt}
    if chat.get("arena_hard") is not None:
        if answer is None:
            raise ConfigError("key 'chat_eval.arena_hard': Arena-Hard needs a chat policy (data.format: chat)")
        results["arena_hard"] = _arena_hard(cfg, answer, sets_dir, cache, out, name)
    return results


def _user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


@dataclass(frozen=True)
class ChatAnswerer:
    """A chat policy's answers, sampled as in the Table 1 evaluation (:func:`eval.chat_data.chat_answers`)."""

    cfg: dict[str, Any]
    policy: Any
    tokenizer: Any
    seed: int

    def prompts(self, prompts: list[str], max_new_tokens: int, temperature: float | None = None) -> list[str]:
        """The answers to already rendered prompts (FastChat's conversation templates)."""
        return chat_data.chat_answers(
            self.cfg,
            self.policy,
            self.tokenizer,
            prompts,
            seed=self.seed,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
        )

    def __call__(
        self, conversations: list[list[dict[str, str]]], max_new_tokens: int, temperature: float | None = None
    ) -> list[str]:
        """The next assistant turn of each conversation, rendered by the tokenizer's chat template."""
        render = self.tokenizer.apply_chat_template
        prompts = [render(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        return self.prompts(prompts, max_new_tokens, temperature)


def _mt_bench_chat_answers(
    cfg: dict[str, Any], answer: ChatAnswerer, questions: list[dict[str, Any]]
) -> list[list[str]]:
    """Both turns of every MT-Bench question, the second with the first and its answer in the conversation
    (FastChat's ``gen_model_answer.py``): through FastChat's conversation template when
    ``chat_eval.mt_bench.conv_template`` names one, at FastChat's per-category temperatures for its questions
    (their 0, greedy, is the evaluation's near-greedy ``eval.temperature``: the sampler needs one above 0)."""
    from eval.mt_bench import answer_temperature, fastchat_prompt

    spec = cfg["chat_eval"]["mt_bench"]
    by_temperature: dict[float | None, list[int]] = {}
    for i, q in enumerate(questions):
        temperature = answer_temperature(q["category"]) if spec["source"] == "fastchat" else None
        by_temperature.setdefault(temperature or None, []).append(i)
    turns: list[list[str]] = [[], []]
    for turn in (0, 1):
        texts: dict[int, str] = {}
        for temperature, index in by_temperature.items():
            if spec.get("conv_template"):
                prompts = [
                    fastchat_prompt(spec["conv_template"], questions[i]["turns"][: turn + 1], turns[0][i : i + turn])
                    for i in index
                ]
                replies = answer.prompts(prompts, spec["max_new_tokens"], temperature)
            else:
                history = [
                    [_user(questions[i]["turns"][0]), {"role": "assistant", "content": turns[0][i]}] if turn else []
                    for i in index
                ]
                conversations = [[*h, _user(questions[i]["turns"][turn])] for h, i in zip(history, index)]
                replies = answer(conversations, spec["max_new_tokens"], temperature)
            texts.update(zip(index, replies))
        turns[turn] = [texts[i] for i in range(len(questions))]
    return [list(pair) for pair in zip(*turns)]


def _arena_hard(
    cfg: dict[str, Any], answer: ChatAnswerer, sets_dir: Path, cache: Path, out: Path, name: str
) -> dict[str, Any]:
    """Arena-Hard of one chat policy: its answers to the set's questions, judged in both orders against the
    baseline's (:func:`eval.arena_hard.run_arena_hard`)."""
    from eval import arena_hard as AH

    spec = cfg["chat_eval"]["arena_hard"]
    questions = AH.load_questions(sets_dir / ARENA_QUESTIONS)
    baseline = AH.load_answers(sets_dir / ARENA_BASELINE)
    replies = answer(
        [q.get("messages") or [_user(q["turns"][0]["content"])] for q in questions], spec["max_new_tokens"]
    )
    D.write_jsonl(
        out / "arena_hard_answers.jsonl",
        ({"question_id": q["question_id"], "model_id": name, "answer": a} for q, a in zip(questions, replies)),
    )
    with judge_client(cfg, cache, spec["judge_model"]) as client:
        return AH.run_arena_hard(
            questions,
            {q["question_id"]: a for q, a in zip(questions, replies)},
            baseline,
            client=client,
            judge_model=spec["judge_model"],
            judge_max_tokens=spec["judge_max_tokens"],
            out_dir=out,
            name=name,
        )
