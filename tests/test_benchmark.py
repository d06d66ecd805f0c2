"""Profiling summary, the runtime/memory benchmark through the shared loop, and Figure 2's rendering."""

import json

import pytest
import torch

from eval.benchmark_report import paper_winrates, write_figure2
from rebel.benchmark import (
    FIGURE2_ALGORITHMS,
    model_flops_utilization,
    run_benchmark,
    shape_config,
    update_flops,
)
from rebel.cli import main
from rebel.config import load_config
from rebel.errors import HarnessError
from rebel.generation import HFGenerationBackend, sample_responses
from rebel.generation_benchmark import generation_table, hbm_bandwidth, roofline_fraction, run_generation_benchmark
from rebel.paths import CONFIG_DIR
from rebel.profiling import phase, profile_summary

PAPER_2_8B = CONFIG_DIR / "tldr-2.8b.yaml"


def test_profile_summary_averages_after_the_warm_up():
    records = [  # iteration 0 is the warm-up; DPO-like records have no generation phase
        {
            "iteration": 0,
            "generation_seconds": 9.0,
            "scoring_seconds": 9.0,
            "update_seconds": 9.0,
            "generation_peak_rss_mib": 4096.0,
            "scoring_peak_rss_mib": 1.0,
            "update_peak_rss_mib": 1.0,
        },
        {
            "iteration": 1,
            "generation_seconds": 1.0,
            "scoring_seconds": 0.5,
            "update_seconds": 2.0,
            "generation_peak_rss_mib": 1024.0,
            "scoring_peak_rss_mib": 512.0,
            "update_peak_rss_mib": 2048.0,
        },
        {
            "iteration": 2,
            "generation_seconds": 3.0,
            "scoring_seconds": 1.5,
            "update_seconds": 4.0,
            "generation_peak_rss_mib": 1536.0,
            "scoring_peak_rss_mib": 512.0,
            "update_peak_rss_mib": 1024.0,
        },
        {
            "iteration": 3,
            "generation_seconds": 100.0,
            "scoring_seconds": 0.0,
            "update_seconds": 0.0,
            "generation_peak_rss_mib": 0.0,
            "scoring_peak_rss_mib": 0.0,
            "update_peak_rss_mib": 0.0,
        },
    ]
    summary = profile_summary(records, warmup=1, iterations=2)
    assert summary["iterations_averaged"] == 2
    assert summary["seconds"] == {"generation": 2.0, "judging": 0.0, "scoring": 1.0, "update": 3.0, "total": 6.0}
    assert summary["peak_rss_gib"] == {"generation": 1.5, "scoring": 0.5, "update": 2.0, "all": 2.0}
    assert "peak_gpu_gib" not in summary
    assert profile_summary(records, warmup=1, iterations=None)["seconds"]["generation"] == pytest.approx(104 / 3)
    assert profile_summary(records, warmup=4, iterations=None) == {"warmup_iterations": 4, "iterations_averaged": 0}


def test_phase_records_seconds_and_the_peak_rss_of_an_allocation():
    timings: dict[str, float] = {}
    with phase(timings, "update", torch.device("cpu")):
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed before the phase ends
        block.add_(1.0)
        del block
    assert timings["update_seconds"] > 0
    from rebel.profiling import RssSampler

    with RssSampler() as after:
        pass
    assert timings["update_peak_rss_mib"] >= after.peak / 2**20 + 32  # the freed block was seen at its peak


