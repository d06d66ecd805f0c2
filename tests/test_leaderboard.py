"""Open LLM Leaderboard v1 through lm-eval on our checkpoints, with the local stand-in tasks."""

import json
import re

import pytest
import torch
import yaml
from conftest import SMOKE, snakemake
from lm_eval.tasks import TaskManager

from eval.leaderboard import load_merged_policy, make_lm, run_leaderboard
from eval.leaderboard_tasks import LEADERBOARD_V1, local_items, shipped_task_dir, write_local_tasks
from rebel import models as M
from rebel import synthetic_tldr as task
from rebel.cli import main
from rebel.config import load_config
from rebel.errors import HarnessError

FEWSHOT = {"mmlu": 5, "gsm8k": 5, "arc": 25, "winogrande": 5, "truthfulqa": 0, "hellaswag": 10}
METRICS = {
    "mmlu": "acc",
    "gsm8k": "exact_match,strict-match",
    "arc": "acc_norm",
    "winogrande": "acc",
    "truthfulqa": "acc",
    "hellaswag": "acc_norm",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer, tiny_config):
    """A LoRA policy over a saved base, laid out as the train stage writes it, and a data folder."""
    root = tmp_path_factory.mktemp("leaderboard")
    torch.manual_seed(0)
    from transformers import GPTNeoXForCausalLM

    base = GPTNeoXForCausalLM(tiny_config)
    M.save_model(base, root / "sft" / "model")
    lora = M.add_lora(
        base, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query_key_value", "dense_h_to_4h"]}
    )
    for name, param in lora.named_parameters():
        if "lora_B" in name:  # zero at initialization: make the adapter change the function
            torch.nn.init.normal_(param, std=0.5)
    M.save_model(lora, root / "rebel" / "policy", base_ref={"path": str(root / "sft" / "model")})
    M.write_model_ref(root / "rebel" / "policy" / "model.json", {"path": "."})
    tokenizer.save_pretrained(root / "data" / "tokenizer")
    return root


def test_local_items_are_deterministic_and_answer_from_the_post():
    arc = {b.name: b for b in LEADERBOARD_V1}["arc"]
    items = local_items(arc, "test", seed=0)
    assert items == local_items(arc, "test", seed=0) and items != local_items(arc, "test", seed=1)
    for item in items:
        post, question = item["question"].rsplit(" what did my ", 1)
        subject = question.removesuffix(" do ?")
        answer = item["choices"]["text"][item["choices"]["label"].index(item["answerKey"])]
        verb, _, obj = answer.split()
        assert (subject, verb, obj) in task.post_facts("POST: " + post)
        assert len(set(item["choices"]["text"])) == 4
    winogrande = local_items({b.name: b for b in LEADERBOARD_V1}["winogrande"], "validation", seed=0)
    for item in winogrande:
        post, rest = item["sentence"].split(" so my _ ")
        verb, _, obj, _ = rest.split()
        subject = item["option" + item["answer"]]
        assert (subject, verb, obj) in task.post_facts("POST: " + post)


def test_hub_tasks_are_the_shipped_leaderboard_tasks():
    """Real runs name lm-eval's own tasks (indexed from the installed package, nothing downloaded)."""
    shipped = TaskManager().all_tasks
    assert {b.name: b.task for b in LEADERBOARD_V1} == {
        "mmlu": "mmlu",
        "gsm8k": "gsm8k",
        "arc": "arc_challenge",
        "winogrande": "winogrande",
        "truthfulqa": "truthfulqa_mc2",
        "hellaswag": "hellaswag",
    }
    for benchmark in LEADERBOARD_V1:
        assert benchmark.task in shipped and (shipped_task_dir() / benchmark.include).is_file()
        assert benchmark.num_fewshot == FEWSHOT[benchmark.name]


def test_merged_lora_policy_scores_as_the_adapter_model(checkpoint, tokenizer):
    ref = checkpoint / "rebel" / "policy" / "model.json"
    adapter = M.load_policy(M.read_model_ref(ref)).eval()
    merged = load_merged_policy(ref, "float32", torch.device("cpu"))
    base = M.load_policy({"path": str(checkpoint / "sft" / "model")}).eval()
    assert type(merged).__name__ == "GPTNeoXForCausalLM"
    ids = torch.tensor([tokenizer("my sister borrowed my car .")["input_ids"]])
    with torch.no_grad():
        a, m, b = (model(input_ids=ids).logits for model in (adapter, merged, base))
    torch.testing.assert_close(m, a, atol=1e-5, rtol=1e-5)
    assert (a - b).abs().max() > 1e-2  # the adapter matters, so the check above is not vacuous


