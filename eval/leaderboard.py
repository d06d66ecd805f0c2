"""Open LLM Leaderboard v1 (paper Tables 2/3) of one policy through lm-eval's Python API.

The policy is loaded from its ``model.json`` like every other stage. A LoRA policy is
merged into its base (``merge_and_unload``) before evaluation: the merged model computes
the same function as base + adapter (up to float rounding; tested), runs at the base
model's speed, and is a plain ``PreTrainedModel`` that lm-eval's ``HFLM`` takes as is.
Each benchmark is one ``simple_evaluate`` call with its own fewshot count, on the same
loaded model. Writes ``leaderboard.json``::

    {"tasks": {"mmlu": {"value": 25.0, "metric": "acc", "num_fewshot": 5, "n_samples": 24,
                        "task": "rebel_mmlu"}, ...},
     "average": ..., "lm_eval_version": "0.4.13", "limit": null, "local_tasks": true}

Values are percentages; the average is the leaderboard's unweighted mean of the six.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from eval.leaderboard_tasks import LEADERBOARD_V1, Benchmark, write_local_tasks
from rebel import models as M
from rebel.errors import HarnessError


def load_merged_policy(policy_ref: Path, dtype: str, device: torch.device) -> torch.nn.Module:
    """The policy of a ``model.json`` as a plain causal LM: LoRA adapters merged into the base."""
    model = M.load_policy(M.read_model_ref(policy_ref), dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.to(device).eval()


def make_lm(model: torch.nn.Module, tokenizer, batch_size: int):
    """lm-eval's Hugging Face wrapper around an already loaded model."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def _task_result(results: dict[str, Any], benchmark: Benchmark, task_name: str) -> dict[str, Any]:
    """One benchmark's entry from a ``simple_evaluate`` result (a group's samples are its leaves')."""
    metric = results["results"][task_name].get(benchmark.metric)
    if metric is None:
        raise HarnessError(
            f"lm-eval task '{task_name}' reported no metric '{benchmark.metric}' "
            f"(got {', '.join(sorted(results['results'][task_name]))})"
        )
    n_samples = sum(n["effective"] for n in results["n-samples"].values())
    return {
        "value": 100.0 * float(metric),
        "metric": benchmark.metric.removesuffix(",none"),
        "num_fewshot": benchmark.num_fewshot,
        "n_samples": n_samples,
        "task": task_name,
    }


def run_leaderboard(
    lm, task_names: dict[str, str], include_path: Path | None, limit: int | None
) -> dict[str, dict[str, Any]]:
    """Evaluate ``lm`` on every benchmark of :data:`LEADERBOARD_V1`; ``task_names`` maps them to lm-eval tasks."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    # One "context cut from the left" warning per request on the embedded models' short contexts.
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    print(
        f"lm-eval {version('lm_eval')}: model context {lm.max_length} tokens; longer fewshot contexts are "
        "cut from the left"
    )
    # Local tasks only from include_path, so that none can fall back to a shipped (Hub) task.
    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path else TaskManager()
    where = f"in '{include_path}'" if include_path else f"among lm-eval {version('lm_eval')}'s tasks"
    for benchmark in LEADERBOARD_V1:
        if task_names[benchmark.name] not in manager.all_tasks:
            raise HarnessError(
                f"lm-eval task '{task_names[benchmark.name]}' ({benchmark.name}) not found {where} "
                "(a missing or invalid task YAML)"
            )
    tasks = {}
    for benchmark in LEADERBOARD_V1:
        name = task_names[benchmark.name]
        try:
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=[name],
                num_fewshot=benchmark.num_fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=0,
            )
        except FileNotFoundError as exc:
            raise HarnessError(f"lm-eval task '{name}' ({benchmark.name}): {str(exc).splitlines()[0]}") from None
        tasks[benchmark.name] = _task_result(results, benchmark, name)
    return tasks


def evaluate_leaderboard(
    cfg: dict[str, Any], policy_ref: Path, data_dir: Path, out: Path, device: torch.device
) -> dict[str, Any]:
    """Write ``out/leaderboard.json`` for the policy of ``policy_ref`` (settings: ``eval.leaderboard``)."""
    settings = cfg["eval"]["leaderboard"]
    local = settings["tasks"] == "local"
    tokenizer = M.load_tokenizer({"path": str(data_dir / "tokenizer")})
    model = load_merged_policy(policy_ref, cfg["model"]["dtype"], device)
    if local:
        include_path = out / "lm_eval_tasks"
        task_names = write_local_tasks(include_path, cfg["data"]["seed"])
    else:
        include_path, task_names = None, {b.name: b.task for b in LEADERBOARD_V1}
    with torch.no_grad():
        tasks = run_leaderboard(
            make_lm(model, tokenizer, settings["batch_size"]), task_names, include_path, settings["limit"]
        )
    report = {
        "tasks": tasks,
        "average": sum(t["value"] for t in tasks.values()) / len(tasks),
        "lm_eval_version": version("lm_eval"),
        "limit": settings["limit"],
        "local_tasks": local,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(report, indent=2))
    return report
