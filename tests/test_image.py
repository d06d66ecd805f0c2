"""The image setting (paper §5.3) on tiny random components of the real classes (diffusers' UNet, VAE and
LCMScheduler, a CLIP text encoder, peft LoRA, the LAION aesthetic head on a tiny CLIP vision model): the
sampler's log-probs, the zero log-ratio at θ = θ_t, the reward normalization, the aesthetic head's layout,
one training step of each algorithm through the shared loop, and the config's errors."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import pytest
import torch
import yaml
from conftest import REPO

from rebel.errors import ConfigError, HarnessError
from rebel.rl_math import PerPromptStatTracker

IMAGE_CONFIG = REPO / "workflow" / "configs" / "image" / "embedded.yaml"
TINY_ARCH = {
    "image_size": 16,
    "text": {"hidden_size": 16, "layers": 1, "heads": 2, "max_length": 6},
    "vae": {"block_out_channels": [4, 8], "latent_channels": 4, "norm_num_groups": 2},
    "unet": {"block_out_channels": [8, 16], "norm_num_groups": 2, "attention_head_dim": 4, "time_cond_proj_dim": 8},
}
PROMPTS = ["red circle", "blue square", "green ring", "white cross"]
PUBLIC_KEYS = {  # sac+logos+ava1-l14-linearMSE.pth
    "layers.0.weight": (1024, 768),
    "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024),
    "layers.2.bias": (128,),
    "layers.4.weight": (64, 128),
    "layers.4.bias": (64,),
    "layers.6.weight": (16, 64),
    "layers.6.bias": (16,),
    "layers.7.weight": (1, 16),
    "layers.7.bias": (1,),
}


@pytest.fixture(scope="module")
def lcm_dir(tmp_path_factory):
    """A tiny random LCM pipeline saved in the diffusers layout, with its model.json."""
    from rebel.diffusion import save_lcm
    from rebel.image_pretrain import build_components

    out = tmp_path_factory.mktemp("lcm")
    torch.manual_seed(0)
    save_lcm(build_components(TINY_ARCH, PROMPTS), out)
    (out / "model.json").write_text(json.dumps({"path": "."}))
    return out


@pytest.fixture(scope="module")
def laion_reward(tmp_path_factory):
    """The ``reward`` section of a LAION aesthetic predictor on a tiny CLIP vision model and a random head
    saved with the public file's keys."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from rebel.aesthetic import AestheticMLP

    out = tmp_path_factory.mktemp("laion")
    torch.manual_seed(1)
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=768,
        )
    )
    clip.save_pretrained(out / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out / "clip")
    torch.save(AestheticMLP().state_dict(), out / "head.pth")
    digest = hashlib.sha256((out / "head.pth").read_bytes()).hexdigest()
    return {
        "type": "laion_aesthetic",
        "clip": {"path": str(out / "clip")},
        "weights": {"path": str(out / "head.pth"), "sha256": digest, "url": None},
    }


def image_cfg(lcm_dir, reward, **policy) -> dict:
    from rebel.config import validate_image

    cfg = yaml.safe_load(IMAGE_CONFIG.read_text())
    cfg["model"] |= {"pretrained": {"path": str(lcm_dir)}, "scratch": None}
    cfg["pretrain"] = None
    cfg["data"]["prompts"] = PROMPTS
    cfg["sampling"]["steps"] = 3
    cfg["reward"] = reward
    cfg["policy"] |= {"iterations": 1, "reward_model_calls": None, "prompts_per_iteration": 4, "minibatch_prompts": 2}
    cfg["policy"] |= policy
    cfg["policy_overrides"] = {"rebel_half": {"prompts_per_iteration": 2, "minibatch_prompts": 1}}
    cfg["eval"] |= {"images_per_prompt": 1, "curve": {"every_reward_queries": 4}}
    cfg["figure4"] |= {"prompts": 2}
    cfg["runtime"] |= {"rollout_batch_size": 4, "cpu_kernels": "native"}  # in-process: torch is already imported
    return validate_image(cfg)


