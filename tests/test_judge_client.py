"""The OpenAI-compatible judge client against a real HTTP server on 127.0.0.1 with server-side faults."""

import json
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO
from fault_injection import FaultPlan, FaultyJudgeServer

from eval.evaluate import tie_aware_winrate, wilson_interval, winrate
from eval.judge_client import ChatClient, Endpoint, FatalEndpointError, ReplyCache, _retry_after
from eval.judge_server import GraderReply, LoopbackJudgeServer
from eval.judges import GoldJudge, OpenAIJudge, make_judge, parse_preference, tldr_gold_grader, tldr_judge_messages
from rebel import synthetic_tldr as task
from rebel.errors import ConfigError


def _examples(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """n (prompt, human reference, candidate) triples of the embedded task."""
    rng = random.Random(seed)
    prompts, references, candidates = [], [], []
    for _ in range(n):
        post = task.make_post(rng)
        prompts.append(task.format_prompt(post.subreddit, post.title, post.body))
        references.append(task.human_summary(post, rng))
        candidates.append(task.candidate_summary(post, rng))
    return prompts, references, candidates


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


def _conversations(n: int) -> list[list[dict[str, str]]]:
    prompts, references, candidates = _examples(n)
    return [tldr_judge_messages(p, a, b) for p, a, b in zip(prompts, references, candidates)]


def test_strict_preference_parser():
    assert parse_preference("Comparison: B covers more.\nPreferred: B") == "B"
    assert parse_preference("Comparison: A is terse.\n  Preferred:   A  \n\n") == "A"
    for bad in (
        "Comparison: both fine.",
        "Preferred: C",
        "Preferred: A or B",
        'Preferred: "A"',
        "Preferred: AB",
        "Preferred: A\nPreferred: B",
        "Preferred: A\nbecause it is shorter",
        "",
        None,
        "I prefer A",
        "Preferred:\nA",
    ):
        assert parse_preference(bad) is None, bad


def test_wilson_interval_by_hand():
    # 7 of 10: centre (0.7 + z²/20)/(1 + z²/10) = 0.644494, half-width z·sqrt(0.021 + z²/400)/(1 + z²/10) = 0.247716
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.396778, abs=1e-6) and high == pytest.approx(0.892209, abs=1e-6)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)


def test_endpoint_config_errors_are_one_line(monkeypatch):
    section = {
        "type": "openai",
        "model": "gpt-4-0613",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "REBEL_TEST_KEY",
        "timeout_s": 60,
        "max_retries": 8,
        "concurrency": 8,
        "backoff_s": 1,
        "backoff_max_s": 60,
        "usd_per_million_input_tokens": 30,
        "usd_per_million_output_tokens": 60,
    }
    assert Endpoint.from_config(section).cost_usd(1_000_000, 500_000) == pytest.approx(60.0)
    for change, message in (
        (lambda s: s.pop("concurrency"), "key 'eval.judge.concurrency' is missing"),
        (lambda s: s.update(max_retries="3"), "key 'eval.judge.max_retries': '3' is not of type int"),
        (lambda s: s.update(timeout_s=0), "key 'eval.judge.timeout_s': 0 must be positive"),
        (lambda s: s.update(base_url="api.openai.com"), "key 'eval.judge.base_url'"),
    ):
        broken = dict(section)
        change(broken)
        with pytest.raises(ConfigError, match=message) as error:
            Endpoint.from_config(broken)
        assert "\n" not in str(error.value)
    monkeypatch.delenv("REBEL_TEST_KEY", raising=False)
    cfg = {"eval": {"judge": section}}
    with pytest.raises(
        ConfigError, match=r"^environment variable REBEL_TEST_KEY \(eval.judge.api_key_env\) is not set"
    ):
        make_judge(cfg, REPO / "never-written")
    assert not (REPO / "never-written").exists()


def test_thirty_percent_faults_every_judgment_completes_exactly_once(tmp_path):
    conversations = _conversations(40)
    with LoopbackJudgeServer([tldr_gold_grader]) as clean:
        expected = ChatClient(_endpoint(clean), tmp_path / "clean.jsonl").complete(conversations, max_tokens=64)
    faults = FaultPlan(seed=3, rate_429=0.1, rate_500=0.1, rate_timeout=0.1, delay_s=2.0, retry_after_s=0.01)
    with FaultyJudgeServer([tldr_gold_grader], faults=faults) as server:
        client = ChatClient(_endpoint(server, timeout_s=1.0), tmp_path / "faulty.jsonl")
        replies = client.complete(conversations, max_tokens=64)
    assert [r.text for r in replies] == [r.text for r in expected]
    assert all(parse_preference(r.text) in ("A", "B") for r in replies)
    # Each judgment answered successfully exactly once; every injected fault cost one counted retry.
    assert len(server.successes_by_hash) == 40 and set(server.successes_by_hash.values()) == {1}
    assert {"429", "500", "timeout"} <= set(server.faults_injected)
    assert client.usage.retries == sum(server.faults_injected.values()) == server.requests_total - 40
    assert client.usage.failures == 0 and client.usage.requests == server.requests_total


