"""The loopback graders of the AlpacaEval and MT-Bench judge prompts, on hand-made prompts."""

import math

import pytest

from eval.chat_graders import alpaca_grader, alpaca_judgment, gold_rating, mt_bench_grader, mt_bench_judgment
from eval.judges import tldr_gold_grader
from eval.mt_bench import judge_messages, load_judge_prompts
from rebel import synthetic_tldr as task

QUESTION = task.format_prompt(
    "tifu",
    "my boss and my car",
    "my boss lost my car yesterday . i like pizza . my sister sold my phone again . "
    "now i feel sad . what should i do ?",
)
PERFECT = " boss lost car , sister sold phone"  # q = 1
PARTIAL = " so basically boss lost car"  # q = 0.5 - 2 * 0.15 = 0.2
INVENTED = " boss lost laptop"  # q = 0 - 0.6 = -0.6


def _alpaca_request(instruction: str, output_1: str, output_2: str) -> dict:
    """The request alpaca-eval sends for weighted_alpaca_eval_gpt4_turbo (its own template and ChatML split)."""
    from alpaca_eval import constants
    from alpaca_eval.utils import prompt_to_chatml

    template = (constants.EVALUATORS_CONFIG_DIR / "alpaca_eval_clf_gpt4_turbo" / "alpaca_eval_clf.txt").read_text()
    prompt = (
        template.replace("{instruction}", instruction).replace("{output_1}", output_1).replace("{output_2}", output_2)
    )
    return {
        "model": "gpt-4-1106-preview",
        "messages": prompt_to_chatml(prompt.strip()),
        "max_tokens": 1,
        "logprobs": True,
        "top_logprobs": 5,
    }


def test_gold_quality_of_the_hand_made_answers():
    assert task.gold_quality(QUESTION, PERFECT) == pytest.approx(1.0)
    assert task.gold_quality(QUESTION, PARTIAL) == pytest.approx(0.2)
    assert task.gold_quality(QUESTION, INVENTED) == pytest.approx(-0.6)


def test_alpaca_grader_answers_a_bradley_terry_probability():
    token, logprobs = alpaca_judgment(_alpaca_request(QUESTION, PERFECT, PARTIAL))
    p_m = 1 / (1 + math.exp(-(1.0 - 0.2) / 0.1))  # σ((q1 - q2) / τ), τ = 0.1
    assert token == "m"
    assert math.exp(logprobs[0]["m"]) == pytest.approx(p_m, rel=1e-9)
    assert math.exp(logprobs[0]["M"]) == pytest.approx(1 - p_m, rel=1e-6)
    token, logprobs = alpaca_judgment(_alpaca_request(QUESTION, INVENTED, PARTIAL))
    assert token == "M" and math.exp(logprobs[0]["M"]) == pytest.approx(1 / (1 + math.exp(-8.0)), rel=1e-9)


def test_alpaca_grader_equal_outputs_are_even_and_extreme_margins_stay_finite():
    _, logprobs = alpaca_judgment(_alpaca_request(QUESTION, PARTIAL, PARTIAL))
    assert logprobs[0]["m"] == pytest.approx(math.log(0.5)) and logprobs[0]["M"] == pytest.approx(math.log(0.5))
    garbage = " x y z , " * 200  # hundreds of garbled phrases: margin of thousands of units of τ
    _, logprobs = alpaca_judgment(_alpaca_request(QUESTION, PERFECT, garbage))
    assert math.isfinite(logprobs[0]["M"]) and logprobs[0]["m"] == pytest.approx(0.0)


def test_graders_decline_each_others_prompts():
    alpaca = _alpaca_request(QUESTION, PERFECT, PARTIAL)
    mt = {
        "messages": judge_messages(
            load_judge_prompts(),
            {"question_id": 81, "category": "writing", "turns": [QUESTION, QUESTION]},
            [PERFECT, PARTIAL],
            1,
        )
    }
    tldr = {"messages": [{"role": "user", "content": "Which of the following summaries does a better job?"}]}
    assert alpaca_grader(alpaca).text == "m" and mt_bench_grader(alpaca) is None
    assert "Rating: [[10]]" in mt_bench_grader(mt).text and alpaca_grader(mt) is None
    assert alpaca_grader(tldr) is None and mt_bench_grader(tldr) is None
    assert tldr_gold_grader(alpaca) is None and tldr_gold_grader(mt) is None


@pytest.mark.parametrize(
    "answer,rating",
    [
        (PERFECT, 10),  # q = 1
        (" boss lost car", 8),  # q = 0.5: 1 + 9 * 0.75 = 7.75
        (PARTIAL, 6),  # q = 0.2: 6.4
        (" i like pizza", 4),  # q = -0.3 (a distractor): 4.15
        (INVENTED, 3),  # q = -0.6: 2.8
        (" boss lost laptop , sister sold laptop", 1),  # q = -1.2, clipped
    ],
)
def test_rating_maps_gold_quality_to_one_to_ten(answer, rating):
    assert gold_rating(QUESTION, answer) == rating


def test_mt_bench_grader_rates_the_answer_of_the_judged_turn():
    prompts = load_judge_prompts()
    general = {"question_id": 81, "category": "writing", "turns": [QUESTION, QUESTION]}
    math_q = general | {"category": "math", "reference": [" reference one", " reference two"]}
    for question in (general, math_q):
        # turn 1 is rated on the first answer; turn 2 on the second, though the first is in the prompt too
        turn1 = mt_bench_judgment({"messages": judge_messages(prompts, question, [PERFECT, INVENTED], 1)})
        turn2 = mt_bench_judgment({"messages": judge_messages(prompts, question, [PERFECT, INVENTED], 2)})
        assert turn1.endswith("Rating: [[10]]") and turn2.endswith("Rating: [[3]]")


def test_mt_bench_grader_declines_a_question_without_post_facts():
    prompts = load_judge_prompts()
    question = {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]}
    assert mt_bench_judgment({"messages": judge_messages(prompts, question, ["roses", "red"], 1)}) is None
