"""Arena-Hard v0.1: the verdict parser, the prompt, the Bradley–Terry score (by hand and against scikit-learn's
logistic regression, arena-hard-auto's solver), the file formats, the loopback grader, and the judging
through the loopback server end to end."""

import json
import math
import random

import numpy as np
import pytest

from eval.arena_hard import (
    CONTINUE_PROMPT,
    PROMPT_TEMPLATE,
    SYSTEM_PROMPT,
    bradley_terry,
    embedded_set,
    judge_messages,
    load_answers,
    load_questions,
    parse_verdict,
    run_arena_hard,
    write_set,
)
from eval.chat_graders import (
    CHAT_GRADERS,
    alpaca_grader,
    arena_hard_grader,
    arena_hard_verdict,
    mt_bench_grader,
)
from eval.judge_client import ChatClient, Endpoint
from eval.judge_prompts import TLDR_JUDGE_PROMPT
from eval.judge_server import GraderReply, LoopbackJudgeServer, Response
from eval.judges import tldr_gold_grader
from rebel import synthetic_tldr as task
from rebel.errors import HarnessError

QUESTION = task.format_prompt(
    "tifu",
    "my boss and my car",
    "my boss lost my car yesterday . i like pizza . my sister sold my phone again . "
    "now i feel sad . what should i do ?",
)
PERFECT = " boss lost car , sister sold phone"  # q = 1
HALF = " boss lost car"  # q = 0.5
PARTIAL = " so basically boss lost car"  # q = 0.2


@pytest.mark.parametrize(
    "judgment,verdict",
    [
        ("My final verdict is: Assistant A is significantly better: [[A>>B]].", "A>>B"),
        ("Assistant B is slightly better: [[B>A]]", "B>A"),
        ('My final verdict is tie: [[A=B]]".', "A=B"),
        ("first [[B>>A]], on reflection still [[B>>A]]", "B>>A"),  # one distinct match
        ("[[A>B]] ... no, [[B>A]]", None),  # two different verdicts
        ("Assistant A is better.", None),
        ("Rating: [[7]]", None),  # not the verdict pattern
        ("[[A>>>B]]", None),  # matches the pattern, not a label: no battle
        ("", None),
        (None, None),  # no reply
    ],
)
def test_verdict_parser(judgment, verdict):
    assert parse_verdict(judgment) == verdict


def test_judge_messages_are_arena_hard_autos():
    system, user = judge_messages("Q {x}", "first\nanswer", "second")
    assert system == {"role": "system", "content": SYSTEM_PROMPT} and user["role"] == "user"
    assert user["content"] == (
        "<|User Prompt|>\nQ {x}\n\n<|The Start of Assistant A's Answer|>\nfirst\nanswer\n"
        "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\nsecond\n"
        "<|The End of Assistant B's Answer|>"
    )
    assert SYSTEM_PROMPT.startswith("Please act as an impartial judge and evaluate the quality of the responses")
    assert SYSTEM_PROMPT.endswith(
        '5. Assistant B is significantly better: [[B>>A]]\n\nExample output: "My final verdict is tie: [[A=B]]".'
    )
    assert PROMPT_TEMPLATE.count("{") == 3


def _games(verdicts: list[tuple[str | None, str | None]]) -> list[dict]:
    return [
        {"question_id": f"q{i}", "game": game, "verdict": v}
        for i, pair in enumerate(verdicts)
        for game, v in zip((1, 2), pair)
    ]


# model's battles: q0 3 + 3 wins; q1 a loss and a tie; q2 a tie and a parse failure (none); q3 3 + 1 losses
HAND = _games([("B>>A", "A>>B"), ("A>B", "A=B"), ("A=B", None), ("A>>B", "B>A")])
HAND_WINRATE = 100 * (6 + 2 / 2) / 13  # 6 wins, 2 ties, 5 losses: the Bradley–Terry MLE vs the baseline


def test_bradley_terry_by_hand_anchored_and_seeded():
    scores = bradley_terry({"m": HAND, "ties": _games([("A=B", "A=B")]), "winner": _games([("B>A", "A>B")])})
    assert scores["baseline"] == {"score": 50.0, "ci_low": 50.0, "ci_high": 50.0}
    assert scores["m"]["score"] == pytest.approx(HAND_WINRATE, abs=1e-9)
    assert scores["ties"]["score"] == pytest.approx(50.0, abs=1e-9)
    assert scores["winner"]["score"] == pytest.approx(100.0, abs=1e-6)  # no finite MLE: the fit stops near 100 %
    m = scores["m"]
    assert m["ci_low"] < m["score"] < m["ci_high"]
    assert bradley_terry({"m": HAND}, seed=3)["m"] == bradley_terry({"m": HAND}, seed=3)["m"]
    assert bradley_terry({"m": HAND}, seed=3)["m"]["ci_low"] != bradley_terry({"m": HAND}, seed=4)["m"]["ci_low"]
    assert math.isnan(bradley_terry({"m": HAND, "silent": _games([(None, None)])})["silent"]["score"])
    with pytest.raises(HarnessError, match="named like the baseline"):
        bradley_terry({"baseline": HAND})


