"""The loopback OpenAI-compatible judge server: its fault plan, the TL;DR gold grader, and the embedded
winrate judged through it equal to the one judged directly."""

import copy
import json
import os
import random
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, SMOKE
from fault_injection import FaultPlan, FaultyJudgeServer

from eval.evaluate import evaluate_policy
from eval.judge_client import ChatClient, Endpoint, FatalEndpointError, ReplyCache
from eval.judge_prompts import parse_tldr_prompt
from eval.judge_server import Exchange, GraderReply, LoopbackJudgeServer, Response
from eval.judges import (
    GoldJudge,
    Judge,
    OpenAIJudge,
    gold_preference,
    make_judge,
    parse_preference,
    preference_oracle,
    tldr_gold_grader,
    tldr_judge_messages,
)
from rebel import data as D
from rebel import synthetic_tldr as task
from rebel.config import load_config


def _endpoint(server: LoopbackJudgeServer, **changes) -> Endpoint:
    settings = dict(
        base_url=server.base_url,
        model="embedded-gold",
        api_key_env="",
        timeout_s=5.0,
        max_retries=3,
        concurrency=4,
        backoff_s=0.01,
        backoff_max_s=0.05,
    )
    return Endpoint(**(settings | changes))


def test_fault_plan_is_deterministic_with_the_asked_rates_and_bounded():
    plan = FaultPlan(
        seed=7, rate_429=0.1, rate_500=0.1, rate_timeout=0.1, rate_malformed=0.05, max_faults_per_request=2
    )
    hashes = [f"{i:064x}" for i in range(20000)]
    first = [plan.transient(h, 0) for h in hashes]
    assert first == [plan.transient(h, 0) for h in hashes]
    for kind in ("429", "500", "timeout"):
        assert first.count(kind) / len(hashes) == pytest.approx(0.1, abs=0.01)
    assert [plan.transient(h, 1) for h in hashes] != first  # each attempt draws again
    assert all(plan.transient(h, 2) is None for h in hashes)  # so every request succeeds by its third attempt
    permanent = [plan.permanent(h) for h in hashes]
    assert permanent.count("malformed") / len(hashes) == pytest.approx(0.05, abs=0.01)
    other_seed = FaultPlan(seed=8, rate_429=0.1, rate_500=0.1, rate_timeout=0.1)
    assert [other_seed.transient(h, 0) for h in hashes] != first


def test_gold_grader_reads_the_h16_prompt_back_and_decides_like_the_gold_judge():
    rng = random.Random(0)
    for _ in range(50):
        post = task.make_post(rng)
        prompt = task.format_prompt(post.subreddit, post.title, post.body)
        a, b = task.human_summary(post, rng), task.candidate_summary(post, rng)
        content = tldr_judge_messages(prompt, a, b)[0]["content"]
        assert content.startswith("Which of the following summaries does a better job")
        assert parse_tldr_prompt(content) == (prompt, a, b)
        reply = tldr_gold_grader({"messages": [{"role": "user", "content": content}]})
        assert parse_preference(reply.text) == gold_preference(prompt, a, b) == GoldJudge().judge([prompt], [a], [b])[0]
        assert reply.text.startswith("Comparison: ")
    assert tldr_gold_grader({"messages": [{"role": "user", "content": "Rate this answer from 1 to 10."}]}) is None
    assert tldr_gold_grader({"messages": []}) is None


def test_equal_quality_is_answered_a_directly_and_through_the_server(tmp_path):
    rng = random.Random(1)
    post = task.make_post(rng)
    prompt = task.format_prompt(post.subreddit, post.title, post.body)
    same = task.human_summary(post, rng)
    reordered = " , ".join(reversed(same.split(" , ")))  # the same facts in another order: equal gold quality
    assert task.gold_quality(prompt, same) == task.gold_quality(prompt, reordered)
    assert GoldJudge().judge([prompt] * 2, [same, reordered], [reordered, same]) == ["A", "A"]
    with LoopbackJudgeServer([tldr_gold_grader]) as server:
        judge = OpenAIJudge(_endpoint(server), tmp_path / "cache.jsonl")
        assert judge.judge([prompt] * 2, [same, reordered], [reordered, same]) == ["A", "A"]


