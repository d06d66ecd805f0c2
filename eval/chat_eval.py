"""Pipeline stages of the chat evaluation: the evaluation sets, and AlpacaEval 2.0
plus MT-Bench of one policy, judged through an OpenAI-compatible endpoint (``chat_eval.judge``).

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
    """AlpacaEval 2.0 and MT-Bench of one policy: ``out/alpaca_eval.json``, ``out/mt_bench.json`` and their
    generations and judgments."""
    from eval.alpaca import run_alpaca_eval
    from eval.mt_bench import run_mt_bench

    chat = cfg["chat_eval"]
    instructions = json.loads((sets_dir / INSTRUCTIONS).read_text())
    questions = D.read_jsonl(sets_dir / QUESTIONS)
    for item in (*instructions, *questions):
        if "row" not in item and "rows" not in item:
            raise HarnessError(
                "chat answers are generated for the embedded task only; the chat training setting "
                "(a chat model and its template) is a later issue"
            )
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    policy = M.load_policy(M.read_model_ref(policy_ref), cfg["model"]["dtype"])
    policy = policy.to(M.resolve_device(cfg["runtime"]["device"])).eval()
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
    return {"alpaca_eval": alpaca, "mt_bench": mt}