def test_bradley_terry_matches_arena_hard_autos_logistic_regression():
    """arena-hard-auto's compute_mle_elo (show_result.py / utils_math.py): battles repeated by weight, every
    battle twice, a tie one win each way, ±log(10) columns, Elo = 400 · coef + 1000 anchored at the baseline."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = random.Random(0)
    labels = ["A>>B", "A>B", "A=B", "B>A", "B>>A", None]
    models = {
        name: _games([tuple(rng.choices(labels, weights=w, k=2)) for _ in range(60)])
        for name, w in (("strong", [1, 2, 3, 6, 8, 1]), ("weak", [8, 6, 3, 2, 1, 1]))
    }
    names = ["baseline", *models]
    battles = []  # (model_b, winner) with model_a = baseline, as arena-hard-auto's get_battles_from_judgment
    for name, games in models.items():
        for g in games:
            if g["verdict"] is None:
                continue
            a_wins = g["verdict"].startswith("A") == (g["game"] == 1)  # game 1: A is the baseline
            winner = "tie" if g["verdict"] == "A=B" else ("model_a" if a_wins else "model_b")
            battles += [(name, winner)] * (3 if ">>" in g["verdict"] else 1)
    rows = battles + battles
    x = np.zeros((len(rows), len(names)))
    x[:, 0] = math.log(10)
    x[np.arange(len(rows)), [names.index(b) for b, _ in rows]] = -math.log(10)
    y = np.array([w == "model_a" or (w == "tie" and i < len(battles)) for i, (_, w) in enumerate(rows)], float)
    coef = linear_model.LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8).fit(x, y).coef_[0]
    elo = 400 * coef + 1000
    elo += 1000 - elo[0]
    scores = bradley_terry(models, bootstrap_rounds=2)
    for i, name in enumerate(names):
        assert scores[name]["score"] == pytest.approx(100 / (1 + 10 ** ((elo[0] - elo[i]) / 400)), abs=1e-4)


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_loaders_read_arena_hard_autos_formats_and_name_bad_files(tmp_path):
    question = {"question_id": "abc", "category": "arena-hard-v0.1", "cluster": "c", "turns": [{"content": "Hi?"}]}
    answer = {
        "question_id": "abc",
        "answer_id": "x",
        "model_id": "gpt-4-0314",
        "choices": [{"index": 0, "turns": [{"content": "Hello.", "token_len": 2}]}],
        "tstamp": 1.0,
    }
    _write(tmp_path / "question.jsonl", [question, ""])
    _write(tmp_path / "gpt-4-0314.jsonl", [answer])
    assert load_questions(tmp_path / "question.jsonl") == [question]
    assert load_answers(tmp_path / "gpt-4-0314.jsonl") == {"abc": "Hello."}
    with pytest.raises(HarnessError, match="question file '.*missing.jsonl' not found"):
        load_questions(tmp_path / "missing.jsonl")
    _write(tmp_path / "bad.jsonl", [question, {"question_id": "def", "turns": []}])
    with pytest.raises(HarnessError, match=r"bad.jsonl:2: expected a question row"):
        load_questions(tmp_path / "bad.jsonl")
    _write(tmp_path / "bad.jsonl", [question, question])  # a repeated id
    with pytest.raises(HarnessError, match=r"bad.jsonl:2: expected a question row with a new question_id"):
        load_questions(tmp_path / "bad.jsonl")
    _write(tmp_path / "bad.jsonl", [answer | {"choices": [{"index": 0}]}])
    with pytest.raises(HarnessError, match=r"bad.jsonl:1: expected an answer row"):
        load_answers(tmp_path / "bad.jsonl")
    _write(tmp_path / "bad.jsonl", ['{"question_id": '])
    with pytest.raises(HarnessError, match=r"bad.jsonl:1: not a JSON line"):
        load_answers(tmp_path / "bad.jsonl")


def _rows(n: int) -> list[dict]:
    """Embedded chat rows: a post with two facts; the reference names one of them (q = 0.5)."""
    rows = []
    for i in range(n):
        (s1, s2), (o1, o2) = task.SUBJECTS[i : i + 8 : 4][:2], task.OBJECTS[i : i + 8 : 4][:2]
        post = f"my {s1} lost my {o1} yesterday . i like pizza . my {s2} sold my {o2} again . now i feel sad ."
        prompt = "Summarize this post.\n\n" + task.format_prompt("tifu", f"my {s1} and my {o1}", post)
        rows.append(
            {
                "id": f"test-{i}",
                "messages": [{"role": "system", "content": "Summarize."}, {"role": "user", "content": prompt}],
                "reference": f" {s1} lost {o1}",
                "better": f" {s1} lost {o1} , {s2} sold {o2}",  # q = 1
                "other": f" {s2} sold {o2}",  # q = 0.5, the other fact
                "worse": f" basically {s1} lost {o1}",  # q = 0.35
            }
        )
    return rows


def test_embedded_set_is_seeded_and_round_trips_through_the_files(tmp_path):
    rows = _rows(6)
    questions, baseline = embedded_set(rows, 3, seed=1)
    assert (questions, baseline) == embedded_set(rows, 3, seed=1) and questions != embedded_set(rows, 3, seed=2)[0]
    by_id = {r["id"]: r for r in rows}
    for q, b in zip(questions, baseline):
        assert q["turns"] == [{"content": by_id[q["question_id"]]["messages"][-1]["content"]}]
        assert b["question_id"] == q["question_id"] and b["model_id"] == "human_reference"
        assert b["choices"][0]["turns"][0]["content"] == by_id[q["question_id"]]["reference"]
    write_set(questions, baseline, tmp_path)
    assert load_questions(tmp_path / "arena_hard_questions.jsonl") == questions
    assert load_answers(tmp_path / "arena_hard_baseline.jsonl") == {
        q["question_id"]: by_id[q["question_id"]]["reference"] for q in questions
    }
    with pytest.raises(HarnessError, match="7 questions asked for"):
        embedded_set(rows, 7, seed=1)


@pytest.mark.parametrize(
    "difference,verdict",
    [(0.8, "A>>B"), (0.5, "A>>B"), (0.49, "A>B"), (0.6 - 0.5, "A>B"), (0.09, "A=B"), (0.0, "A=B"), (-0.1, "B>A")]
    + [(-0.3, "B>A"), (-0.5, "B>>A")],
)
def test_grader_thresholds(difference, verdict):
    assert arena_hard_verdict(difference) == verdict


def test_arena_hard_grader_judges_gold_quality_and_graders_decline_each_others_prompts():
    ah = {"messages": judge_messages(QUESTION, PERFECT, PARTIAL)}
    reply = arena_hard_grader(ah).text
    assert reply.endswith("My final verdict is: [[A>>B]]") and parse_verdict(reply) == "A>>B"
    assert parse_verdict(arena_hard_grader({"messages": judge_messages(QUESTION, PARTIAL, HALF)}).text) == "B>A"
    assert parse_verdict(arena_hard_grader({"messages": judge_messages(QUESTION, HALF, HALF)}).text) == "A=B"
    follow_up = ah["messages"] + [
        {"role": "assistant", "content": "Hmm."},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    assert arena_hard_grader({"messages": follow_up}).text == reply
    assert arena_hard_grader({"messages": judge_messages("Write a poem.", "roses", "violets")}) is None
    mt = {  # FastChat's single-v1 layout (the MT-Bench grader's format)
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": f"[Instruction]\nRate it.\n\n[Question]\n{QUESTION}\n\n[The Start of Assistant's Answer]\n"
                f"{PERFECT}\n[The End of Assistant's Answer]",
            },
        ]
    }
    tldr = {
        "messages": [{"role": "user", "content": TLDR_JUDGE_PROMPT.format(post=QUESTION, summary_a="a", summary_b="b")}]
    }
    assert mt_bench_grader(mt).text.endswith("[[10]]") and tldr_gold_grader(tldr) is not None
    assert arena_hard_grader(mt) is None and arena_hard_grader(tldr) is None
    assert alpaca_grader(ah) is None and mt_bench_grader(ah) is None and tldr_gold_grader(ah) is None


def _client(server: LoopbackJudgeServer, cache) -> ChatClient:
    endpoint = Endpoint(
        server.base_url, "gpt-4-1106-preview", "", timeout_s=5, max_retries=0, backoff_s=0.01, backoff_max_s=0.01
    )
    return ChatClient(endpoint, cache)


def test_run_arena_hard_through_the_loopback_server(tmp_path):
    rows = _rows(5)
    questions, baseline_rows = embedded_set(rows, 4, seed=0)
    baseline = {b["question_id"]: b["choices"][0]["turns"][0]["content"] for b in baseline_rows}
    by_id = {r["id"]: r for r in rows}
    kinds = dict(zip([q["question_id"] for q in questions], ("better", "empty", "other", "worse")))
    answers = {qid: "" if kind == "empty" else by_id[qid][kind] for qid, kind in kinds.items()}
    expected = {  # (game 1: A = baseline, game 2: A = the model)
        "better": ("B>>A", "A>>B"),  # 1 vs 0.5
        "empty": ("A>>B", "B>>A"),  # 0 vs 0.5
        "other": ("A=B", "A=B"),  # 0.5 vs 0.5
        "worse": ("A>B", "B>A"),  # 0.35 vs 0.5
    }
    cache = tmp_path / "cache.jsonl"
    with LoopbackJudgeServer(list(CHAT_GRADERS)) as server:
        kwargs = dict(judge_model="gpt-4-1106-preview", judge_max_tokens=4096, out_dir=tmp_path / "out", name="m")
        result = run_arena_hard(questions, answers, baseline, client=_client(server, cache), **kwargs)
        calls = server.requests_total
        rerun = run_arena_hard(questions, answers, baseline, client=_client(server, cache), **kwargs)
        assert server.requests_total == calls == 8
    assert [(g["question_id"], g["game"]) for g in result["games"]] == [
        (q["question_id"], t) for q in questions for t in (1, 2)
    ]
    for g in result["games"]:
        assert g["verdict"] == expected[kinds[g["question_id"]]][g["game"] - 1]
    assert result["winrate"] == pytest.approx(100 * (6 + 1) / 16)  # 3 + 3 wins, 2 ties, 3 + 3 + 1 + 1 losses
    assert result["parse_failures"] == 0 and result["n_questions"] == 4 and result["name"] == "m"
    assert result["judge_usage"]["requests"] == 8 and result["judge_usage"]["cache_hits"] == 0
    assert rerun["judge_usage"]["requests"] == 0 and rerun["judge_usage"]["cache_hits"] == 8
    assert {k: v for k, v in rerun.items() if k != "judge_usage"} == {
        k: v for k, v in result.items() if k != "judge_usage"
    }
    assert json.loads((tmp_path / "out" / "arena_hard.json").read_text()) == rerun
    lines = [json.loads(line) for line in (tmp_path / "out" / "arena_hard_judgments.jsonl").read_text().splitlines()]
    assert [(j["question_id"], j["game"], j["verdict"]) for j in lines] == [
        (g["question_id"], g["game"], g["verdict"]) for g in result["games"]
    ]
    assert all(j["judgment"].endswith(f"[[{j['verdict']}]]") for j in lines)
    assert bradley_terry({"m": result["games"]})["m"]["score"] == pytest.approx(result["winrate"], abs=1e-9)


def test_a_judgment_without_verdict_is_continued_and_failures_are_counted(tmp_path):
    """arena-hard-auto asks once more when a judgment has no [[...]]; two different verdicts or a failed call
    are parse failures (no battle, no second attempt)."""
    questions, baseline_rows = embedded_set(_rows(3), 3, seed=0)
    ids = [q["question_id"] for q in questions]
    answers = dict(zip(ids, ("undecided", "conflicted", "unlucky")))
    baseline = {b["question_id"]: b["choices"][0]["turns"][0]["content"] for b in baseline_rows}

    def grader(request: dict) -> GraderReply:
        user = request["messages"][1]["content"]
        if len(request["messages"]) == 4:
            return GraderReply("Having thought again: [[A=B]]")
        return GraderReply("[[A>B]] or rather [[B>A]]" if "conflicted" in user else "Both answers have merit.")

    def intercept(exchange, answer):
        if "unlucky" in exchange.request["messages"][1]["content"]:
            return Response.error(500, "overloaded", "server_error")
        return answer()

    with LoopbackJudgeServer([grader], intercept=intercept) as server:
        result = run_arena_hard(
            questions,
            answers,
            baseline,
            client=_client(server, tmp_path / "cache.jsonl"),
            judge_model="gpt-4-1106-preview",
            judge_max_tokens=4096,
            out_dir=tmp_path,
            name="m",
        )
    assert [g["verdict"] for g in result["games"]] == ["A=B", "A=B", None, None, None, None]
    assert result["parse_failures"] == 4 and result["winrate"] == 50.0
    assert result["judge_usage"]["requests"] == 8 and result["judge_usage"]["failures"] == 2  # 6 games + 2 follow-ups
    lines = [json.loads(line) for line in (tmp_path / "arena_hard_judgments.jsonl").read_text().splitlines()]
    assert lines[0]["judgment"] == "Both answers have merit.\nHaving thought again: [[A=B]]"
    assert lines[4]["judgment"] is None and lines[4]["error"] == "HTTP 500"
    with pytest.raises(HarnessError, match="1 question.* without a model or baseline answer"):
        run_arena_hard(
            questions,
            {ids[0]: "x", ids[1]: "y"},
            baseline,
            client=None,
            judge_model="j",
            judge_max_tokens=1,
            out_dir=tmp_path,
            name="m",
        )
