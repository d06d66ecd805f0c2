"""MT-Bench: FastChat's constants, rating parser, prompt selection and conversation templates, aggregation,
the embedded question set, and the offline path end to end (smoke checkpoint, loopback server, Table 2 and
Figure 7)."""

import json

import pandas as pd
import pytest
import yaml

from eval import mt_bench
from eval.chat_data import MT_BENCH_CATEGORIES, embedded_questions
from eval.mt_bench import (
    answer_temperature,
    fastchat_prompt,
    judge_messages,
    load_judge_prompts,
    parse_rating,
    prompt_name,
    summarize,
)
from rebel.errors import HarnessError


def test_constants_are_fastchats_own():
    """NEED_REF_CATS, the answer temperatures and the rating patterns are the installed FastChat's objects,
    not copies; the judge prompts are read by FastChat's loader."""
    from fastchat.llm_judge import common

    for name in ("NEED_REF_CATS", "temperature_config", "one_score_pattern", "one_score_pattern_backup"):
        assert getattr(mt_bench, name) is getattr(common, name)
    assert {"math", "reasoning", "coding"} <= set(mt_bench.NEED_REF_CATS)
    assert set(MT_BENCH_CATEGORIES) <= set(common.temperature_config)
    assert load_judge_prompts() == common.load_judge_prompts(str(mt_bench.JUDGE_PROMPTS))
    with pytest.raises(AttributeError, match="no attribute 'two_score_pattern'"):
        mt_bench.two_score_pattern  # noqa: B018 - only the names taken from FastChat resolve


@pytest.mark.parametrize(
    "category,temperature",
    [("writing", 0.7), ("roleplay", 0.7), ("math", 0.0), ("coding", 0.0), ("stem", 0.1), ("humanities", 0.1)],
)
def test_answer_temperatures_are_fastchats(category, temperature):
    assert answer_temperature(category) == temperature


def test_a_category_without_temperature_gets_fastchats_default():
    assert answer_temperature("not-an-mt-bench-category") == 0.7


def test_fastchat_prompt_is_the_conversation_templates():
    assert fastchat_prompt("openchat_3.5", ["Hi"], []) == "GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant:"
    second = fastchat_prompt("openchat_3.5", ["Hi", "And again?"], ["Hello there."])
    assert second == (
        "GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant: Hello there.<|end_of_turn|>"
        "GPT4 Correct User: And again?<|end_of_turn|>GPT4 Correct Assistant:"
    )
    assert "Hello there." in fastchat_prompt("vicuna_v1.1", ["Hi", "And again?"], ["Hello there."])
    with pytest.raises(ValueError, match="no turn left to answer"):
        fastchat_prompt("openchat_3.5", ["Hi"], ["Hello there."])
    with pytest.raises(HarnessError, match="no conversation template 'no-such-template'"):
        fastchat_prompt("no-such-template", ["Hi"], [])


