"""AlpacaEval 2.0 of one policy through the ``alpaca-eval`` package (paper Tables 2-3).

The package does the evaluation: its ``weighted_alpaca_eval_gpt4_turbo`` annotator (prompt
template, seeded m/M order shuffling, the ``logprob_parser`` reading P(m)/(P(m)+P(M)) from
the top-5 logprobs of one token), its annotation cache, and its metrics (winrate and the
length-controlled winrate). Only the transport is ours: the annotator's completion function
is :func:`completions_fn`, which sends the package's ChatML prompts through our
:class:`~eval.judge_client.ChatClient` (any OpenAI-compatible base URL: GPT-4, a vLLM
server, the loopback judge; key from the environment only; retries, bounded concurrency,
its own disk cache, token counts and cost).

Caching: the package's annotation cache (``caching_path``, keyed by instruction, both
outputs and annotator) answers a rerun without calling the client. It also stores missing
annotations (its ``is_store_missing_annotations=False`` fails on a first run in 0.6.6), so
they are removed from it after each run: a rerun asks for them again, and the client's
cache answers those already received. A rerun makes zero calls.

Length control: ``length_controlled_v1`` (the published AlpacaEval 2.0 LC winrate) needs
the package's ``df_gamed.csv`` from the Hub (instruction difficulties of the 805
instructions), so it is for real runs. Offline (the embedded instructions are not the 805),
``length_controlled_minimal`` fits the package's own GLM formula
``tanh(std_delta_len) + not_gamed_baseline - 1`` with its own fitting functions on the local
annotations and reports the predicted winrate at zero length difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eval.judge_client import ChatClient, Reply
from rebel.errors import HarnessError

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"


def _annotator_config(out_dir: Path, judge_model: str) -> Path:
    """The package's annotator config, with its prompt template made absolute and the judge model set;
    written to ``out_dir/<ANNOTATOR>/configs.yaml`` so the annotations are labelled with its name."""
    import yaml
    from alpaca_eval import constants

    source = constants.EVALUATORS_CONFIG_DIR / ANNOTATOR / "configs.yaml"
    config = yaml.safe_load(source.read_text())
    settings = config[ANNOTATOR]
    settings["prompt_template"] = str(constants.EVALUATORS_CONFIG_DIR / settings["prompt_template"])
    settings["completions_kwargs"]["model_name"] = judge_model
    settings.pop("fn_completions")  # passed as a function (our client), see completions_fn
    path = out_dir / ANNOTATOR / "configs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _choice(reply: Reply) -> dict[str, Any]:
    """A reply in the OpenAI choice layout that ``logprob_parser`` reads (``logprobs.content[i].top_logprobs``)."""
    content = [
        {
            "token": max(top, key=top.get) if top else "",
            "logprob": max(top.values()) if top else 0.0,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()],
        }
        for top in (reply.top_logprobs or [{}])
    ]
    return {"text": reply.text or "", "logprobs": {"content": content}, "error": reply.error}


def completions_fn(client: ChatClient) -> Callable[..., dict[str, list]]:
    """An ``alpaca-eval`` ``fn_completions`` that sends the annotator's prompts through ``client``."""
    from alpaca_eval.utils import prompt_to_chatml

    def complete(
        prompts: list[str],
        model_name: str,
        max_tokens: int,
        temperature: float = 0.0,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        **_unused: Any,
    ) -> dict[str, list]:
        replies = client.complete(
            [prompt_to_chatml(p.strip()) for p in prompts],
            max_tokens=max_tokens,
            temperature=temperature,
            top_logprobs=top_logprobs if logprobs else None,
        )
        price = [client.endpoint.cost_usd(r.prompt_tokens, r.completion_tokens) for r in replies]
        return {
            "completions": [r.text or "" for r in replies],
            "completions_all": [_choice(r) for r in replies],
            "price_per_example": price,
            "time_per_example": [0.0] * len(replies),
        }

    return complete


