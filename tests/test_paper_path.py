"""The paper configurations' code path, on tiny local stand-ins saved in the Hub's formats.

A tldr-1.4b config whose model and data set ids are replaced by local folders: a tiny
GPT-NeoX saved with ``save_pretrained`` (as a Pythia checkpoint is), and TL;DR-shaped data
sets with the columns of the Hub's preprocessed sets, one file per split. Nothing is
downloaded; everything else is the paper config's own code path.
"""

import json
import random

import pytest
import torch
import yaml
from transformers import GPTNeoXForCausalLM

from rebel import data as D
from rebel import models as M
from rebel import synthetic_tldr as task
from rebel.cli import main
from rebel.config import read_config_file, validate
from rebel.paths import CONFIG_DIR

pytestmark = pytest.mark.slow


def _write_hub_datasets(root, rng: random.Random) -> tuple[str, str]:
    """The columns the data stage reads from the Hub's TL;DR SFT and preference sets."""
    sft, prefs = root / "tldr_sft", root / "tldr_prefs"
    for split, n in (("train", 48), ("validation", 8), ("test", 8)):
        rows = []
        for i in range(n):
            post = task.make_post(rng)
            rows.append(
                {
                    "id": f"t3_{split}{i}",
                    "subreddit": post.subreddit,
                    "title": post.title,
                    "post": post.body,
                    "summary": task.human_summary(post, rng).strip(),
                }
            )
        D.write_jsonl(sft / f"{split}.jsonl", rows)
    for split, n in (("train", 32), ("validation", 8)):
        rows = []
        for i in range(n):
            post = task.make_post(rng)
            texts = [task.candidate_summary(post, rng).strip() for _ in range(2)]
            rows.append(
                {
                    "info": {"id": f"p{i}", "subreddit": post.subreddit, "title": post.title, "post": post.body},
                    "summaries": [{"text": t} for t in texts],
                    "choice": rng.randrange(2),
                }
            )
        D.write_jsonl(prefs / f"{split}.jsonl", rows)
    return str(sft), str(prefs)


@pytest.fixture
def paper_config(tmp_path, tokenizer, tiny_config):
    base = tmp_path / "pythia-tiny"
    torch.manual_seed(0)
    GPTNeoXForCausalLM(tiny_config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    sft_data, pref_data = _write_hub_datasets(tmp_path, random.Random(0))

    cfg = read_config_file(CONFIG_DIR / "tldr-1.4b.yaml")
    cfg["data"].update(prompt_length=48, response_length=8)  # short enough that long posts get cut
    cfg["data"]["hub"].update(sft_dataset={"path": sft_data}, preference_dataset={"path": pref_data})
    cfg["model"]["base"] = {"path": str(base)}
    cfg["sft"].update(batch_size=8, lr=1e-3)
    cfg["reward_model"].update(batch_size=8, lr=1e-3)
    cfg["policy"].update(
        lora={**cfg["policy"]["lora"], "r": 4, "alpha": 8},
        iterations=2,
        prompts_per_iteration=8,
        minibatch_prompts=4,
        lr=1e-3,
        checkpoint_every=1,
    )
    cfg["policy_overrides"]["dpo"]["minibatch_prompts"] = 4  # within the 8 prompts (pairs) per iteration
    cfg["eval"].update(n_prompts=8, batch_size=8)
    cfg["runtime"].update(device="cpu", threads=1, rollout_batch_size=16)
    path = tmp_path / "tiny-tldr.yaml"
    path.write_text(yaml.safe_dump(validate(cfg)))
    return path


def test_paper_config_stages_run_on_local_hub_format_files(paper_config, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    common = ["--config", str(paper_config)]
    assert main(["data", *common, "--out", str(run / "data")]) == 0
    assert main(["sft", *common, "--data", str(run / "data"), "--out", str(run / "sft")]) == 0
    assert (
        main(
            [
                "reward-model",
                *common,
                "--data",
                str(run / "data"),
                "--sft",
                str(run / "sft/model.json"),
                "--out",
                str(run / "rm"),
            ]
        )
        == 0
    )
    refs = ["--data", str(run / "data"), "--sft", str(run / "sft/model.json"), "--rm", str(run / "rm/model.json")]
    assert main(["train", *common, *refs, "--algorithm", "rebel", "--seed", "1", "--out", str(run / "rebel")]) == 0

    assert len(D.read_jsonl(run / "data/train.jsonl")) == 48
    assert D.read_jsonl(run / "data/test.jsonl")[0]["reference"].startswith(" ")
    assert {"chosen", "rejected"} <= D.read_jsonl(run / "data/prefs_train.jsonl")[0].keys()
    rm_eval = json.loads((run / "rm/eval.json").read_text())
    assert rm_eval["val_pairs"] == 8 and abs(rm_eval["reference_mean_score_val"]) < 1.0
    # The policy is a LoRA adapter on the SFT model, saved as safetensors, loadable by path.
    policy = M.load_policy(M.read_model_ref(run / "rebel/policy/model.json"), "bfloat16")
    assert hasattr(policy, "disable_adapter")
    assert (run / "rebel/policy/adapter_model.safetensors").is_file()
    metrics = [json.loads(line) for line in (run / "rebel/metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1] and metrics[-1]["generations"] == 32

    # Evaluation with the GPT-4 judge needs its key: without it, a one-line error before any generation.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            *common,
            *refs,
            "--policy",
            str(run / "rebel/policy/model.json"),
            "--seed",
            "1",
            "--out",
            str(run / "rebel"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "environment variable OPENAI_API_KEY" in err
    assert not (run / "rebel" / "eval.json").exists()
