"""Runtime and peak memory of one policy iteration per algorithm (paper §5.1, Figure 2).

Figure 2's setting: Pythia-2.8B policy, reference and reward model, LoRA r = 1024, α = 2048
(appendix H.1.5), bf16, 512 prompts of 512 tokens per iteration, 53 new tokens, the
hyperparameters of appendix H.1.5 (the ``tldr-2.8b`` config); runtime = generation and
policy update, averaged over iterations after a warm-up. Here:

- every iteration runs through the shared loop's own code (:func:`rebel.loop.build_run`,
  :func:`rebel.loop.run_iteration`: sampling, scoring, update; :mod:`rebel.profiling`);
- the models have the shape of a Pythia checkpoint (GPTNeoXConfig) with **random weights**:
  the timing does not depend on the weights, and none are downloaded;
- EOS is suppressed during sampling, so every response has the full ``response_length``
  tokens (random weights would otherwise stop at random points);
- prompts (and DPO's chosen/rejected responses) are random token ids of the full length;
- each algorithm runs in a fresh process (a clean allocator and RSS), with ``repeats``
  rounds over the algorithms interleaved so that all see the same machine conditions.

A CPU shape (``pythia-70m``, ``pythia-160m``) scales the workload down (fewer and shorter
prompts, proportionally smaller minibatches and LoRA rank) so the benchmark runs anywhere;
on a shared CPU the absolute seconds move with the load, the ratios between algorithms are
what the benchmark is for.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import platform
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebel.config import policy_settings
from rebel.errors import HarnessError

if TYPE_CHECKING:  # annotations only: torch loads in the functions that run a benchmark
    import torch

FIGURE2_ALGORITHMS = ("dpo", "reinforce", "rloo_k2", "iterative_dpo", "ppo", "rloo_k4", "rebel")
"""The bars of paper Figure 2, in its order (ascending winrate; see :mod:`eval.benchmark_report`)."""

PYTHIA = {  # GPTNeoXConfig of the Pythia suite (Biderman et al. 2023); all use rotary_pct 0.25
    "70m": {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048},
    "160m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "1.4b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 8192},
    "2.8b": {"hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32, "intermediate_size": 10240},
}
PYTHIA_VOCAB = 50304  # embedding rows of every Pythia model

# The CPU scale: 16 prompts of 64 tokens (Figure 2: 512 of 512); minibatches scaled by the same
# 1/32 (tldr-2.8b: 128 prompts, DPO 64 pairs); the full 53 new tokens and every algorithm's own
# update passes; 16 sequences per sampling/scoring forward pass (tldr-2.8b: 32).
_CPU_SCALE = {
    "data": {"prompt_length": 64},
    "policy": {"prompts_per_iteration": 16, "minibatch_prompts": 4},
    "policy_overrides": {"dpo": {"minibatch_prompts": 2}},
    "model": {"dtype": "float32"},  # bf16 matmuls are emulated (slow) on most CPUs
    "runtime": {"device": "cpu", "threads": 1, "rollout_batch_size": 16, "update_micro_batch_prompts": None},
}


def _lora(r: int) -> dict[str, Any]:
    """LoRA rank scaled to the width as 1024 / 2560 = 0.4 in H.1.5, α = 2r as there."""
    return {"policy": {"lora": {"r": r, "alpha": 2 * r}}}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


@dataclass(frozen=True)
class Shape:
    """A model architecture and the config changes that scale the workload to it."""

    arch: dict[str, int]
    vocab_size: int = PYTHIA_VOCAB
    overrides: dict[str, Any] = field(default_factory=dict)
    warmup: int = 1
    iterations: int = 1
    cuda_only: bool = False


SHAPES: dict[str, Shape] = {
    # Figure 2: the config's own workload (tldr-2.8b: appendix H.1.5), on one GPU.
    "pythia-2.8b": Shape(PYTHIA["2.8b"], warmup=1, iterations=2, cuda_only=True),
    # The generation benchmark's GPU shape (the tldr-1.4b rollout: 512 prompts of 512 tokens, 53 new tokens).
    "pythia-1.4b": Shape(PYTHIA["1.4b"], warmup=1, iterations=2, cuda_only=True),
    "pythia-160m": Shape(PYTHIA["160m"], overrides=_merge(_CPU_SCALE, _lora(320))),
    "pythia-70m": Shape(PYTHIA["70m"], overrides=_merge(_CPU_SCALE, _lora(200))),
    # For tests: seconds on a CPU.
    "tiny": Shape(
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
        vocab_size=512,
        overrides=_merge(
            _CPU_SCALE,
            {
                "data": {"prompt_length": 16, "response_length": 8},
                "policy": {"prompts_per_iteration": 4, "minibatch_prompts": 2, "lora": {"r": 8, "alpha": 16}},
                "policy_overrides": {"dpo": {"minibatch_prompts": 2}},
            },
        ),
    ),
}


@dataclass(frozen=True)
class RandomVocabulary:
    """The token ids a random-weight model needs: Pythia's EOS (0) and a padding id (the last row)."""

    size: int
    eos_token_id: int = 0

    @property
    def pad_token_id(self) -> int:
        return self.size - 1

    def __len__(self) -> int:
        return self.size