def test_rerun_is_served_from_the_cache(tmp_path):
    conversations = _conversations(12)
    with LoopbackJudgeServer([tldr_gold_grader]) as server:
        first = ChatClient(_endpoint(server), tmp_path / "cache.jsonl").complete(conversations, max_tokens=64)
        again = ChatClient(_endpoint(server), tmp_path / "cache.jsonl")
        second = again.complete(conversations + conversations[:3], max_tokens=64)
    assert server.requests_total == 12
    assert [r.text for r in second] == [r.text for r in first] + [r.text for r in first[:3]]
    assert all(r.cached for r in second) and again.usage.cache_hits == 15 and again.usage.requests == 0
    # Another model, or another request setting, is another key.
    with LoopbackJudgeServer([tldr_gold_grader]) as server:
        ChatClient(_endpoint(server, model="other"), tmp_path / "cache.jsonl").complete(
            conversations[:2], max_tokens=64
        )
        ChatClient(_endpoint(server), tmp_path / "cache.jsonl").complete(conversations[:2], max_tokens=32)
    assert server.requests_total == 4


KILLED_CLIENT = """
import sys
from pathlib import Path
from eval.judge_client import ChatClient, Endpoint
base_url, cache, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
endpoint = Endpoint(base_url, "echo", "", timeout_s=5, max_retries=0, concurrency=2, backoff_s=0.01, backoff_max_s=0.01)
ChatClient(endpoint, cache).complete([[{"role": "user", "content": f"question {i}"}] for i in range(n)], max_tokens=8)
"""


def _slow_echo(request: dict) -> GraderReply:
    time.sleep(0.05)
    return GraderReply("answer to " + request["messages"][-1]["content"])


def test_killed_run_restarted_makes_only_the_missing_requests(tmp_path):
    n, cache = 60, tmp_path / "cache.jsonl"
    with LoopbackJudgeServer([_slow_echo]) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, server.base_url, str(cache), str(n)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        while sum(server.successes_by_hash.values()) < 10 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered_before = sum(server.successes_by_hash.values())
        cached = len(ReplyCache(cache))
        assert 10 <= answered_before < n and answered_before - 2 <= cached <= answered_before  # ≤ 2 in flight lost
        requests_before = server.requests_total
        endpoint = Endpoint(
            server.base_url, "echo", "", timeout_s=5, max_retries=0, concurrency=2, backoff_s=0.01, backoff_max_s=0.01
        )
        replies = ChatClient(endpoint, cache).complete(
            [[{"role": "user", "content": f"question {i}"}] for i in range(n)], max_tokens=8
        )
    assert server.requests_total - requests_before == n - cached
    assert [r.text for r in replies] == [f"answer to question {i}" for i in range(n)]
    assert sum(r.cached for r in replies) == cached and len(ReplyCache(cache)) == n


def test_ties_count_half_and_their_coin_flips_do_not_narrow_the_interval():
    """10 comparisons, 4 of them ties the judge's A/B order decided (here all 4 flipped to wins):
    the winrate counts each tie as ½, and only the 6 decided comparisons are evidence."""
    rate, low, high = tie_aware_winrate(wins=3, ties=4, judged=10)
    assert rate == pytest.approx(0.5)  # (3 + 4/2) / 10
    assert (low, high) == pytest.approx(wilson_interval(3.0, 6))  # p = 0.5 with n = 6
    flips_counted = wilson_interval(7, 10)  # the old count: 3 wins + 4 flipped ties
    assert high - low > flips_counted[1] - flips_counted[0]
    assert tie_aware_winrate(wins=7, ties=0, judged=10)[1:] == pytest.approx(wilson_interval(7, 10))


def test_gold_judge_reports_ties_and_winrate_does_not_depend_on_their_coin_flips():
    prompts, references, _ = _examples(40, seed=3)
    judged = winrate(GoldJudge(), prompts, references, references, seed=5)  # every comparison a tie
    assert judged["ties"] == 40 and judged["winrate"] == 50.0
    assert 0 < sum(judged["outcomes"]) < 40  # the judge's flips went both ways
    for seed in (6, 7):  # another A/B order, other flips, same winrate
        assert winrate(GoldJudge(), prompts, references, references, seed=seed)["winrate"] == 50.0
    prompts, references, candidates = _examples(60, seed=1)
    mixed = winrate(GoldJudge(), prompts, candidates, references, seed=5)
    tie = mixed["tie"]
    wins = sum(o for o, t in zip(mixed["outcomes"], tie) if not t)
    assert mixed["ties"] == sum(tie) and 0 < mixed["ties"] < 60
    assert mixed["winrate"] == pytest.approx(100 * (wins + sum(tie) / 2) / 60)


