"""AlpacaEval 2.0 through the alpaca-eval package, judged offline by the real loopback server."""

import json
import math
import random

import pytest
import yaml
from conftest import SMOKE
from fault_injection import FaultPlan  # faults=None: the plain server
from fault_injection import FaultyJudgeServer as LoopbackJudgeServer

from eval.alpaca import run_alpaca_eval
from eval.chat_graders import CHAT_GRADERS
from eval.judge_client import ChatClient, Endpoint
from rebel import synthetic_tldr as task
from rebel.config import validate
from rebel.errors import ConfigError


def _instructions(n=12, seed=0):
    """Hand-made AlpacaEval rows: synthetic posts, human references as the baseline, and model outputs
    that are perfect, identical to the reference (a tie, never sent to the judge) or invented."""
    rng = random.Random(seed)
    reference, model = [], []
    for i in range(n):
        post = task.make_post(rng)
        instruction = task.format_prompt(post.subreddit, post.title, post.body)
        human = task.human_summary(post, rng)
        output = [" " + " , ".join(" ".join(f) for f in post.facts), human, " brother sold guitar , i like music"][
            i % 3
        ]
        reference.append(
            {"instruction": instruction, "output": human, "generator": "human_reference", "dataset": "test"}
        )
        model.append({"instruction": instruction, "output": output, "generator": "m", "dataset": "test"})
    return model, reference


def _p_model_wins(model, reference):
    """P(model ≻ reference) of each example: σ((q_model − q_ref) / 0.1), ½ for identical outputs."""
    out = []
    for m, r in zip(model, reference):
        if m["output"] == r["output"]:
            out.append(0.5)
            continue
        margin = task.gold_quality(m["instruction"], m["output"]) - task.gold_quality(r["instruction"], r["output"])
        out.append(1 / (1 + math.exp(-margin / 0.1)))
    return out


def _evaluate(server, tmp_path, model, reference, max_retries=2):
    endpoint = Endpoint(
        base_url=server.base_url,
        model="embedded-gold",
        api_key_env="",
        max_retries=max_retries,
        backoff_s=0.01,
        backoff_max_s=0.05,
        timeout_s=10,
    )
    client = ChatClient(endpoint, tmp_path / "judge_cache.jsonl")
    return run_alpaca_eval(
        model,
        reference,
        client=client,
        judge_model="embedded-gold",
        length_control="length_controlled_minimal",
        out_dir=tmp_path / "m",
        name="m",
    )


def test_winrate_is_the_mean_judge_probability_and_a_rerun_makes_no_call(tmp_path):
    model, reference = _instructions()
    expected = _p_model_wins(model, reference)
    with LoopbackJudgeServer(list(CHAT_GRADERS)) as server:
        result = _evaluate(server, tmp_path, model, reference)
        calls = server.requests_total
        assert calls == sum(m["output"] != r["output"] for m, r in zip(model, reference)) >= 6
        assert result["winrate"] == pytest.approx(100 * sum(expected) / len(expected), rel=1e-6)
        assert result["judged"] == 12 and result["parse_failures"] == 0
        assert 0 <= result["lc_winrate"] <= 100
        rerun = _evaluate(server, tmp_path, model, reference)
        assert server.requests_total == calls and rerun["judge_usage"]["requests"] == 0
    # alpaca-eval's annotation cache stores preferences to 10 decimals
    assert {
        k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v for k, v in rerun.items() if k != "judge_usage"
    } == {k: v for k, v in result.items() if k != "judge_usage"}
    written = json.loads((tmp_path / "m" / "alpaca_eval.json").read_text())
    assert written["winrate"] == rerun["winrate"]


def test_failed_calls_are_counted_never_won_and_only_they_are_asked_again(tmp_path):
    model, reference = _instructions()
    # every first attempt of about half the requests fails with HTTP 500 and the client does not retry
    faults = FaultPlan(seed=3, rate_500=0.5, max_faults_per_request=1)
    with LoopbackJudgeServer(list(CHAT_GRADERS), faults=faults) as server:
        first = _evaluate(server, tmp_path, model, reference, max_retries=0)
        failed = server.faults_injected["500"]
        assert 0 < failed < 8
        assert first["parse_failures"] == failed and first["judged"] == 12 - failed
        assert first["judge_usage"]["failures"] == failed
        rerun = _evaluate(server, tmp_path, model, reference, max_retries=0)
        assert rerun["judge_usage"]["requests"] == failed  # only the missing judgments
        assert rerun["parse_failures"] == 0
    expected = _p_model_wins(model, reference)
    assert rerun["winrate"] == pytest.approx(100 * sum(expected) / len(expected), rel=1e-6)


def test_malformed_replies_are_counted_and_excluded(tmp_path):
    model, reference = _instructions()
    with LoopbackJudgeServer(list(CHAT_GRADERS), faults=FaultPlan(seed=1, rate_malformed=0.4)) as server:
        result = _evaluate(server, tmp_path, model, reference)
        malformed = server.faults_injected["malformed"]
    assert 0 < malformed < 8 and result["parse_failures"] == malformed
    annotations = json.loads((tmp_path / "m" / "annotations.json").read_text())
    judged = [a for a in annotations if a["preference"] is not None and not math.isnan(a["preference"])]
    assert len(judged) == result["judged"] == 12 - malformed
    p = {m["instruction"]: w for m, w in zip(model, _p_model_wins(model, reference))}
    assert result["winrate"] == pytest.approx(100 * sum(p[a["instruction"]] for a in judged) / len(judged), rel=1e-6)


@pytest.mark.parametrize(
    "key,value,message",
    [
        (("alpaca", "length_control"), "lc", "chat_eval.alpaca.length_control"),
        (("judge", "type"), "gpt4", "chat_eval.judge.type"),
        (("judge", "api_key_env"), "sk-live-123", "chat_eval.judge.api_key_env"),
        (("mt_bench", "n_per_category"), 0, "chat_eval.mt_bench.n_per_category"),
    ],
)
def test_bad_chat_config_is_a_one_line_error(key, value, message):
    config = yaml.safe_load(SMOKE.read_text())
    config["chat_eval"][key[0]][key[1]] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as error:
        validate(config)
    assert "\n" not in str(error.value)


def test_too_many_instructions_is_a_one_line_cli_error(tmp_path, capsys):
    from rebel.cli import main
    from rebel.data import write_jsonl

    config = yaml.safe_load(SMOKE.read_text())
    config["chat_eval"]["alpaca"]["n_instructions"] = 999
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    rng = random.Random(0)
    posts = [task.make_post(rng) for _ in range(3)]
    write_jsonl(
        tmp_path / "data" / "test.jsonl",
        (
            {"id": f"test-{i}", "subreddit": p.subreddit, "title": p.title, "post": p.body, "reference": " x"}
            for i, p in enumerate(posts)
        ),
    )
    assert (
        main(
            [
                "chat-sets",
                "--config",
                str(tmp_path / "c.yaml"),
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(tmp_path / "chat"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == "error: chat_eval.alpaca.n_instructions = 999 exceeds the 3 test prompts"