def test_step_logprobs_are_the_schedulers_gaussians(lcm_dir):
    """The sampler's latents are LCMScheduler.step's own under the same noise, and each action's log-prob is
    log N(x_{i+1}; √ᾱ_{i+1} d_i, (1 − ᾱ_{i+1}) I) with d_i the scheduler's ``denoised``, averaged over entries."""
    from rebel.diffusion import LCMSampler, encode_prompts, guidance_embedding, load_lcm

    parts = load_lcm({"path": str(lcm_dir)})
    cpu = torch.device("cpu")
    sampler = LCMSampler(parts.scheduler, 4, 50, cpu)
    context = encode_prompts(parts, PROMPTS, cpu)
    guidance = guidance_embedding(8.0, parts.unet.config.time_cond_proj_dim, len(PROMPTS))
    noise = torch.randn(len(PROMPTS), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    trajectory = sampler.sample(parts.unet, context, guidance, noise, torch.Generator().manual_seed(1))
    assert trajectory.shape == (4, 5, 4, 8, 8)

    scheduler, generator = parts.scheduler, torch.Generator().manual_seed(1)
    scheduler.set_timesteps(4, original_inference_steps=50)
    x, expected, denoised = noise, [], []
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = parts.unet(x, t, encoder_hidden_states=context, timestep_cond=guidance).sample
            x, d = scheduler.step(eps, t, x, generator=generator, return_dict=False)
            expected.append(x)
            denoised.append(d)
    torch.testing.assert_close(trajectory[:, 1:], torch.stack(expected, 1), rtol=1e-5, atol=1e-6)

    with torch.no_grad():
        logprobs = sampler.step_logprobs(parts.unet, trajectory, context, guidance)
    alphas = scheduler.alphas_cumprod
    direct = []
    for i in range(3):
        a_next = alphas[scheduler.timesteps[i + 1]]
        normal = torch.distributions.Normal(a_next.sqrt() * denoised[i], (1 - a_next).sqrt())
        direct.append(normal.log_prob(trajectory[:, i + 1]).flatten(1).mean(1))
    assert logprobs.shape == (4, 3)  # S − 1 actions: the last step is deterministic
    torch.testing.assert_close(logprobs, torch.stack(direct, 1), rtol=1e-5, atol=1e-5)


def _run(cfg, name, lcm_dir):
    from accelerate import Accelerator

    from rebel.algorithms import build_algorithm
    from rebel.config import policy_settings
    from rebel.loop import build_run

    cfg = policy_settings(cfg, name)
    algorithm = build_algorithm(name, cfg)
    source = algorithm.source.for_setting("image")
    ref = {"path": str(lcm_dir)}
    torch.manual_seed(0)
    return build_run(
        cfg,
        algorithm,
        1,
        Accelerator(cpu=True),
        load_policy=lambda: source.load_policy(ref, "float32"),
        load_reward_model=lambda: source.load_reward_model(cfg, None, "float32"),
        backend=None,
        source=source,
        policy_ref=ref,
    )


def test_rebel_logratio_is_exactly_zero_at_the_sampling_policy(lcm_dir):
    """Recomputed on the rollout (the update's call) before any step, log πθ − log π_t is exactly 0 for
    every action, so REBEL's regression target has no spurious term (unlike the public code, which summed
    πθ over the batch)."""
    from rebel.algorithms.rebel import rebel_residuals

    run = _run(image_cfg(lcm_dir, {"type": "colorfulness"}), "rebel", lcm_dir)
    tokenizer = run.source.load_tokenizer(None, {"path": str(lcm_dir)})
    rows = [{"id": str(i), "prompt": p} for i, p in enumerate(PROMPTS)]
    torch.manual_seed(3)
    rollout = run.source.collect(
        run.policy, run.source.encode(tokenizer, rows), tokenizer=tokenizer, timings={}, rows=rows
    )
    assert rollout.trajectory.shape[:2] == (8, 4) and rollout.logprobs.shape == (8, 2)
    with torch.no_grad():
        logprobs = run.source.logprobs(run.policy, rollout, 1.0)
    logratio = rollout.grouped_logratio(logprobs)
    assert torch.equal(logratio, torch.zeros_like(logratio))
    assert torch.equal(
        rebel_residuals(logratio, rollout.grouped(rollout.rewards), 1.0),
        -(rollout.grouped(rollout.rewards)[:, 0] - rollout.grouped(rollout.rewards)[:, 1]),
    )
    # No LoRA step yet: π_t is π_0, so the reference's log-probs are the policy's.
    assert torch.equal(rollout.logprobs, rollout.ref_logprobs)


def test_per_prompt_normalization_statistics():
    """Batch statistics until a prompt's buffer holds min_count rewards, then the buffer's (last buffer_size)."""
    tracker = PerPromptStatTracker(buffer_size=3, min_count=2)
    first = tracker.normalize(["a", "b", "b"], torch.tensor([1.0, 2.0, 6.0]))
    # "a" has one reward (< 2): batch mean 3, std sqrt(14/3); "b" has two: its own mean 4, std 2.
    batch_std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3)
    torch.testing.assert_close(first, torch.tensor([(1 - 3) / (batch_std + 1e-6), -2 / (2 + 1e-6), 2 / (2 + 1e-6)]))
    second = tracker.normalize(["b", "b"], torch.tensor([10.0, 4.0]))
    held = torch.tensor([6.0, 10.0, 4.0], dtype=torch.float64)  # 2.0 fell out of the buffer of 3
    expected = (torch.tensor([10.0, 4.0], dtype=torch.float64) - held.mean()) / (held.std(correction=0) + 1e-6)
    torch.testing.assert_close(second, expected.float())
    restored = PerPromptStatTracker(3, 2)
    restored.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert restored.buffers == {"a": [1.0], "b": [6.0, 10.0, 4.0]}
    with pytest.raises(ValueError, match="min_count <= buffer_size"):
        PerPromptStatTracker(2, 3)