def shape_config(cfg: dict[str, Any], shape_name: str, prompts: int | None = None) -> dict[str, Any]:
    """``cfg`` with the shape's workload; ``prompts`` (if given) sets ``policy.prompts_per_iteration``,
    capping every minibatch at it."""
    if shape_name not in SHAPES:
        raise HarnessError(f"unknown benchmark shape '{shape_name}'; shapes: {', '.join(SHAPES)}")
    cfg = _merge(cfg, SHAPES[shape_name].overrides)
    if prompts is not None:
        cfg["policy"]["prompts_per_iteration"] = prompts
        cfg["policy"]["minibatch_prompts"] = min(cfg["policy"]["minibatch_prompts"], prompts)
        for overrides in cfg["policy_overrides"].values():
            if "minibatch_prompts" in overrides:
                overrides["minibatch_prompts"] = min(overrides["minibatch_prompts"], prompts)
    return cfg


def _random_batch(
    cfg: dict[str, Any], vocab: RandomVocabulary, offline: bool, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Random full-length prompts (and for an offline algorithm, chosen/rejected responses per prompt),
    as the source's ``encode`` (:mod:`rebel.sources`) would return them."""
    import torch

    n, p, r = (cfg["policy"]["prompts_per_iteration"], cfg["data"]["prompt_length"], cfg["data"]["response_length"])

    def tokens(rows: int, length: int) -> torch.Tensor:  # never EOS (0) or padding (the last id)
        return torch.randint(1, vocab.pad_token_id, (rows, length), generator=generator).to(device)

    prompt_ids = tokens(n, p)
    if not offline:
        return prompt_ids, torch.ones_like(prompt_ids)
    prompt_ids = prompt_ids.repeat_interleave(2, dim=0)
    response_ids = tokens(2 * n, r)
    return prompt_ids, torch.ones_like(prompt_ids), response_ids, torch.ones_like(response_ids)


def measure(
    cfg: dict[str, Any],
    shape_name: str,
    algorithm_name: str,
    warmup: int,
    iterations: int,
    threads: int | None,
    seed: int = 0,
) -> dict[str, Any]:
    """Build random-weight models of the shape and time ``warmup + iterations`` iterations of one
    algorithm through the shared loop; the profile of the last ``iterations`` (:func:`profile_summary`)."""
    import torch
    from accelerate import Accelerator
    from transformers import GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    from rebel import models as M
    from rebel.algorithms import build_algorithm
    from rebel.generation import HFGenerationBackend
    from rebel.loop import build_run, epochs_of, run_iteration
    from rebel.profiling import peak_rss_mib, profile_summary

    torch.set_num_threads(threads or cfg["runtime"]["threads"])
    cfg = policy_settings(cfg, algorithm_name)
    device = M.resolve_device(cfg["runtime"]["device"])
    accelerator = Accelerator(cpu=device.type == "cpu")
    algorithm = build_algorithm(algorithm_name, cfg)
    if algorithm.self_play:
        raise HarnessError(f"algorithm '{algorithm_name}' in self-play mode needs a judge; the benchmark has none")
    shape = SHAPES[shape_name]
    vocab = RandomVocabulary(shape.vocab_size)
    max_positions = cfg["data"]["prompt_length"] + cfg["data"]["response_length"]
    model_config = M.scratch_config(shape.arch | {"rotary_pct": 0.25}, vocab, max_positions)
    model_config.num_labels = 1  # the reward model's (and critic's) scalar head; the causal LM ignores it
    dtype = M.DTYPES[cfg["model"]["dtype"]]

    def build(cls):  # random weights, created on the device in the run's dtype
        with torch.device(accelerator.device):
            return cls._from_config(model_config, dtype=dtype)

    torch.manual_seed(seed)
    run = build_run(
        cfg,
        algorithm,
        warmup + iterations,
        accelerator,
        load_policy=lambda: build(GPTNeoXForCausalLM),
        load_reward_model=lambda: build(GPTNeoXForSequenceClassification),
        backend=HFGenerationBackend(vocab.eos_token_id, vocab.pad_token_id, full_length=True),
    )
    records = []
    for iteration in range(warmup + iterations):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + iteration)
        batch = _random_batch(cfg, vocab, algorithm.offline, generator, accelerator.device)
        _, _, timings = run_iteration(run, batch, generator, tokenizer=vocab)
        records.append({"iteration": iteration, **timings})
    return {
        "algorithm": algorithm_name,
        "samples_per_prompt": algorithm.samples_per_prompt,
        "update_passes": epochs_of(algorithm, cfg),
        "minibatch_prompts": cfg["policy"]["minibatch_prompts"],
        "trainable_parameters": sum(p.numel() for p in run.trainable.parameters() if p.requires_grad),
        "policy_parameters": sum(p.numel() for p in run.policy.parameters()),
        "profile": profile_summary(records, warmup, iterations),
        "records": records,
        "process_peak_rss_gib": peak_rss_mib() / 1024,
    }