def test_leaderboard_json_on_a_lora_checkpoint(checkpoint):
    limit = load_config(SMOKE)["eval"]["leaderboard"]["limit"]
    out = checkpoint / "rebel" / "seed1"
    assert (
        main(
            [
                "leaderboard",
                "--config",
                str(SMOKE),
                "--data",
                str(checkpoint / "data"),
                "--policy",
                str(checkpoint / "rebel" / "policy" / "model.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "leaderboard.json").read_text())
    assert set(report["tasks"]) == set(FEWSHOT)
    assert report["local_tasks"] is True and report["limit"] == limit == 4
    assert report["lm_eval_version"] == "0.4.13"
    for name, entry in report["tasks"].items():
        assert entry["num_fewshot"] == FEWSHOT[name] and entry["metric"] == METRICS[name]
        assert entry["n_samples"] == 4 and entry["task"].startswith("rebel_")
        assert 0.0 <= entry["value"] <= 100.0
    assert report["average"] == pytest.approx(sum(e["value"] for e in report["tasks"].values()) / 6)
    # Accuracies over 4 items are multiples of 25%; mc2 is a probability mass, not an accuracy.
    for name in ("mmlu", "arc", "winogrande", "hellaswag", "gsm8k"):
        assert report["tasks"][name]["value"] % 25 == 0


def test_lm_eval_loglikelihood_equals_our_response_logprobs(checkpoint, tokenizer, tmp_path):
    """lm-eval (right-padded batches) and our scorer (left padding, position ids) agree on every
    choice of 6 questions with contexts of two lengths: same tokens, same continuation slice."""
    model = load_merged_policy(checkpoint / "rebel" / "policy" / "model.json", "float32", torch.device("cpu"))
    names = write_local_tasks(tmp_path, seed=0)
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    arc = manager.load(names["arc"])["tasks"][names["arc"]]
    arc.build_all_requests(limit=6, rank=0, world_size=1)
    requests = arc.instances  # 6 questions x 4 choices, contexts of different lengths
    lm = make_lm(model, tokenizer, batch_size=5)
    prompt_ids, prompt_mask = _padded(tokenizer, [r.args[0] for r in requests], left=True)
    response_ids, response_mask = _padded(tokenizer, [r.args[1] for r in requests], left=False)
    with torch.no_grad():
        ours = M.response_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask, 1.0).sum(-1)
    theirs = torch.tensor([ll for ll, _ in lm.loglikelihood(requests)])
    for r in requests:  # the same tokens: lm-eval splits tok(context + continuation) at the context
        whole = tokenizer(r.args[0] + r.args[1])["input_ids"]
        assert whole == tokenizer(r.args[0])["input_ids"] + tokenizer(r.args[1])["input_ids"]
    assert len(set(prompt_mask.sum(-1).tolist())) > 1
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-5)


def _padded(tokenizer, texts, left):
    rows = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), None) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


@pytest.mark.parametrize("damage", ["missing data file", "broken task yaml"])
def test_bad_local_task_is_a_one_line_error(checkpoint, tokenizer, tmp_path, damage):
    names = write_local_tasks(tmp_path, seed=0)
    if damage == "missing data file":
        (tmp_path / "mmlu_test.jsonl").unlink()
        expected = "mmlu_test.jsonl"
    else:
        path = tmp_path / "rebel_mmlu.yaml"
        path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | {"include": "/nonexistent/mmlu.yaml"}))
        expected = re.escape("'rebel_mmlu' (mmlu) not found")
    model = M.load_policy({"path": str(checkpoint / "sft" / "model")}).eval()
    with pytest.raises(HarnessError, match=expected) as info:
        run_leaderboard(make_lm(model, tokenizer, 4), names, tmp_path, limit=1)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_leaderboard_rule_on_smoke_checkpoints(smoke_run):
    """The Snakemake rule on the smoke pipeline's SFT and REBEL policies (not an input of Table 1)."""
    targets = [f"results/smoke/{a}/seed1/leaderboard.json" for a in ("sft", "rebel")]
    snakemake(smoke_run, *targets)
    for target in targets:
        report = json.loads((smoke_run / target).read_text())
        assert report["local_tasks"] and report["limit"] == 4
        assert {n: e["n_samples"] for n, e in report["tasks"].items()} == dict.fromkeys(FEWSHOT, 4)