def test_aesthetic_head_has_the_public_predictors_layout():
    """A state dict built to the public file's keys and shapes loads strictly; scores are one per image."""
    from rebel.aesthetic import AestheticMLP

    head = AestheticMLP()
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == PUBLIC_KEYS
    public = {k: torch.randn(shape) / math.sqrt(shape[-1]) for k, shape in PUBLIC_KEYS.items()}
    head.load_state_dict(public, strict=True)
    embeddings = torch.nn.functional.normalize(torch.randn(5, 768), dim=-1)
    manual = embeddings
    for i in (0, 2, 4, 6, 7):  # no activations; dropout is identity in eval
        manual = manual @ public[f"layers.{i}.weight"].T + public[f"layers.{i}.bias"]
    torch.testing.assert_close(head.eval()(embeddings), manual.squeeze(-1))


def test_laion_weights_are_checked_by_sha256(laion_reward, tmp_path):
    from rebel.aesthetic import load_image_reward

    wrong = copy.deepcopy(laion_reward)
    wrong["weights"]["sha256"] = "0" * 64
    with pytest.raises(HarnessError, match="reward.weights.sha256: .* has SHA-256"):
        load_image_reward(wrong)
    unpinned = copy.deepcopy(laion_reward)
    unpinned["weights"]["sha256"] = None
    with pytest.raises(HarnessError, match="pin the digest"):
        load_image_reward(unpinned)
    missing = copy.deepcopy(laion_reward)
    missing["weights"]["path"] = str(tmp_path / "absent.pth")
    with pytest.raises(HarnessError, match="not found and no reward.weights.url"):
        load_image_reward(missing)


@pytest.mark.parametrize("algorithm", ["rebel", "clipped_pg", "rebel_half"])
def test_one_training_step_through_the_shared_loop(lcm_dir, laion_reward, tmp_path, algorithm):
    """One iteration of each algorithm: LCM sampling, LAION aesthetic scoring, the loss and a LoRA step,
    with the budget recorded and the adapter saved beside a reference to its base pipeline."""
    from safetensors.torch import load_file

    from eval.image_eval import ImageCurveEvaluator, ImageEvaluator
    from rebel.data import write_jsonl
    from rebel.loop import train_online

    cfg = image_cfg(lcm_dir, laion_reward)
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "prompts.jsonl", [{"id": str(i), "prompt": p} for i, p in enumerate(PROMPTS)])
    k = 2 if algorithm.startswith("rebel") else 1
    prompts = 2 if algorithm == "rebel_half" else 4
    cfg = cfg | {"eval": cfg["eval"] | {"curve": {"every": 1}}}
    curve = ImageCurveEvaluator(ImageEvaluator(cfg, {"path": str(lcm_dir)}, PROMPTS, torch.device("cpu")), 2)
    out = tmp_path / "run"
    train_online(cfg, algorithm, 1, data_dir=data, sft_ref=lcm_dir / "model.json", rm_ref=None, out=out, curve=curve)

    info = json.loads((out / "run.json").read_text())
    assert info["counters"]["generations"] == info["counters"]["reward_model_calls"] == prompts * k
    assert info["counters"]["optimizer_steps"] == (2 if algorithm != "clipped_pg" else 4)
    assert info["data"] == "prompts" and info["kl_coef"] == 0.0
    record = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(record["loss"]) and 0 < record["grad_norm"]
    assert math.isfinite(record["image_reward"])
    points = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert [p["reward_model_calls"] for p in points] == [0, prompts * k]
    assert len(points[0]["strip_rewards"]) == 2 and points[0]["strip_png_base64"]
    adapter = load_file(out / "policy" / "adapter_model.safetensors")
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapter.items())  # B starts at 0
    assert json.loads((out / "policy" / "base_model.json").read_text())["path"]


