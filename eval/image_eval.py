"""The image setting's evaluation (paper §5.3): any policy's pictures on fixed noise, scored by the setting's
reward (the LAION aesthetic predictor in the paper configs, colourfulness in the embedded one:
:mod:`rebel.aesthetic`).

Every policy is evaluated on the same pictures' noise: ``eval.images_per_prompt`` per prompt, drawn from
``eval.seed`` alone, so that two policies differ only by their weights. During training the evaluator is the
loop's learning-curve evaluator (``curve.jsonl``: the mean reward after each ``eval.curve.every_reward_queries``
reward queries, with the budget spent by then), and it keeps a strip of the first ``figure4.prompts`` prompts'
first pictures at every point for Figure 4 (:mod:`eval.image_report`). On the embedded task it also records
the pictures' colour fidelity to their prompts, a check on reward over-optimization.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch


class ImageEvaluator:
    """Fixed-noise pictures of every prompt under a policy (a LoRA-adapted UNet) and their rewards."""

    def __init__(
        self, cfg: dict[str, Any], policy_ref: dict[str, Any], prompts: list[str], device: torch.device
    ) -> None:
        from rebel.aesthetic import load_image_reward
        from rebel.diffusion import LCMSampler, encode_prompts, guidance_embedding, load_lcm, unet_config

        self.cfg, self.device, self.prompts = cfg, device, prompts
        self.parts = load_lcm(policy_ref, cfg["model"]["dtype"], unet=False)  # the policy is the UNet evaluated
        for model in (self.parts.vae, self.parts.text_encoder):
            model.to(device).eval().requires_grad_(False)
        self.reward = load_image_reward(cfg["reward"])
        if isinstance(self.reward, torch.nn.Module):
            self.reward = self.reward.to(device)
        sampling, n = cfg["sampling"], cfg["eval"]["images_per_prompt"]
        self.sampler = LCMSampler(self.parts.scheduler, sampling["steps"], sampling["original_steps"], device)
        self.context = encode_prompts(self.parts, [p for p in prompts for _ in range(n)], device)
        unet = unet_config(policy_ref)
        self.guidance = guidance_embedding(sampling["guidance_scale"], unet["time_cond_proj_dim"], 1)
        generator = torch.Generator().manual_seed(cfg["eval"]["seed"])
        shape = (unet["in_channels"], unet["sample_size"], unet["sample_size"])
        self.noise = torch.randn(len(self.context), *shape, generator=generator)
        self.sample_generator_seed = cfg["eval"]["seed"] + 1

    def fidelity(self, images: torch.Tensor) -> torch.Tensor | None:
        """``[N]`` colour fidelity of the embedded task's pictures (:func:`rebel.synthetic_images.colour_fidelity`);
        None for other prompts."""
        if self.cfg["data"]["prompts"] != "embedded":
            return None
        from rebel.synthetic_images import colour_fidelity

        n = self.cfg["eval"]["images_per_prompt"]
        return colour_fidelity(images.cpu(), [p for p in self.prompts for _ in range(n)])

    @torch.no_grad()
    def images(self, unet: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, 3, H, W]`` pictures (``eval.images_per_prompt`` per prompt, prompt-major) and their ``[N]`` rewards."""
        from rebel.diffusion import decode

        was_training = unet.training
        unet.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.sample_generator_seed)
        size = self.cfg["runtime"]["rollout_batch_size"]
        pictures = []
        for start in range(0, len(self.noise), size):
            ctx = self.context[start : start + size]
            x0 = self.noise[start : start + size].to(self.device)
            trajectory = self.sampler.sample(
                unet, ctx, self.guidance.to(self.device).expand(len(ctx), -1), x0, generator
            )
            pictures.append(decode(self.parts.vae, trajectory[:, -1]))
        unet.train(was_training)
        images = torch.cat(pictures)
        return images, torch.cat([self.reward(chunk).cpu() for chunk in images.split(size)])


class ImageCurveEvaluator:
    """The loop's curve evaluator (``rebel.loop.CurveEvaluator``) for the image setting (module docstring):
    each point's mean reward, and the strip of Figure 4 inline (a base64 PNG), so that a resumed run's
    ``curve.jsonl`` stays self-contained."""

    def __init__(self, evaluator: ImageEvaluator, strip_prompts: int) -> None:
        self.evaluator, self.strip_prompts = evaluator, strip_prompts

    def __call__(self, policy: torch.nn.Module) -> dict[str, Any]:
        images, rewards = self.evaluator.images(policy)
        first = torch.arange(self.strip_prompts) * self.evaluator.cfg["eval"]["images_per_prompt"]
        fidelity = self.evaluator.fidelity(images)
        return {
            "image_reward": rewards.mean().item(),
            "image_reward_std": rewards.std(correction=0).item(),
            **({} if fidelity is None else {"colour_fidelity": fidelity.mean().item()}),
            "strip_png_base64": png_base64(images[first]),
            "strip_rewards": [round(v, 4) for v in rewards[first].tolist()],
        }


def png_base64(images: torch.Tensor) -> str:
    """``[n, 3, H, W]`` pictures side by side, as a base64 PNG."""
    from PIL import Image

    row = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(list(row), axis=1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def read_strip(encoded: str, count: int) -> list[np.ndarray]:
    """The ``count`` pictures of a :func:`png_base64` strip, as ``[H, W, 3]`` uint8 arrays."""
    from PIL import Image

    row = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))
    return np.split(row, count, axis=1)