def test_full_length_generation_suppresses_eos(policy, tokenizer):
    eos = tokenizer.eos_token_id
    with torch.no_grad():  # every hidden state is the same unit vector, and EOS's logit is 50 along it
        policy.gpt_neox.final_layer_norm.weight.zero_()
        policy.gpt_neox.final_layer_norm.bias.zero_()
        policy.gpt_neox.final_layer_norm.bias[0] = 1.0
        policy.get_output_embeddings().weight[eos] = 0.0
        policy.get_output_embeddings().weight[eos, 0] = 50.0
    prompts = torch.randint(5, 500, (3, 6))
    kwargs = dict(
        samples_per_prompt=2,
        temperature=1.0,
        max_new_tokens=5,
        batch_size=8,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    stops = sample_responses(
        HFGenerationBackend(eos, tokenizer.pad_token_id), policy, prompts, torch.ones_like(prompts), **kwargs
    )
    assert stops[4].all() and (stops[3].sum(-1) == 1).all()  # EOS first, everything after it padding
    full = sample_responses(
        HFGenerationBackend(eos, tokenizer.pad_token_id, full_length=True),
        policy,
        prompts,
        torch.ones_like(prompts),
        **kwargs,
    )
    assert not full[4].any() and (full[3] == 1).all()


def test_tiny_benchmark_writes_every_field(tmp_path):
    result = run_benchmark(load_config(PAPER_2_8B), "tiny", ["rebel", "dpo"], tmp_path, warmup=1, iterations=1)
    assert json.loads((tmp_path / "benchmark.json").read_text()) == result
    assert result["note"].startswith("random initialization, timing only")
    assert result["device"]["type"] == "cpu" and result["device"]["name"]
    assert set(result["versions"]) >= {"torch", "transformers", "peft"}
    assert result["settings"]["eos_suppressed"] and result["settings"]["prompts_per_iteration"] == 4
    assert result["date"] and result["memory_measured"].startswith("resident set size")
    rebel, dpo = result["algorithms"]
    assert (rebel["algorithm"], rebel["samples_per_prompt"], rebel["update_passes"]) == ("rebel", 2, 4)
    assert rebel["generation_s"] > 0 and dpo["generation_s"] == 0.0  # DPO's step: a preference-pair update
    for entry in (rebel, dpo):
        assert entry["total_s"] == pytest.approx(entry["generation_s"] + entry["scoring_s"] + entry["update_s"])
        assert entry["memory_kind"] == "rss" and entry["peak_memory_gib"] > 0.1
        assert 0 < entry["cpu_update_s"] and entry["cpu_total_s"] == pytest.approx(
            entry["cpu_generation_s"] + entry["cpu_scoring_s"] + entry["cpu_update_s"]
        )


def test_shape_config_scales_the_workload_and_caps_minibatches():
    cfg = shape_config(load_config(PAPER_2_8B), "pythia-70m")
    assert (cfg["policy"]["prompts_per_iteration"], cfg["policy"]["minibatch_prompts"]) == (16, 4)  # 1/32 of 512, 128
    assert cfg["policy_overrides"]["dpo"]["minibatch_prompts"] == 2  # 1/32 of 64
    cfg = shape_config(load_config(PAPER_2_8B), "pythia-70m", prompts=3)
    assert cfg["policy"]["prompts_per_iteration"] == 3 and cfg["policy"]["minibatch_prompts"] == 3
    assert cfg["policy_overrides"]["dpo"]["minibatch_prompts"] == 2
    assert cfg["policy"]["lora"]["alpha"] == 2 * cfg["policy"]["lora"]["r"]
    assert shape_config(load_config(PAPER_2_8B), "pythia-2.8b")["data"]["prompt_length"] == 512


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shape", "pythia-9b"], "unknown benchmark shape 'pythia-9b'; shapes: pythia-2.8b"),
        (["--shape", "tiny", "--algorithms", "rebel", "ppo2"], "unknown algorithm 'ppo2'"),
        (["--shape", "pythia-2.8b"], "shape 'pythia-2.8b' is the GPU setting and needs CUDA"),
    ],
)
def test_bad_shape_or_algorithm_fails_in_one_line(tmp_path, capsys, args, message):
    if "pythia-2.8b" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["benchmark", *args, "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "benchmark.json").exists()


def _entry(name, k, generation, scoring, update, memory):
    return {
        "algorithm": name,
        "samples_per_prompt": k,
        "update_passes": 4,
        "generation_s": generation,
        "scoring_s": scoring,
        "update_s": update,
        "total_s": generation + scoring + update,
        "peak_memory_gib": memory,
        "memory_kind": "gpu",
    }


def test_figure2_renders_from_a_result_file(tmp_path):
    result = {
        "shape": "pythia-2.8b",
        "note": "random initialization, timing only",
        "date": "2026-01-01",
        "device": {"type": "cuda", "name": "Test GPU"},
        "memory_measured": "GPU memory allocated",
        "versions": {"torch": "t", "transformers": "x", "peft": "p"},
        "settings": {
            "prompts_per_iteration": 512,
            "prompt_length": 512,
            "response_length": 53,
            "iterations_averaged": 2,
            "warmup_iterations": 1,
            "repeats": 1,
        },
        "algorithms": [
            _entry("rebel", 2, 10.0, 2.0, 8.0, 30.0),
            _entry("ppo", 1, 6.0, 2.0, 22.0, 40.0),
            _entry("rloo_k4", 4, 20.0, 4.0, 16.0, 50.0),
            _entry("dpo", 2, 0.0, 1.0, 4.0, 20.0),
        ],
    }
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(result))
    png, csv, md = tmp_path / "fig2.png", tmp_path / "fig2.csv", tmp_path / "fig2.md"
    table = write_figure2([path], png, csv, md)
    for out in (png, png.with_suffix(".pdf"), csv, md):
        assert out.is_file() and out.stat().st_size > 0
    assert list(table.algorithm) == ["DPO", "PPO", "RLOO (k=4)", "REBEL"]  # Figure 2's order
    rows = table.set_index("algorithm")
    assert rows.loc["PPO", "rebel_time_ratio"] == pytest.approx(20 / 30)
    assert rows.loc["RLOO (k=4)", "rebel_memory_ratio"] == pytest.approx(30 / 50)
    assert rows.loc["REBEL", "paper_winrate"] == 70.2 and rows.loc["RLOO (k=4)", "paper_winrate_size"] == "6.9b"
    claim = next(line for line in md.read_text().splitlines() if "REBEL / PPO time" in line)
    assert "0.667" in claim and "True" in claim