def test_clipped_pg_loss_by_hand():
    """max(−A ρ, −A clip(ρ, 1 ± ε)) per action, averaged over actions; every action shares its trajectory's A."""
    from baselines.clipped_pg import ClippedPG, ClippedPGParams
    from rebel.rollout import Rollout

    old = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    new = torch.tensor([[0.1, -0.1], [0.0, 0.2]])
    advantages = torch.tensor([1.0, -2.0])
    ones = torch.ones(2, 2)
    batch = Rollout(
        prompt_ids=torch.zeros(2, 1, dtype=torch.long),
        prompt_mask=torch.ones(2, 1),
        response_ids=torch.zeros(2, 2),
        response_mask=ones,
        has_eos=torch.ones(2, dtype=torch.bool),
        logprobs=old,
        ref_logprobs=old,
        scores=advantages,
        rewards=advantages,
        token_rewards=ones,
        samples_per_prompt=1,
    )
    loss, stats = ClippedPG(ClippedPGParams(clip_range=0.05)).loss(new, batch)
    # ρ = e^0.1, e^-0.1 (A = 1: −min(ρ, clip ρ) = −1.05, −e^-0.1); ρ = 1, e^0.2 (A = −2: 2 max(ρ, clip ρ)).
    expected = (-1.05 - math.exp(-0.1) + 2.0 + 2 * math.exp(0.2)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["clip_fraction"].item() == 0.75


def test_image_config_errors(lcm_dir):
    from rebel.config import validate_image

    base = image_cfg(lcm_dir, {"type": "colorfulness"})
    for change, message in [
        (
            lambda c: c.update(
                algorithms=["dpo"],
                figure4=c["figure4"] | {"algorithms": ["dpo"]},
                policy_overrides={},
                algorithm_params={},
            ),
            "'dpo': key 'setting': the PreferencePairs source has no 'image' form",
        ),
        (lambda c: c["reward_normalization"].update(min_count=64), "min_count': more than buffer_size"),
        (lambda c: c["figure4"].update(algorithms=["ppo"]), "figure4.algorithms': 'ppo' is not in 'algorithms'"),
        (lambda c: c["model"].update(pretrained=None), "null needs model.scratch and pretrain"),
        (lambda c: c["sampling"].update(steps=1), "key 'sampling.steps': 1 is less than the minimum of 2"),
    ]:
        cfg = copy.deepcopy(base)
        change(cfg)
        with pytest.raises(ConfigError, match=message):
            validate_image(cfg)


def test_curve_spacing_must_match_the_iterations(lcm_dir, tmp_path):
    """eval.curve.every_reward_queries that no iteration boundary meets fails before training, in one line."""
    import subprocess
    import sys

    cfg = image_cfg(lcm_dir, {"type": "colorfulness"})
    cfg["eval"]["curve"]["every_reward_queries"] = 6
    path = tmp_path / "image.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rebel",
            "image-train",
            "--config",
            str(path),
            "--data",
            str(tmp_path),
            "--lcm",
            str(lcm_dir / "model.json"),
            "--algorithm",
            "rebel",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "every_reward_queries': 6 is not a multiple of rebel's 8 reward queries per iteration" in result.stderr


def test_figures_3_and_4_schedule_the_whole_image_setting(tmp_path):
    """A dry run of the figures from a fresh directory: the prompts, the pre-training, every algorithm and
    seed of the image config (3 × 3), then one report job, all read from the config named by image_config."""
    import re

    from conftest import snakemake

    cfg = yaml.safe_load(IMAGE_CONFIG.read_text())
    result = snakemake(
        tmp_path, "-n", "figures/fig3.png", "figures/fig4.png", config=REPO / "workflow/configs/embedded.yaml"
    )
    rules = re.findall(r"(?m)^(?:local)?rule (\w+):", result.stdout)
    assert sorted(set(rules)) == ["image_data", "image_pretrain", "image_report", "image_train"]
    assert rules.count("image_train") == len(cfg["algorithms"]) * len(cfg["seeds"]) == 9
    assert rules.count("image_pretrain") == rules.count("image_report") == 1
    assert not (tmp_path / "results").exists()


def test_the_report_refuses_runs_that_saw_other_prompts(tmp_path):
    """The committed runs render; the same runs with one seed's prompt stream changed are refused by name."""
    import shutil

    from eval.image_report import image_table
    from eval.tables import UnfairComparison
    from rebel.config import load_image_config

    cfg = load_image_config(IMAGE_CONFIG)
    results = tmp_path / "image-embedded"
    shutil.copytree(REPO / "cache" / "image-embedded", results)
    table = image_table(cfg, results, tmp_path / "image.csv", tmp_path / "image.md")
    assert list(table["reward_queries"]) == [cfg["policy"]["reward_model_calls"]] * 3
    run = results / "rebel" / "seed2" / "run.json"
    info = json.loads(run.read_text())
    run.write_text(json.dumps(info | {"prompt_stream_sha256": "0" * 64}))
    with pytest.raises(UnfairComparison, match="seed 2: the algorithms trained on different prompts"):
        image_table(cfg, results, tmp_path / "image.csv", tmp_path / "image.md")