def _device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    import accelerate
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }


def run_benchmark(
    cfg: dict[str, Any],
    shape_name: str,
    algorithms: list[str],
    out: Path,
    *,
    warmup: int | None = None,
    iterations: int | None = None,
    repeats: int = 1,
    prompts: int | None = None,
    threads: int | None = None,
    config_name: str = "",
    append: bool = False,
) -> dict[str, Any]:
    """Time every algorithm on the shape, each in a fresh process, ``repeats`` interleaved rounds;
    write and return ``out/benchmark.json``. With ``append``, the algorithms measured here are added to
    (or replace theirs in) an existing ``out/benchmark.json`` of the same shape, settings and device,
    so that a long GPU benchmark can run as several shorter commands."""
    from rebel.algorithms import resolve_algorithm
    from rebel.models import resolve_device

    cfg = shape_config(cfg, shape_name, prompts)
    shape = SHAPES[shape_name]
    for name in algorithms:
        resolve_algorithm(name, cfg.get("variants"))  # an unknown name fails here, in one line
    try:
        device = resolve_device(cfg["runtime"]["device"])
    except RuntimeError as exc:
        raise HarnessError(str(exc)) from None
    if shape.cuda_only and device.type != "cuda":
        raise HarnessError(
            f"shape '{shape_name}' is the GPU setting and needs CUDA (device here: {device.type}); "
            f"on a CPU use a scaled shape: {', '.join(s for s, v in SHAPES.items() if not v.cuda_only)}"
        )
    warmup = shape.warmup if warmup is None else warmup
    iterations = shape.iterations if iterations is None else iterations
    if warmup < 0 or iterations < 1 or repeats < 1:
        raise HarnessError(
            f"need warmup >= 0, iterations >= 1 and repeats >= 1 (got {warmup}, {iterations}, {repeats})"
        )

    load_before = os.getloadavg()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in algorithms}
    spawn = get_context("spawn")
    for _ in range(repeats):
        for name in algorithms:
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:  # a fresh process per measurement
                rounds[name].append(pool.submit(measure, cfg, shape_name, name, warmup, iterations, threads).result())
            profile = rounds[name][-1]["profile"]
            print(
                f"{name}: {profile['seconds']['total']:.2f} s per iteration, peak "
                f"{max(v['all'] for k, v in profile.items() if k.startswith('peak_')):.2f} GiB",
                file=sys.stderr,
            )
    load_after = os.getloadavg()

    pol, data, runtime = cfg["policy"], cfg["data"], cfg["runtime"]
    memory = (
        "GPU memory allocated (torch.cuda.max_memory_allocated)"
        if device.type == "cuda"
        else "resident set size of the process (sampled every 5 ms)"
    )
    result = {
        "benchmark": "paper Figure 2: runtime and peak memory of one policy iteration per algorithm",
        "note": (
            "random initialization, timing only: Pythia-shaped models with random weights; random "
            "full-length prompts; EOS suppressed so every response has the full length"
            + (
                ""
                if device.type == "cuda"
                else "; CPU at a scaled shape on a possibly shared machine: "
                "absolute seconds move with the load, the ratios between algorithms are what matter"
            )
        ),
        "shape": shape_name,
        "model": {
            "architecture": "GPTNeoX",
            **shape.arch,
            "rotary_pct": 0.25,
            "vocab_size": shape.vocab_size,
            "dtype": cfg["model"]["dtype"],
        },
        "settings": {
            "config": config_name,
            "prompts_per_iteration": pol["prompts_per_iteration"],
            "prompt_length": data["prompt_length"],
            "response_length": data["response_length"],
            "minibatch_prompts": pol["minibatch_prompts"],
            "minibatch_prompts_overrides": {
                a: o["minibatch_prompts"] for a, o in cfg["policy_overrides"].items() if "minibatch_prompts" in o
            },
            "epochs_per_iteration": pol["epochs_per_iteration"],
            "lora": pol["lora"],
            "rollout_batch_size": runtime["rollout_batch_size"],
            "update_micro_batch_prompts": runtime["update_micro_batch_prompts"],
            "warmup_iterations": warmup,
            "iterations_averaged": iterations,
            "repeats": repeats,
            "threads": threads or runtime["threads"],
            "eos_suppressed": True,
        },
        "device": {
            "type": device.type,
            "name": _device_name(device),
            "cpu_count": os.cpu_count(),
            "load_average_1min": {"before": load_before[0], "after": load_after[0]},
        },
        "memory_measured": memory,
        "versions": _versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "algorithms": [_aggregate(name, rounds[name]) for name in algorithms],
    }
    if device.type == "cuda":  # the update's model FLOPs utilization (the policy's update only; PPO's critic aside)
        for row, name in zip(result["algorithms"], algorithms):
            first = rounds[name][0]
            flops = update_flops(
                first["policy_parameters"],
                first["trainable_parameters"],
                pol["prompts_per_iteration"] * first["samples_per_prompt"],
                data["prompt_length"] + data["response_length"],
                first["update_passes"],
            )
            row["update_mfu"] = model_flops_utilization(flops, row["update_s"], result["device"]["name"])
    if append and (out / "benchmark.json").is_file():
        result = _appended(json.loads((out / "benchmark.json").read_text()), result, out / "benchmark.json")
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _appended(old: dict[str, Any], new: dict[str, Any], path: Path) -> dict[str, Any]:
    """``new``'s algorithms merged into ``old`` (same shape, settings and device), one date per command."""
    for key, value in (("shape", new["shape"]), ("settings", new["settings"]), ("device name", new["device"]["name"])):
        previous = old["device"]["name"] if key == "device name" else old[key]
        if previous != value:
            raise HarnessError(
                f"cannot append to '{path}': its {key} differs ({previous} vs {value}); use another --out"
            )
    measured = {a["algorithm"] for a in new["algorithms"]}
    kept = [a for a in old["algorithms"] if a["algorithm"] not in measured]
    dates = old.get("dates", [old["date"]]) + [new["date"]]
    loads = old.get("load_average_1min", [old["device"]["load_average_1min"]]) + [new["device"]["load_average_1min"]]
    return new | {"algorithms": kept + new["algorithms"], "dates": dates, "load_average_1min": loads}