@pytest.mark.parametrize(
    "judgment,rating",
    [
        ("The answer is fine. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("I would give it [6] out of 10", 6.0),  # FastChat's single-bracket fallback
        ("first [[4]] then [[9]]", 4.0),  # the first match
        ("[[2]] beats the fallback [9]", 2.0),
        ("Rating: 7/10", -1),
        ("Rating: [[seven]]", -1),
        ("", -1),
        (None, -1),
    ],
)
def test_rating_parser_is_fastchats(judgment, rating):
    assert parse_rating(judgment) == rating


@pytest.mark.parametrize(
    "category,turn,name",
    [
        ("writing", 1, "single-v1"),
        ("writing", 2, "single-v1-multi-turn"),
        ("humanities", 2, "single-v1-multi-turn"),
        ("extraction", 1, "single-v1"),
        ("math", 1, "single-math-v1"),
        ("reasoning", 2, "single-math-v1-multi-turn"),
        ("coding", 1, "single-math-v1"),
        ("coding", 2, "single-math-v1-multi-turn"),
    ],
)
def test_prompt_selection_by_category_and_turn(category, turn, name):
    assert prompt_name(category, turn) == name


def test_judge_prompts_are_fastchats_verbatim():
    prompts = load_judge_prompts()
    assert sorted(prompts) == ["single-math-v1", "single-math-v1-multi-turn", "single-v1", "single-v1-multi-turn"]
    # FastChat's own typo ("You evaluation") shows the text was copied, not retyped
    assert (
        "You evaluation should focus on the assistant's answer to the second user question"
        in prompts["single-v1-multi-turn"]["system_prompt"]
    )
    assert prompts["single-v1"]["prompt_template"].endswith("[The End of Assistant's Answer]")


def test_judge_messages_fill_turns_and_references():
    prompts = load_judge_prompts()
    q = {"question_id": 111, "category": "math", "turns": ["Q one", "Q two"], "reference": ["R one", "R two"]}
    system, user = judge_messages(prompts, q, ["A one", "A two"], 2)
    assert system["role"] == "system" and "reference answer" in system["content"]
    assert all(s in user["content"] for s in ("Q one", "Q two", "R one", "R two", "A one", "A two"))
    _, user1 = judge_messages(prompts, q, ["A one", "A two"], 1)
    assert "R one" in user1["content"] and "R two" not in user1["content"] and "A two" not in user1["content"]
    general = {"question_id": 81, "category": "writing", "turns": ["Q one", "Q two"]}
    _, user_general = judge_messages(prompts, general, ["A one", "A two"], 1)
    assert user_general["content"].startswith("[Instruction]") and "Reference" not in user_general["content"]
    with pytest.raises(HarnessError, match="question 111 .math. has no reference answer"):
        judge_messages(prompts, {k: v for k, v in q.items() if k != "reference"}, ["A one", "A two"], 1)


def test_summary_excludes_unparseable_ratings_and_counts_them():
    judgments = [
        {"category": "writing", "turn": 1, "score": 8.0},
        {"category": "writing", "turn": 2, "score": -1},
        {"category": "math", "turn": 1, "score": 2.0},
        {"category": "math", "turn": 2, "score": 5.0},
    ]
    summary = summarize(judgments)
    assert summary["score"] == pytest.approx(5.0) and summary["parse_failures"] == 1 and summary["judged"] == 3
    assert summary["turn_1"] == pytest.approx(5.0) and summary["turn_2"] == pytest.approx(5.0)
    assert summary["categories"]["writing"] == 8.0 and summary["categories"]["math"] == pytest.approx(3.5)
    assert summary["categories"]["coding"] != summary["categories"]["coding"]  # NaN: no judgment


def test_embedded_questions_are_deterministic_two_turn_and_labelled():
    rows = [
        {
            "id": f"test-{i}",
            "subreddit": "tifu",
            "title": f"t{i}",
            "post": f"my boss lost my car . {i} .",
            "reference": f" ref {i}",
        }
        for i in range(10)
    ]
    questions = embedded_questions(rows, 2, seed=3)
    assert questions == embedded_questions(rows, 2, seed=3) and questions != embedded_questions(rows, 2, seed=4)
    assert [q["question_id"] for q in questions] == list(range(81, 97))
    assert [q["category"] for q in questions] == [c for c in MT_BENCH_CATEGORIES for _ in range(2)]
    for q in questions:
        assert len(q["turns"]) == 2 and q["turns"][0] != q["turns"][1]
        assert ("reference" in q) == (q["category"] in ("math", "reasoning", "coding"))
    first_ten = [r["id"] for q in questions[:5] for r in q["rows"]]
    assert sorted(first_ten) == sorted(r["id"] for r in rows)  # no post repeats while the split lasts


def _write_policy(folder, seed, winrate, mt_score, leaderboard=None):
    chat = folder / f"seed{seed}" / "chat"
    chat.mkdir(parents=True)
    usage = {
        "requests": 3,
        "cache_hits": 1,
        "retries": 0,
        "failures": 0,
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "cost_usd": 0.5,
    }
    (chat / "alpaca_eval.json").write_text(
        json.dumps({"winrate": winrate, "lc_winrate": winrate + 1, "parse_failures": 1, "judge_usage": usage})
    )
    (chat / "mt_bench.json").write_text(
        json.dumps(
            {
                "score": mt_score,
                "parse_failures": 0,
                "judge_usage": usage,
                "categories": {c: mt_score + i / 10 for i, c in enumerate(MT_BENCH_CATEGORIES)},
            }
        )
    )
    if leaderboard is not None:
        tasks = {
            t: {"value": leaderboard + i}
            for i, t in enumerate(("mmlu", "gsm8k", "arc", "winogrande", "truthfulqa", "hellaswag"))
        }
        (folder / f"seed{seed}" / "leaderboard.json").write_text(json.dumps({"tasks": tasks, "average": 99.0}))


def test_table2_reads_every_number_from_the_files_and_shows_paper_numbers(tmp_path):
    from eval.table2 import write_table2

    for seed, (w, m) in zip((1, 2), ((10.0, 4.0), (20.0, 6.0))):
        _write_policy(tmp_path / "sft", seed, w, m, leaderboard=50.0)
        _write_policy(tmp_path / "rebel", seed, w + 30, m + 2)
    cfg = {
        "name": "t",
        "model_size": "7b",
        "algorithms": ["rebel"],
        "seeds": [1, 2],
        "paper_setting": {"setting": "chat-nectar", "model_size": "7b"},
    }
    out = tmp_path / "out"
    write_table2(cfg, tmp_path, out / "table2.csv", out / "table2.md", out / "mt_bench.csv", out / "fig7.png")
    table = pd.read_csv(out / "table2.csv").set_index("algorithm")
    assert table.loc["Base", "alpacaeval2_winrate"] == 15.0 and table.loc["REBEL", "alpacaeval2_winrate"] == 45.0
    assert table.loc["Base", "alpacaeval2_winrate_std"] == pytest.approx(50**0.5)  # std (ddof=1) of 10, 20
    assert table.loc["REBEL", "alpacaeval2_lc_winrate"] == 46.0 and table.loc["REBEL", "mt_bench"] == 7.0
    assert table.loc["Base", "gsm8k"] == 51.0 and table.loc["Base", "average"] == 99.0
    assert pd.isna(table.loc["REBEL", "mmlu"]) and pd.isna(table.loc["REBEL", "average"])  # no leaderboard.json
    assert table.loc["Base", "judge_requests"] == 12 and table.loc["Base", "alpaca_parse_failures"] == 2
    assert table.loc["Base", "paper_mt_bench"] == 7.69 and table.loc["REBEL", "paper_alpacaeval2_lc_winrate"] == 17.3
    categories = pd.read_csv(out / "mt_bench.csv").set_index("algorithm")
    assert categories.loc["REBEL", "math"] == pytest.approx(7.3) and categories.loc["Base", "overall"] == 5.0
    assert (out / "fig7.png").stat().st_size > 10_000 and (out / "fig7.pdf").is_file()
    assert "| 7b | REBEL | 2 | 46.00 (7.07) | 45.00 (7.07) | 7.00 (1.41) |" in (out / "table2.md").read_text()


@pytest.mark.slow
def test_chat_path_offline_end_to_end(smoke_run):
    """Both evaluators on the smoke checkpoints through the real loopback server, the TL;DR policies' chat table and
    its radar chart; a rerun makes zero calls."""
    from rebel.cli import main

    run = smoke_run / "results" / "smoke"
    config = run / "config.yaml"
    assert main(["chat-sets", "--config", str(config), "--data", str(run / "data"), "--out", str(run / "chat")]) == 0
    for algorithm in ("sft", "rebel"):
        policy = run / "sft" / "model.json" if algorithm == "sft" else run / "rebel" / "seed1" / "policy" / "model.json"
        args = [
            "chat-eval",
            "--config",
            str(config),
            "--data",
            str(run / "data"),
            "--sets",
            str(run / "chat"),
            "--policy",
            str(policy),
            "--seed",
            "1",
            "--name",
            f"{algorithm}_seed1",
            "--out",
            str(run / algorithm / "seed1" / "chat"),
        ]
        assert main(args) == 0
        first = {
            e: json.loads((run / algorithm / "seed1" / "chat" / f"{e}.json").read_text())
            for e in ("alpaca_eval", "mt_bench")
        }
        assert first["alpaca_eval"]["judge_usage"]["requests"] > 0
        assert first["mt_bench"]["judge_usage"]["requests"] == 32 and first["mt_bench"]["judged"] == 32
        assert main(args) == 0  # rerun: everything from the caches
        second = {
            e: json.loads((run / algorithm / "seed1" / "chat" / f"{e}.json").read_text())
            for e in ("alpaca_eval", "mt_bench")
        }
        assert second["alpaca_eval"]["judge_usage"]["requests"] == 0
        assert second["mt_bench"]["judge_usage"]["requests"] == 0
        assert second["mt_bench"]["judge_usage"]["cache_hits"] == 32
        for e in ("alpaca_eval", "mt_bench"):  # alpaca-eval's cache stores preferences to 10 decimals
            assert {
                k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v
                for k, v in second[e].items()
                if k != "judge_usage"
            } == {k: v for k, v in first[e].items() if k != "judge_usage"}
    # Table 2 for the two evaluated policies (config variant with one algorithm)
    smoke_cfg = smoke_run / "two_policies.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["algorithms"], cfg["algorithm_params"], cfg["policy_overrides"] = ["rebel"], {"rebel": {"eta": 1.0}}, {}
    cfg["figures"] = {"fig5": ["rebel"]}
    smoke_cfg.write_text(yaml.safe_dump(cfg))
    tables = smoke_run / "chat_tables"
    assert (
        main(
            [
                "tldr-chat",
                "--config",
                str(smoke_cfg),
                "--results",
                str(run),
                "--csv",
                str(tables / "table2.csv"),
                "--md",
                str(tables / "table2.md"),
                "--mt-bench-csv",
                str(tables / "mt_bench.csv"),
                "--png",
                str(tables / "fig7.png"),
            ]
        )
        == 0
    )
    table = pd.read_csv(tables / "table2.csv").set_index("algorithm")
    assert list(table.index) == ["Base", "REBEL"]
    for label, folder in (("Base", "sft"), ("REBEL", "rebel")):
        alpaca = json.loads((run / folder / "seed1" / "chat" / "alpaca_eval.json").read_text())
        mt = json.loads((run / folder / "seed1" / "chat" / "mt_bench.json").read_text())
        assert table.loc[label, "alpacaeval2_winrate"] == pytest.approx(alpaca["winrate"])
        assert table.loc[label, "alpacaeval2_lc_winrate"] == pytest.approx(alpaca["lc_winrate"])
        assert table.loc[label, "mt_bench"] == pytest.approx(mt["score"])
        assert 1 <= mt["score"] <= 10
    categories = pd.read_csv(tables / "mt_bench.csv").set_index("algorithm")
    assert list(categories.columns) == [*MT_BENCH_CATEGORIES, "overall"]
    assert (tables / "fig7.png").stat().st_size > 10_000 and (tables / "fig7.pdf").is_file()
    assert "| Base |" in (tables / "table2.md").read_text()