def length_controlled_minimal(annotations: pd.DataFrame) -> dict[str, float]:
    """The package's ``length_controlled_minimal`` GLM fitted on local annotations (no Hub data):
    the mean predicted preference at zero length difference, in percent."""
    from alpaca_eval.metrics.glm_winrate import GLM_INFO, fit_LogisticRegressionCV, make_dmatrix_for_model

    glm = GLM_INFO["length_controlled_minimal"]
    df = annotations[annotations["preference"].notna()].reset_index(drop=True)
    delta = df["output_1"].str.len() - df["output_2"].str.len()
    train = pd.DataFrame(
        {
            "preference": df["preference"].astype(float).replace({0.0: 1.5}) - 1,
            "std_delta_len": delta / (delta.std() or 1.0),
            "not_gamed_baseline": True,
        }
    )
    test = pd.DataFrame({"std_delta_len": 0.0, "not_gamed_baseline": True}, index=train.index)
    xy_train, x_test = make_dmatrix_for_model(train, test, formula=glm["formula"])
    model = fit_LogisticRegressionCV(xy_train, "preference", is_ytrue_proba=True, **glm["kwargs"])
    predicted = model.predict_proba(x_test)[:, 1]
    return {
        "length_controlled_winrate": float(predicted.mean() * 100),
        "lc_standard_error": float(pd.Series(predicted).sem() * 100),
    }


def _drop_missing(cache: Path) -> None:
    """Remove missing annotations (stored as null or -1) from the package's cache so a rerun retries them."""
    if not cache.is_file():
        return
    rows = json.loads(cache.read_text())
    kept = [r for r in rows if r.get("preference") is not None and r["preference"] != -1]
    if len(kept) != len(rows):
        cache.write_text(json.dumps(kept, indent=2))


def run_alpaca_eval(
    model_outputs: list[dict[str, Any]],
    reference_outputs: list[dict[str, Any]],
    *,
    client: ChatClient,
    judge_model: str,
    length_control: str,
    out_dir: Path,
    name: str,
) -> dict[str, Any]:
    """Annotate ``model_outputs`` against ``reference_outputs`` (matched by instruction) and compute the
    metrics; writes ``out_dir/alpaca_eval.json`` and returns it."""
    import alpaca_eval
    from alpaca_eval.metrics import get_length_controlled_winrate, get_winrate

    out_dir = out_dir.resolve()  # alpaca-eval reads a relative config path against its own config folder
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["instruction", "output", "generator", "dataset"]
    model_df = pd.DataFrame([{**{c: o.get(c) for c in columns}, "generator": name} for o in model_outputs])
    reference_df = pd.DataFrame([{c: o.get(c) for c in columns} for o in reference_outputs])

    def metric(annotations: list[dict[str, Any]]) -> dict[str, float]:
        annotations = pd.DataFrame(annotations)
        plain = get_winrate(annotations)
        if length_control == "length_controlled_v1":
            return get_length_controlled_winrate(annotations, save_weights_dir=None)
        return plain | length_controlled_minimal(annotations)

    before = client.usage.as_dict()
    leaderboard, annotations = alpaca_eval.evaluate(
        model_outputs=model_df,
        reference_outputs=reference_df,
        annotators_config=str(_annotator_config(out_dir, judge_model)),
        name=name,
        output_path=out_dir,
        precomputed_leaderboard=None,
        is_cache_leaderboard=False,
        is_return_instead_of_print=True,
        fn_metric=metric,
        caching_path=out_dir / "annotations_cache.json",
        fn_completions=completions_fn(client),
    )
    _drop_missing(out_dir / "annotations_cache.json")
    row = leaderboard.loc[name]
    annotations = pd.DataFrame(annotations)
    judged = int(annotations["preference"].notna().sum()) if "preference" in annotations else 0
    usage = {k: v - before[k] for k, v in client.usage.as_dict().items()}
    result = {
        "name": name,
        "annotator": ANNOTATOR,
        "judge_model": judge_model,
        "length_control": length_control,
        "n_instructions": len(model_df),
        "judged": judged,
        "parse_failures": len(model_df) - judged,
        "winrate": float(row["win_rate"]),
        "standard_error": float(row["standard_error"]),
        "lc_winrate": float(row["length_controlled_winrate"]),
        "lc_standard_error": float(row.get("lc_standard_error", np.nan)),
        "avg_length": int(row["avg_length"]),
        "judge_usage": usage,
    }
    if not np.isfinite(result["winrate"]):
        raise HarnessError(
            f"AlpacaEval of '{name}': no usable annotation out of {len(model_df)} "
            f"(judge replies failed or were unparseable; see {out_dir})"
        )
    (out_dir / "alpaca_eval.json").write_text(json.dumps(result, indent=2))
    return result
