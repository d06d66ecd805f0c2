"""Generation throughput of the ``hf`` and ``vllm`` backends on one workload, in one run (``python -m rebel
benchmark --generation``).

The workload is a Figure 2 shape's rollout (:mod:`rebel.benchmark`): a Pythia-shaped policy with random weights,
``prompts_per_iteration`` random full-length prompts, 2 samples each (REBEL's k) of exactly ``response_length``
tokens (EOS suppressed), sampled by each backend through :func:`rebel.generation.sample_responses`, the loop's
own call: ``hf`` in micro-batches of ``runtime.rollout_batch_size`` sequences, ``vllm`` as one batch it schedules
itself. Each backend is warmed up once (vLLM's engine start and first call are reported apart), then timed over
``repeats`` calls; tokens/s counts generated tokens.

On a GPU the result also gives each backend's fraction of the decode roofline: a decode step of a batch of b
sequences reads every weight once, so at most ``b · bandwidth / weight bytes`` tokens/s (KV-cache reads ignored,
b the backend's decode batch: ``rollout_batch_size`` for ``hf``, vLLM's ``max_num_seqs`` capped at the rows).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from rebel.benchmark import SHAPES, RandomVocabulary, _device_name, _versions, shape_config
from rebel.errors import HarnessError

SAMPLES_PER_PROMPT = 2  # REBEL's k: the rollout Figure 2 times
HBM_TB_PER_S = {  # peak memory bandwidth (vendor data sheets), matched as a substring of the device name
    "H200": 4.8,
    "H100 80GB HBM3": 3.35,  # SXM
    "H100 PCIe": 2.0,
    "H100": 3.35,
    "A100-SXM4-80GB": 2.039,
    "A100": 1.555,
    "A6000": 0.768,
}
VLLM_MAX_NUM_SEQS = 256  # vLLM's default max_num_seqs: the largest decode batch of the engine


def hbm_bandwidth(device_name: str) -> float | None:
    """Peak HBM bandwidth in bytes/s of a known GPU, else None."""
    for key, tb in HBM_TB_PER_S.items():
        if key in device_name:
            return tb * 1e12
    return None


def roofline_fraction(tokens_per_s: float, decode_batch: int, weight_bytes: int, bandwidth: float) -> float:
    """Measured tokens/s over the decode roofline ``decode_batch · bandwidth / weight_bytes``."""
    return tokens_per_s / (decode_batch * bandwidth / weight_bytes)


def run_generation_benchmark(
    cfg: dict[str, Any], shape_name: str, out: Path, *, backends: list[str], repeats: int = 3, config_name: str = ""
) -> dict[str, Any]:
    """Time every backend on the shape's rollout; write and return ``out/generation.json`` (and print a table)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from rebel import models as M
    from rebel.generation import make_backend, sample_responses

    cfg = shape_config(cfg, shape_name)
    shape = SHAPES[shape_name]
    device = M.resolve_device(cfg["runtime"]["device"])
    if shape.cuda_only and device.type != "cuda":
        raise HarnessError(f"shape '{shape_name}' is a GPU setting and needs CUDA (device here: {device.type})")
    if repeats < 1:
        raise HarnessError(f"need repeats >= 1 (got {repeats})")
    torch.set_num_threads(cfg["runtime"]["threads"])
    vocab = RandomVocabulary(shape.vocab_size)
    pol, data, runtime = cfg["policy"], cfg["data"], cfg["runtime"]
    max_positions = data["prompt_length"] + data["response_length"]
    model_config = M.scratch_config(shape.arch | {"rotary_pct": 0.25}, vocab, max_positions)
    torch.manual_seed(0)
    with torch.device(device):
        policy = GPTNeoXForCausalLM._from_config(model_config, dtype=M.DTYPES[cfg["model"]["dtype"]]).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    prompts = torch.randint(1, vocab.pad_token_id, (pol["prompts_per_iteration"], data["prompt_length"]))
    prompts = prompts.to(device)
    rows = prompts.shape[0] * SAMPLES_PER_PROMPT
    tokens = rows * data["response_length"]

    def sample(backend) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        sample_responses(
            backend,
            policy,
            prompts,
            torch.ones_like(prompts),
            samples_per_prompt=SAMPLES_PER_PROMPT,
            temperature=pol["temperature"],
            max_new_tokens=data["response_length"],
            batch_size=runtime["rollout_batch_size"],
            eos_token_id=vocab.eos_token_id,
            pad_token_id=vocab.pad_token_id,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    bandwidth = hbm_bandwidth(_device_name(device)) if device.type == "cuda" else None
    results = []
    for name in backends:
        backend = make_backend(cfg | {"runtime": runtime | {"generation_backend": name}}, 0, vocab.pad_token_id, True)
        first = sample(backend)  # vLLM: the engine starts here
        seconds = [sample(backend) for _ in range(repeats)]
        mean = sum(seconds) / len(seconds)
        decode_batch = min(rows, runtime["rollout_batch_size"] if name == "hf" else VLLM_MAX_NUM_SEQS)
        result = {
            "backend": name,
            "first_call_s": first,
            "seconds": seconds,
            "mean_s": mean,
            "tokens_per_s": tokens / mean,
            "decode_batch": decode_batch,
        }
        if bandwidth is not None:
            result["decode_roofline_fraction"] = roofline_fraction(tokens / mean, decode_batch, weight_bytes, bandwidth)
        if hasattr(backend, "close"):
            backend.close()
        results.append(result)
    if {"hf", "vllm"} <= set(backends):
        by = {r["backend"]: r for r in results}
        ratio = by["vllm"]["tokens_per_s"] / by["hf"]["tokens_per_s"]
    else:
        ratio = None
    report = {
        "benchmark": "generation throughput of the hf and vllm backends on one rollout workload",
        "note": "random weights, random full-length prompts, EOS suppressed: every sample has response_length tokens",
        "shape": shape_name,
        "model": {
            "architecture": "GPTNeoX",
            **shape.arch,
            "dtype": cfg["model"]["dtype"],
            "weight_bytes": weight_bytes,
        },  # noqa: E501
        "settings": {
            "config": config_name,
            "prompts": prompts.shape[0],
            "samples_per_prompt": SAMPLES_PER_PROMPT,
            "prompt_length": data["prompt_length"],
            "response_length": data["response_length"],
            "rollout_batch_size": runtime["rollout_batch_size"],
            "temperature": pol["temperature"],
            "repeats": repeats,
            "threads": runtime["threads"],
        },
        "device": {"type": device.type, "name": _device_name(device), "hbm_bytes_per_s": bandwidth},
        "versions": _versions() | _vllm_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "backends": results,
        "vllm_over_hf": ratio,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "generation.json").write_text(json.dumps(report, indent=2) + "\n")
    print(generation_table(report), file=sys.stderr)
    return report


def _vllm_version() -> dict[str, str]:
    try:
        import vllm
    except ImportError:
        return {}
    return {"vllm": vllm.__version__}


def generation_table(report: dict[str, Any]) -> str:
    """The result as a Markdown table, the vllm/hf ratio below it."""
    settings = report["settings"]
    lines = [
        f"Generation, shape {report['shape']} on {report['device']['name']}: {settings['prompts']} prompts × "
        f"{settings['samples_per_prompt']} samples, {settings['prompt_length']} prompt + "
        f"{settings['response_length']} new tokens, {settings['repeats']} timed calls",
        "",
        "| backend | tokens/s | s per rollout | first call (s) | decode batch | decode roofline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["backends"]:
        roofline = r.get("decode_roofline_fraction")
        lines.append(
            f"| {r['backend']} | {r['tokens_per_s']:.0f} | {r['mean_s']:.3f} | {r['first_call_s']:.2f} | "
            f"{r['decode_batch']} | {'—' if roofline is None else f'{100 * roofline:.1f}%'} |"
        )
    if report["vllm_over_hf"] is not None:
        lines += ["", f"vllm / hf tokens/s: {report['vllm_over_hf']:.2f}×"]
    return "\n".join(lines)


def write_generation_table(benchmarks: list[Path], md: Path) -> None:
    """Every ``generation.json`` of ``benchmarks`` as its table (:func:`generation_table`), into ``md``."""
    tables = []
    for path in benchmarks:
        if not path.is_file():
            raise HarnessError(f"generation benchmark '{path}' not found; run python -m rebel benchmark --generation")
        tables.append(generation_table(json.loads(path.read_text())))
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n\n".join(tables) + "\n")