def test_server_returns_logprobs_counts_requests_and_refuses_unknown_prompts(tmp_path):
    def rating(request: dict) -> GraderReply | None:
        if "Rate" not in request["messages"][-1]["content"]:
            return None
        return GraderReply("[[7]]", top_logprobs=[{"[[": -0.01, "[": -4.6}, {"7": -0.2, "8": -1.7}, {"]]": 0.0}])

    with LoopbackJudgeServer([tldr_gold_grader, rating]) as server:
        client = ChatClient(_endpoint(server, model="rater"), tmp_path / "cache.jsonl")
        (reply,) = client.complete([[{"role": "user", "content": "Rate: 2 + 2 = 4"}]], max_tokens=5, top_logprobs=2)
        assert reply.text == "[[7]]" and reply.top_logprobs[1] == {"7": -0.2, "8": -1.7}
        assert reply.prompt_tokens == 6 and reply.completion_tokens == 1  # whitespace words
        assert server.requests_total == 1 and list(server.successes_by_hash.values()) == [1]
        (cached,) = ChatClient(_endpoint(server, model="rater"), tmp_path / "cache.jsonl").complete(
            [[{"role": "user", "content": "Rate: 2 + 2 = 4"}]], max_tokens=5, top_logprobs=2
        )
        assert cached.cached and cached.top_logprobs == reply.top_logprobs and server.requests_total == 1
        with pytest.raises(FatalEndpointError, match=r"answered HTTP 400 \(BadRequestError\) for model 'rater'$"):
            client.complete([[{"role": "user", "content": "What is the capital of France?"}]], max_tokens=5)


def test_an_interceptor_sees_each_attempt_and_decides_what_is_sent_and_counted(tmp_path):
    """The runtime server has no fault injection of its own (that is tests/fault_injection.py): an
    interceptor wraps its answer, and only answers marked ``answered`` count as successes."""
    import eval.judge_server as judge_server

    assert not hasattr(judge_server, "FaultPlan")
    seen = []

    def first_attempt_fails(exchange: Exchange, answer) -> Response:
        seen.append((exchange.request_hash, exchange.attempt, exchange.request["model"]))
        if exchange.attempt == 0:
            return Response.error(503, "warming up", "server_error")
        return answer()

    with LoopbackJudgeServer([tldr_gold_grader], intercept=first_attempt_fails) as server:
        client = ChatClient(_endpoint(server), tmp_path / "cache.jsonl")
        rng = random.Random(3)
        post = task.make_post(rng)
        prompt = task.format_prompt(post.subreddit, post.title, post.body)
        (reply,) = client.complete(
            [tldr_judge_messages(prompt, task.human_summary(post, rng), "no idea")], max_tokens=8
        )
    assert parse_preference(reply.text) == "A" and client.usage.retries == 1
    (request_hash, _, _), _ = seen
    assert [(a, m) for _, a, m in seen] == [(0, "embedded-gold"), (1, "embedded-gold")]
    assert server.requests_by_hash == {request_hash: 2} and server.successes_by_hash == {request_hash: 1}