def test_malformed_replies_are_parse_failures_never_wins(tmp_path):
    prompts, references, candidates = _examples(60, seed=1)
    direct = winrate(GoldJudge(), prompts, candidates, references, seed=5)
    faults = FaultPlan(seed=2, rate_malformed=0.2, rate_invalid_json=0.1)
    with FaultyJudgeServer([tldr_gold_grader], faults=faults) as server:
        judge = OpenAIJudge(_endpoint(server, max_retries=1), tmp_path / "cache.jsonl")
        judged = winrate(judge, prompts, candidates, references, seed=5)
    broken = server.faults_injected["malformed"] + server.faults_injected["invalid_json"] // 2  # 2 attempts each
    assert server.faults_injected["malformed"] > 0 and server.faults_injected["invalid_json"] > 0
    assert judged["parse_failures"] == broken and judged["judged"] == 60 - broken
    # Every judgment that did parse is the direct one; a failure is no outcome (not a loss, not a win).
    kept = [(d, o) for d, o in zip(direct["outcomes"], judged["outcomes"]) if o is not None]
    assert all(d == o for d, o in kept) and len(kept) == 60 - broken
    assert judged["winrate"] == pytest.approx(100 * sum(o for _, o in kept) / len(kept))
    assert judge.usage()["failures"] == server.faults_injected["invalid_json"] // 2
    # Malformed answers were finished judgments and are cached; failed calls are not.
    assert len(ReplyCache(tmp_path / "cache.jsonl")) == 60 - server.faults_injected["invalid_json"] // 2


def test_retries_are_bounded_and_failures_not_cached(tmp_path):
    always = FaultPlan(rate_500=1.0, max_faults_per_request=10**9)
    with FaultyJudgeServer([tldr_gold_grader], faults=always) as server:
        client = ChatClient(_endpoint(server, max_retries=4), tmp_path / "cache.jsonl")
        replies = client.complete(_conversations(3), max_tokens=64)
        assert server.requests_total == 3 * 5
        assert all(r.text is None and r.error == "HTTP 500" for r in replies)
        assert client.usage.failures == 3 and client.usage.retries == 12
        client.complete(_conversations(3), max_tokens=64)
        assert server.requests_total == 2 * 3 * 5  # nothing cached: a rerun asks again


def test_retry_after_headers():
    assert _retry_after({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert _retry_after({}) is None


def test_cache_survives_a_truncated_line_and_concurrent_writers(tmp_path):
    path = tmp_path / "cache.jsonl"
    writers = [ReplyCache(path) for _ in range(4)]
    reply = {"text": "x" * 2000, "top_logprobs": None, "prompt_tokens": 1, "completion_tokens": 1}
    threads = [
        threading.Thread(target=lambda w=w, i=i: [w.put("m", f"{i}-{j}", reply) for j in range(50)])
        for i, w in enumerate(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ReplyCache(path)) == 200
    with path.open("a") as f:
        f.write('{"model": "m", "key": "partial", "reply": {"te')  # a writer killed mid-line
    cache = ReplyCache(path)
    assert len(cache) == 200
    cache.put("m", "after", reply)
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["key"] == "after" and len(ReplyCache(path)) == 201


def test_api_key_is_sent_but_never_logged_or_written(tmp_path, monkeypatch, caplog, capfd):
    secret = "sk-test-" + "".join(random.Random().choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40))
    monkeypatch.setenv("REBEL_TEST_JUDGE_KEY", secret)
    caplog.set_level("DEBUG")
    with FaultyJudgeServer([tldr_gold_grader], faults=FaultPlan(rate_429=0.3), api_key=secret) as server:
        client = ChatClient(_endpoint(server, api_key_env="REBEL_TEST_JUDGE_KEY"), tmp_path / "cache.jsonl")
        assert all(r.text for r in client.complete(_conversations(10), max_tokens=64))
        monkeypatch.setenv("REBEL_TEST_JUDGE_KEY", secret[::-1])  # a wrong key: 401 stops the run in one line
        client = ChatClient(_endpoint(server, api_key_env="REBEL_TEST_JUDGE_KEY"), tmp_path / "other.jsonl")
        with pytest.raises(FatalEndpointError, match=r"HTTP 401 .*check the key in \$REBEL_TEST_JUDGE_KEY") as error:
            client.complete(_conversations(1), max_tokens=64)
    assert server.faults_injected["429"] > 0
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, str(error.value), *(p.read_text() for p in tmp_path.rglob("*") if p.is_file())):
        assert secret not in text and secret[::-1] not in text