PEAK_BF16_FLOPS = {  # dense bf16 tensor-core peak (vendor data sheets), matched as a substring of the device name
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "A6000": 154.8e12,
}


def update_flops(parameters: int, trainable: int, sequences: int, tokens_per_sequence: int, passes: int) -> float:
    """FLOPs of an update (Kaplan et al. 2020's 2N per token and matmul direction): the forward (2N) and the
    backward through the activations (2N) for every parameter, the weight gradients (2N) for the trainable ones
    only: ``(4 N + 2 N_trainable) · tokens`` per pass over ``sequences × tokens_per_sequence`` tokens."""
    return (4 * parameters + 2 * trainable) * sequences * tokens_per_sequence * passes


def model_flops_utilization(flops: float, seconds: float, device_name: str) -> float | None:
    """``flops / seconds`` over the device's bf16 peak; None for a device without a known peak."""
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops / seconds / peak
    return None


def _aggregate(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One algorithm's numbers: seconds per phase averaged over the repeats, peak memory the maximum."""
    profiles = [r["profile"] for r in runs]
    seconds = {key: sum(p["seconds"][key] for p in profiles) / len(profiles) for key in profiles[0]["seconds"]}
    kind = "gpu" if "peak_gpu_gib" in profiles[0] else "rss"
    peak = max(p[f"peak_{kind}_gib"]["all"] for p in profiles)
    first = runs[0]
    cpu = {}
    if "cpu_seconds" in profiles[0]:  # CPU: the process's CPU seconds, steadier than wall time on a shared machine
        cpu = {
            f"cpu_{key}_s": sum(p["cpu_seconds"][key] for p in profiles) / len(profiles)
            for key in ("generation", "scoring", "update", "total")
        }
    return cpu | {
        "algorithm": name,
        "samples_per_prompt": first["samples_per_prompt"],
        "update_passes": first["update_passes"],
        "minibatch_prompts": first["minibatch_prompts"],
        "trainable_parameters": first["trainable_parameters"],
        "generation_s": seconds["generation"],
        "scoring_s": seconds["scoring"],
        "update_s": seconds["update"],
        "total_s": seconds["total"],
        "peak_memory_gib": peak,
        "memory_kind": kind,
        "repeats": [
            {key: p[key] for key in ("seconds", "cpu_seconds", f"peak_{kind}_gib") if key in p} for p in profiles
        ],
    }
