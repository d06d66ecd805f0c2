"""Arena-Hard v0.1 (paper Table 3, column "AH"): pairwise GPT-4 judging against a baseline, Bradley–Terry score.

Follows lm-sys/arena-hard-auto (commit efc012e192b88024a5203f5a28ec8fc0342946df; files
``config/judge_config.yaml``, ``gen_judgment.py``, ``show_result.py``, ``utils_math.py``) with our
:class:`~eval.judge_client.ChatClient`; the prompt text is copied verbatim, the code is ours. The
judge prompt is unchanged since the v0.1 release (commit 7f1b7f5), the Bradley–Terry score since
commit 583728f (2024-04-15; before it ``show_result.py`` reported the weighted win rate that
``arena_hard.json`` keeps as ``winrate``):

- data: 500 questions (``data/arena-hard-v0.1/question.jsonl``) and the baseline's answers
  (``model_answer/gpt-4-0314.jsonl``), read by :func:`load_questions` / :func:`load_answers`;
- judge: gpt-4-1106-preview at temperature 0 with up to 4096 tokens, a system message and one
  user message (:func:`judge_messages`); every question is judged in two games, game 1 with
  A = baseline, B = the model, game 2 with the order swapped;
- verdict: the matches of ``\\[\\[([AB<>=]+)\\]\\]`` in the judgment; if there is none, the judge
  is asked once more in the same conversation ("continue your judgment ...",
  ``number_of_judgment_attempts: 2``) and the two replies are read together; unless the distinct
  matches are exactly one of ``A>>B``, ``A>B``, ``A=B``, ``B>A``, ``B>>A`` the game is a parse
  failure and gives no battle (:func:`parse_verdict`);
- battles: each game is one battle model vs baseline (won, lost or tied from the judged order);
  a strong verdict (``>>``) is the battle repeated 3 times;
- score (:func:`bradley_terry`): the Bradley–Terry maximum-likelihood fit of all battles, as
  arena-hard-auto's logistic regression has it (each battle twice: a win is two wins, a tie one
  win each way), on the Elo scale (400, base 10, initial 1000, the baseline anchored at 1000),
  reported as the predicted win rate against the baseline in percent,
  1 / (1 + 10^((1000 − elo) / 400)); 95% CIs are the 2.5/97.5 percentiles of the ratings over
  100 bootstrap resamples (with replacement) of the battles. The fit is Newton's method on that
  likelihood (the tests check it against scikit-learn's ``LogisticRegression``, their solver).

The embedded stand-in (:func:`embedded_set`) takes the questions from the embedded chat task's
test rows and the rows' human references as the baseline's answers (the role of gpt-4-0314).
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from eval.judge_client import ChatClient
from rebel.errors import HarnessError

SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your job "
    "is to evaluate which assistant's answer is better.\n\n"
    "Begin your evaluation by generating your own answer to the prompt. You must provide your answers before "
    "judging any answers.\n\n"
    "When evaluating the assistants' answers, compare both assistants' answers with your answer. You must "
    "identify and correct any mistakes or inaccurate information.\n\n"
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the answer "
    "correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more "
    "information from the user than providing an answer based on assumptions. Relevant means all parts of the "
    "response closely connect or are appropriate to what is being asked. Concise means the response is clear and "
    "not verbose or excessive.\n\n"
    "Then consider the creativity and novelty of the assistant's answers when needed. Finally, identify any "
    "missing important information in the assistants' answers that would be beneficial to include when "
    "responding to the user prompt.\n\n"
    "After providing your explanation, you must output only one of the following choices as your final verdict "
    "with a label:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "My final verdict is tie: [[A=B]]".'
)
"""``system_prompt`` of arena-hard-auto's ``config/judge_config.yaml`` (v0.1), verbatim."""
PROMPT_TEMPLATE = (
    "<|User Prompt|>\n{question_1}\n\n"
    "<|The Start of Assistant A's Answer|>\n{answer_1}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{answer_2}\n<|The End of Assistant B's Answer|>"
)
"""``prompt_template`` of ``config/judge_config.yaml`` (v0.1), verbatim."""
CONTINUE_PROMPT = "continue your judgment and finish by outputting a final verdict label"
"""The second attempt's user message when the first judgment has no verdict (``gen_judgment.py``)."""
VERDICT = re.compile(r"\[\[([AB<>=]+)\]\]")
"""``regex_pattern`` of ``config/judge_config.yaml``."""