def test_figure2_order_is_ascending_in_the_papers_winrates():
    winrates = paper_winrates()
    from eval.tables import display_name

    for size in ("2.8b", "6.9b"):
        reported = [
            winrates[display_name(a)][0]
            for a in FIGURE2_ALGORITHMS
            if display_name(a) in winrates and winrates[display_name(a)][1] == size
        ]
        assert len(reported) >= 3 and reported == sorted(reported)


def test_missing_benchmark_file_is_a_one_line_error(tmp_path):
    with pytest.raises(HarnessError, match="benchmark result '.*nope.json' not found"):
        write_figure2([tmp_path / "nope.json"], tmp_path / "f.png", tmp_path / "f.csv", tmp_path / "f.md")


def test_update_micro_batches_accumulate_the_minibatch_gradient(policy, tokenizer):
    """REBEL's loss is a mean over pairs: micro-batches of one prompt give the minibatch's update."""
    import copy

    from accelerate import Accelerator
    from transformers import get_scheduler

    from rebel import models as M
    from rebel.algorithms import build_algorithm
    from rebel.loop import update
    from rebel.rollout import Rollout

    torch.manual_seed(0)
    n, k, p, r = 4, 2, 6, 5
    prompt_ids, response_ids = torch.randint(5, 500, (n * k, p)), torch.randint(5, 500, (n * k, r))
    ones_p, ones_r = torch.ones(n * k, p, dtype=torch.long), torch.ones(n * k, r, dtype=torch.long)
    with torch.no_grad():
        logprobs = M.response_logprobs(policy, prompt_ids, ones_p, response_ids, ones_r, 1.0)
    rewards = torch.randn(n * k)
    rollout = Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=ones_p,
        response_ids=response_ids,
        response_mask=ones_r,
        has_eos=torch.ones(n * k, dtype=torch.bool),
        logprobs=logprobs,
        ref_logprobs=logprobs,
        scores=rewards,
        rewards=rewards,
        token_rewards=torch.zeros(n * k, r),
        samples_per_prompt=k,
    )
    algorithm = build_algorithm("rebel", {"algorithm_params": {"rebel": {"eta": 1.0}}})
    after = []
    for micro in (None, 1):
        model = copy.deepcopy(policy)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        cfg = {
            "policy": {"minibatch_prompts": 4, "temperature": 1.0, "epochs_per_iteration": 1},
            "runtime": {"update_micro_batch_prompts": micro},
        }
        stats = update(
            model,
            rollout,
            algorithm,
            optimizer,
            get_scheduler("constant", optimizer),
            Accelerator(cpu=True),
            cfg,
            torch.Generator().manual_seed(0),
        )
        after.append((torch.cat([p.detach().flatten() for p in model.parameters()]), stats["loss"]))
    (whole, loss_whole), (micro, loss_micro) = after
    assert not torch.equal(whole, torch.cat([p.detach().flatten() for p in policy.parameters()]))  # it did move
    assert torch.allclose(whole, micro, atol=1e-6) and loss_micro == pytest.approx(loss_whole, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rebel", "dpo"])
def test_run_json_profile_averages_the_metrics_after_the_warm_up(smoke_run, algorithm):
    folder = smoke_run / "results" / "smoke" / algorithm / "seed1"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    profile = json.loads((folder / "run.json").read_text())["profile"]
    assert profile["warmup_iterations"] == 1 and profile["iterations_averaged"] == len(records) - 1
    phases = ("scoring", "update") if algorithm == "dpo" else ("generation", "scoring", "update")
    totals = [sum(r[f"{p}_seconds"] for p in phases) for r in records[1:]]
    assert profile["seconds"]["total"] == pytest.approx(sum(totals) / len(totals))
    assert profile["peak_rss_gib"]["all"] == pytest.approx(
        max(r[f"{p}_peak_rss_mib"] for r in records[1:] for p in phases) / 1024
    )


def test_append_merges_algorithms_of_the_same_setting_only(tmp_path):
    from rebel.benchmark import _appended

    def result(algorithms, date, prompts=128):
        return {
            "shape": "pythia-2.8b",
            "settings": {"prompts_per_iteration": prompts},
            "date": date,
            "device": {"name": "GPU", "load_average_1min": {"before": 0.0, "after": 1.0}},
            "algorithms": [{"algorithm": a, "total_s": float(i)} for i, a in enumerate(algorithms)],
        }

    merged = _appended(result(["dpo", "rebel"], "d1"), result(["rebel", "ppo"], "d2"), tmp_path / "b.json")
    assert [(a["algorithm"], a["total_s"]) for a in merged["algorithms"]] == [
        ("dpo", 0.0),
        ("rebel", 0.0),
        ("ppo", 1.0),
    ]
    assert merged["dates"] == ["d1", "d2"] and len(merged["load_average_1min"]) == 2
    with pytest.raises(HarnessError, match="its settings differ"):
        _appended(result(["dpo"], "d1"), result(["ppo"], "d2", prompts=512), tmp_path / "b.json")


def test_update_flops_and_mfu_by_hand():
    # 10 parameters, all trained: 6 FLOPs per token; 2 sequences x 3 tokens x 2 passes = 12 tokens.
    assert update_flops(10, 10, 2, 3, 2) == 720
    # 1 of them trained (LoRA-like): (4 x 10 + 2 x 1) x 12.
    assert update_flops(10, 1, 2, 3, 2) == 504
    assert model_flops_utilization(989e12, 2.0, "NVIDIA H200") == pytest.approx(0.5)
    assert model_flops_utilization(1.0, 1.0, "AMD EPYC 7B13") is None


def test_decode_roofline_by_hand():
    # 1 GB of weights read once per decode step at 4.8 TB/s, 32 sequences per step: 153,600 tokens/s at most.
    assert hbm_bandwidth("NVIDIA H200") == 4.8e12
    assert roofline_fraction(76_800, 32, 10**9, 4.8e12) == pytest.approx(0.5)
    assert hbm_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12 and hbm_bandwidth("AMD EPYC 7B13") is None


def test_generation_benchmark_times_the_rollout_workload(tmp_path):
    """hf only (the vllm env times both: docs/vllm.md): every sample runs the full length, tokens/s follows."""
    cfg = load_config(PAPER_2_8B)
    report = run_generation_benchmark(cfg, "tiny", tmp_path, backends=["hf"], repeats=2)
    written = json.loads((tmp_path / "generation.json").read_text())
    assert written["backends"] == report["backends"] and written["vllm_over_hf"] is None
    (hf,) = report["backends"]
    settings = report["settings"]
    tokens = settings["prompts"] * settings["samples_per_prompt"] * settings["response_length"]
    assert len(hf["seconds"]) == 2 and hf["tokens_per_s"] == pytest.approx(tokens / hf["mean_s"])
    assert "| hf |" in generation_table(report)