@pytest.mark.slow
def test_embedded_winrate_through_the_server_equals_the_direct_one(smoke_run, tmp_path):
    """Table 1's winrate for a trained smoke policy: the gold judge called directly, the gold judge
    behind the loopback server (eval.judge.via_server), and the OpenAI-judge command line pointed at
    a faulty loopback server with an API key — the same judgments, and the key in no file or log. The
    direct gold judge also knows which comparisons are ties and counts them half; a judge behind the
    H.1.6 format cannot, so there a tie is the coin flip of the A/B order."""
    run = smoke_run / "results" / "smoke"
    cfg = load_config(SMOKE)
    cfg["runtime"]["cpu_kernels"] = "native"  # evaluated in this process, whose torch is loaded already
    refs = dict(data_dir=run / "data", sft_ref=run / "sft" / "model.json", rm_ref=run / "rm" / "model.json")
    policy = run / "rebel" / "seed1" / "policy" / "model.json"
    direct = evaluate_policy(cfg, policy, seed=1, judge=GoldJudge(), out=tmp_path / "direct", **refs)

    via = copy.deepcopy(cfg)
    via["eval"]["judge"] = {"type": "gold", "via_server": True}
    with make_judge(via, tmp_path / "judge_cache") as judge:
        served = evaluate_policy(via, policy, seed=1, judge=judge, out=tmp_path / "served", **refs)
    for key in ("judged", "judge_parse_failures"):
        assert served[key] == direct[key], key
    rows = {name: D.read_jsonl(tmp_path / name / "generations.jsonl") for name in ("direct", "served")}
    outcomes = {name: [r["outcome"] for r in rows[name]] for name in rows}
    assert outcomes["direct"] == outcomes["served"] and 0 < direct["winrate"] < 100
    ties = [r["tie"] for r in rows["direct"]]
    assert direct["ties"] == sum(ties) and served["ties"] is None
    wins = sum(o for o, t in zip(outcomes["direct"], ties) if not t)
    assert direct["winrate"] == pytest.approx(100 * (wins + sum(ties) / 2) / len(ties))
    assert served["winrate"] == pytest.approx(100 * sum(outcomes["served"]) / len(ties))
    assert served["judge_usage"]["requests"] == cfg["eval"]["n_prompts"]
    assert len(ReplyCache(tmp_path / "judge_cache" / "embedded-gold.jsonl")) == cfg["eval"]["n_prompts"]

    secret = "sk-test-" + "".join(random.Random().choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40))
    faults = FaultPlan(seed=1, rate_429=0.1, rate_500=0.1, rate_timeout=0.1, delay_s=4.0)
    with FaultyJudgeServer([tldr_gold_grader], faults=faults, api_key=secret) as server:
        openai_cfg = copy.deepcopy(cfg)
        openai_cfg["eval"]["judge"] = {
            "type": "openai",
            "model": "gold-over-http",
            "base_url": server.base_url,
            "api_key_env": "REBEL_TEST_JUDGE_KEY",
            "timeout_s": 2.0,
            "max_retries": 3,
            "concurrency": 4,
            "backoff_s": 0.01,
            "backoff_max_s": 0.05,
            "usd_per_million_input_tokens": 30.0,
            "usd_per_million_output_tokens": 60.0,
        }
        (tmp_path / "openai.yaml").write_text(yaml.safe_dump(openai_cfg))
        command = [
            sys.executable,
            "-m",
            "rebel",
            "evaluate",
            "--config",
            str(tmp_path / "openai.yaml"),
            "--data",
            str(refs["data_dir"]),
            "--sft",
            str(refs["sft_ref"]),
            "--rm",
            str(refs["rm_ref"]),
            "--policy",
            str(policy),
            "--seed",
            "1",
            "--out",
            str(tmp_path / "cli"),
            "--judge-cache",
            str(tmp_path / "cli_cache"),
        ]
        env = os.environ | {"REBEL_TEST_JUDGE_KEY": secret}
        first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr[-2000:]
        calls = server.requests_total
        again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert again.returncode == 0 and server.requests_total == calls  # a rerun is served from the cache
    written = json.loads((tmp_path / "cli" / "eval.json").read_text())
    assert written["winrate"] == served["winrate"] and written["judge"] == "gold-over-http"
    assert sum(server.faults_injected.values()) > 0 and set(server.successes_by_hash.values()) == {1}
    usage = written["judge_usage"]
    assert usage["cache_hits"] == cfg["eval"]["n_prompts"] and usage["requests"] == 0  # the rerun's eval.json
    assert "estimated cost $" in first.stderr and "tokens" in first.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for text in (first.stdout, first.stderr, again.stderr, *(p.read_bytes().decode("utf-8", "replace") for p in files)):
        assert secret not in text


def test_self_play_oracle_shows_both_orders_and_is_reproducible():
    rng = random.Random(2)
    rows = [
        {"subreddit": p.subreddit, "title": p.title, "post": p.body} for p in (task.make_post(rng) for _ in range(40))
    ]
    best = [" " + " , ".join(task.fact_phrase(f) for f in task.post_facts(D.prompt_text(r))) for r in rows]
    padded = [" basically" + s for s in best]  # one filler word: lower gold quality
    oracle = preference_oracle(GoldJudge())
    assert oracle(rows, best, padded).tolist() == [1.0] * 40 and oracle(rows, padded, best).tolist() == [0.0] * 40
    ties = oracle(rows, best, best)  # equal quality: "A" in whichever order the hash drew, a fair coin overall
    assert set(ties.tolist()) == {0.0, 1.0} and ties.tolist() == oracle(rows, best, best).tolist()

    class Unsure(Judge):
        name, shown_first = "unsure", []

        def judge(self, prompts, summaries_a, summaries_b):
            self.shown_first += summaries_a
            return [None] * len(prompts)

    unsure = Unsure()
    assert preference_oracle(unsure)(rows, best, padded).tolist() == [0.5] * 40
    assert 0 < sum(s in best for s in unsure.shown_first) < 40  # position bias cancels