STRONG_WEIGHT = 3
"""A strong verdict (``A>>B``, ``B>>A``) counts as this many battles (``show_result.py --weight``)."""
_GAME_1 = {
    "A>>B": ("loss", STRONG_WEIGHT),
    "A>B": ("loss", 1),
    "A=B": ("tie", 1),
    "B>A": ("win", 1),
    "B>>A": ("win", STRONG_WEIGHT),
}
"""Game 1 (A = baseline, B = the model): verdict -> (the model's result, number of battles)."""
_GAME_2 = {
    "A>>B": ("win", STRONG_WEIGHT),
    "A>B": ("win", 1),
    "A=B": ("tie", 1),
    "B>A": ("loss", 1),
    "B>>A": ("loss", STRONG_WEIGHT),
}
"""Game 2 (A = the model, B = baseline)."""

SCALE, BASE, INIT_RATING = 400.0, 10.0, 1000.0
"""Elo scale of arena-hard-auto's ``compute_mle_elo``; the baseline is anchored at ``INIT_RATING``."""


def _read_jsonl(path: Path, what: str) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise HarnessError(f"Arena-Hard {what} file '{path}' not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except ValueError:
                raise HarnessError(f"{path}:{number}: not a JSON line (expected an Arena-Hard {what} row)") from None
    return rows


def _first_content(turns: Any) -> str | None:
    """``turns[0]["content"]`` when ``turns`` is a non-empty list of turns with a string content, else None."""
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and isinstance(turns[0].get("content"), str):
        return turns[0]["content"]
    return None


def _question_id(row: Any) -> str | int | None:
    qid = row.get("question_id") if isinstance(row, dict) else None
    return qid if isinstance(qid, (str, int)) and not isinstance(qid, bool) else None


def load_questions(path: Path) -> list[dict[str, Any]]:
    """The questions of an arena-hard-auto ``question.jsonl`` (rows ``{question_id, category, cluster,
    turns: [{content}]}``), in file order."""
    path, questions, seen = Path(path), [], set()
    for number, row in _read_jsonl(path, "question"):
        qid = _question_id(row)
        if qid is None or _first_content(row.get("turns")) is None or qid in seen:
            raise HarnessError(
                f"{path}:{number}: expected a question row with a new question_id and turns: [{{content: str}}]"
            )
        seen.add(qid)
        questions.append(row)
    return questions


def load_answers(path: Path) -> dict[str | int, str]:
    """question_id -> answer text (first turn of the first choice) of an arena-hard-auto ``model_answer`` file
    (rows ``{question_id, answer_id, model_id, choices: [{index, turns: [{content, token_len}]}], tstamp}``)."""
    path, answers = Path(path), {}
    for number, row in _read_jsonl(path, "answer"):
        qid = _question_id(row)
        choices = row.get("choices") if qid is not None else None
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        content = _first_content(choice.get("turns"))
        if qid is None or content is None or qid in answers:
            raise HarnessError(
                f"{path}:{number}: expected an answer row with a new question_id and "
                "choices: [{turns: [{content: str}]}]"
            )
        answers[qid] = content
    return answers


def embedded_set(rows: list[dict[str, Any]], n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Questions and baseline answer rows (arena-hard-auto's formats) from a seeded subset of ``n`` test rows of
    the embedded chat task: question_id = the row id, the question = the last (user) message, the baseline
    answer = the row's human reference (model_id ``human_reference``; token_len counts whitespace words,
    tstamp is 0 so the files are reproducible). Each question keeps its row's ``messages`` so that the
    policy is prompted exactly as in training."""
    if n > len(rows):
        raise HarnessError(f"Arena-Hard: {n} questions asked for, the embedded test split has {len(rows)} rows")
    index = sorted(random.Random(seed).sample(range(len(rows)), n))
    questions, baseline = [], []
    for i in index:
        row = rows[i]
        if row["messages"][-1]["role"] != "user":
            raise HarnessError(f"Arena-Hard: embedded row {row['id']!r} does not end with a user message")
        questions.append(
            {
                "question_id": row["id"],
                "category": "arena-hard-v0.1",
                "cluster": "embedded",
                "turns": [{"content": row["messages"][-1]["content"]}],
                "messages": row["messages"],
            }
        )
        baseline.append(
            {
                "question_id": row["id"],
                "answer_id": f"{row['id']}-human_reference",
                "model_id": "human_reference",
                "choices": [
                    {"index": 0, "turns": [{"content": row["reference"], "token_len": len(row["reference"].split())}]}
                ],
                "tstamp": 0.0,
            }
        )
    return questions, baseline


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def write_set(questions: list[dict[str, Any]], baseline_rows: list[dict[str, Any]], out_dir: Path) -> None:
    """``out_dir/arena_hard_questions.jsonl`` and ``out_dir/arena_hard_baseline.jsonl`` (arena-hard-auto's formats)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "arena_hard_questions.jsonl", questions)
    _write_jsonl(out_dir / "arena_hard_baseline.jsonl", baseline_rows)


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The judge conversation of one game: arena-hard-auto's system prompt and filled template."""
    user = PROMPT_TEMPLATE.format(question_1=question, answer_1=answer_a, answer_2=answer_b)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(text: str | None) -> str | None:
    """The verdict label when the distinct ``[[...]]`` matches are exactly one of the five labels, else None."""
    matches = set(VERDICT.findall(text or ""))
    verdict = matches.pop() if len(matches) == 1 else None
    return verdict if verdict in _GAME_1 else None


def _judge(
    jobs: list[list[dict[str, str]]], client: ChatClient, max_tokens: int
) -> list[tuple[str | None, str | None]]:
    """(judgment, error) per conversation: one batch, then a second attempt for the replies without any match."""
    replies = client.complete(jobs, max_tokens=max_tokens, temperature=0.0)
    results = [(r.text, r.error) for r in replies]
    retry = [i for i, r in enumerate(replies) if r.text is not None and VERDICT.search(r.text) is None]
    if retry:
        follow_ups = [
            [*jobs[i], {"role": "assistant", "content": replies[i].text}, {"role": "user", "content": CONTINUE_PROMPT}]
            for i in retry
        ]
        for i, second in zip(retry, client.complete(follow_ups, max_tokens=max_tokens, temperature=0.0)):
            # arena-hard-auto reads both attempts together; a failed second attempt leaves the first
            text = replies[i].text if second.text is None else f"{replies[i].text}\n{second.text}"
            results[i] = (text, second.error)
    return results


def _outcomes(games: list[dict[str, Any]]) -> list[str]:
    """The model's battles vs the baseline ("win", "loss", "tie"), a strong verdict repeated; parse failures none."""
    outcomes = []
    for g in games:
        rules = _GAME_1 if g["game"] == 1 else _GAME_2
        if g["verdict"] in rules:
            result, weight = rules[g["verdict"]]
            outcomes += [result] * weight
    return outcomes


def run_arena_hard(
    questions: list[dict[str, Any]],
    answers: dict[Any, str],
    baseline: dict[Any, str],
    *,
    client: ChatClient,
    judge_model: str,
    judge_max_tokens: int,
    out_dir: Path,
    name: str,
) -> dict[str, Any]:
    """Judge one model's answers in both games per question; writes ``out_dir/arena_hard_judgments.jsonl``
    and ``out_dir/arena_hard.json`` (whose ``winrate`` is the share of battles won, ties half, in percent)."""
    missing = [
        q["question_id"] for q in questions if q["question_id"] not in answers or q["question_id"] not in baseline
    ]
    if missing:
        raise HarnessError(
            f"Arena-Hard: {len(missing)} question(s) without a model or baseline answer, e.g. {missing[0]!r}"
        )
    before = client.usage.as_dict()
    jobs, keys = [], []
    for q in questions:
        text, qid = q["turns"][0]["content"], q["question_id"]
        jobs += [judge_messages(text, baseline[qid], answers[qid]), judge_messages(text, answers[qid], baseline[qid])]
        keys += [(qid, 1), (qid, 2)]
    judgments = [
        {"question_id": qid, "game": game, "judgment": text, "verdict": parse_verdict(text), "error": error}
        for (qid, game), (text, error) in zip(keys, _judge(jobs, client, judge_max_tokens))
    ]
    games = [{k: j[k] for k in ("question_id", "game", "verdict")} for j in judgments]
    outcomes = _outcomes(games)
    winrate = 100 * (outcomes.count("win") + outcomes.count("tie") / 2) / len(outcomes) if outcomes else math.nan
    result = {
        "name": name,
        "judge_model": judge_model,
        "n_questions": len(questions),
        "games": games,
        "parse_failures": sum(g["verdict"] is None for g in games),
        "judge_usage": {k: v - before[k] for k, v in client.usage.as_dict().items()},
        "winrate": winrate,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "arena_hard_judgments.jsonl", judgments)
    (out_dir / "arena_hard.json").write_text(json.dumps(result, indent=2))
    return result


def _fit(model: np.ndarray, outcome: np.ndarray, n_models: int) -> np.ndarray:
    """Bradley–Terry log-strengths θ (baseline 0) of models ``0..n_models-1`` from battles model vs baseline
    (``outcome``: 1 win, 0.5 tie, 0 loss); NaN for a model without battles.

    arena-hard-auto's likelihood: per battle, over its two copies, Σ y·log σ(θ) + (1 − y)·log σ(−θ) with y =
    (1, 1) for a win, (1, 0) for a tie, (0, 0) for a loss. Every battle is against the baseline, so the joint
    likelihood separates per model (the Hessian is diagonal) and Newton's method from θ = 0 converges
    monotonically. A model that won (lost) every battle has no finite maximum: it stops once the gradient
    vanishes, at a win rate within ~1e-9 of 100 % (0 %), as arena-hard-auto's solver stops at a large rating.
    """
    counts = np.bincount(model, minlength=n_models).astype(float) * 2  # two rows per battle
    wins = np.bincount(model, weights=2 * outcome, minlength=n_models)
    theta = np.zeros(n_models)
    for _ in range(200):
        p = 1 / (1 + np.exp(-theta))
        gradient = wins - counts * p
        if np.all(np.abs(gradient) <= 1e-9 * np.maximum(counts, 1)):
            break
        hessian = counts * p * (1 - p)
        theta += np.divide(gradient, hessian, out=np.zeros(n_models), where=hessian > 0)
    theta[counts == 0] = np.nan
    return theta


def _elo(theta: np.ndarray) -> np.ndarray:
    return INIT_RATING + SCALE * theta / math.log(BASE)


def _winrate(elo: np.ndarray | float) -> np.ndarray | float:
    """Predicted win rate (%) against the baseline (rated ``INIT_RATING``) of an Elo rating."""
    return 100 / (1 + BASE ** ((INIT_RATING - elo) / SCALE))


def bradley_terry(
    battles_by_model: dict[str, list[dict[str, Any]]],
    *,
    baseline: str = "baseline",
    bootstrap_rounds: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per model (and the baseline, 50 %) ``{"score", "ci_low", "ci_high"}`` in percent: the Bradley–Terry win rate
    against the baseline fitted on all models' battles (from their ``games`` as in ``arena_hard.json``), and the
    2.5/97.5 percentiles over ``bootstrap_rounds`` resamples of the pooled battles (seeded by ``seed``)."""
    if baseline in battles_by_model:
        raise HarnessError(f"Arena-Hard: a model is named like the baseline ({baseline!r})")
    if bootstrap_rounds < 1:
        raise HarnessError(f"Arena-Hard: bootstrap_rounds must be at least 1, not {bootstrap_rounds}")
    names = list(battles_by_model)
    value = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    rows = [(i, value[o]) for i, name in enumerate(names) for o in _outcomes(battles_by_model[name])]
    model = np.array([m for m, _ in rows], dtype=int)
    outcome = np.array([o for _, o in rows], dtype=float)
    elo = _elo(_fit(model, outcome, len(names)))
    rng = np.random.default_rng(seed)
    samples = np.empty((bootstrap_rounds, len(names)))
    for r in range(bootstrap_rounds):
        pick = rng.integers(0, len(rows), len(rows))
        samples[r] = _elo(_fit(model[pick], outcome[pick], len(names)))
    scores = {baseline: {"score": 50.0, "ci_low": 50.0, "ci_high": 50.0}}
    for i, name in enumerate(names):
        column = samples[:, i][~np.isnan(samples[:, i])]
        low, high = np.percentile(column, [2.5, 97.5]) if column.size else (math.nan, math.nan)
        scores[name] = {
            "score": float(_winrate(elo[i])),
            "ci_low": float(_winrate(low)),
            "ci_high": float(_winrate(high)),
        }
    return scores
