"""Image rewards (paper §5.3): the reward model of the image setting, and of its evaluator (:mod:`eval.image_eval`).

- ``laion_aesthetic``: the LAION aesthetic predictor (Schuhmann 2022; improved-aesthetic-predictor): CLIP
  ViT-L/14 image embeddings (``openai/clip-vit-large-patch14``, 768-d, L2-normalized) fed to an MLP
  768 → 1024 → 128 → 64 → 16 → 1 with dropouts 0.2, 0.2, 0.1 and no activations; its state-dict keys are
  ``layers.{0,2,4,6,7}.{weight,bias}``, as in the public ``sac+logos+ava1-l14-linearMSE.pth``. No package
  ships those weights: they come from a local file (a relative path is relative to the repository) checked by
  SHA-256, downloaded first from ``weights.url`` when it is absent (real runs only; never at import or in tests).
- ``colorfulness``: the embedded task's reward (:func:`rebel.synthetic_images.colorfulness`).

A reward is a callable from ``[N, 3, H, W]`` images in [0, 1] to ``[N]`` scores (:func:`load_image_reward`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rebel.errors import ConfigError, HarnessError

ImageReward = Callable[[torch.Tensor], torch.Tensor]


class AestheticMLP(nn.Module):
    """The LAION aesthetic predictor's head, with the public predictor's layer names (module docstring)."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


def _weights_file(weights: dict[str, Any]) -> Path:
    """The predictor's weights file, checked by SHA-256; downloaded from ``url`` first when it is absent."""
    from rebel.models import file_sha256
    from rebel.paths import REPO_ROOT

    path = REPO_ROOT / weights["path"]  # a relative path is relative to the repository
    if not path.is_file():
        if not weights.get("url"):
            raise HarnessError(
                f"reward.weights.path: file '{path}' not found and no reward.weights.url to download it from"
            )
        import urllib.request

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        urllib.request.urlretrieve(weights["url"], tmp)  # noqa: S310 - a configured https URL, real runs only
        tmp.replace(path)
    digest = file_sha256(path)
    if weights["sha256"] is None:
        raise HarnessError(f"reward.weights.sha256: null; pin the digest of '{path}' once checked: {digest}")
    if digest != weights["sha256"]:
        raise HarnessError(f"reward.weights.sha256: '{path}' has SHA-256 {digest}, expected {weights['sha256']}")
    return path


class LaionAesthetic(nn.Module):
    """CLIP image embedding (L2-normalized) → :class:`AestheticMLP`: scores about 1–10."""

    def __init__(self, clip: nn.Module, processor: Any, head: AestheticMLP) -> None:
        super().__init__()
        self.clip, self.processor, self.head = clip, processor, head

    @classmethod
    def load(cls, spec: dict[str, Any]) -> LaionAesthetic:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        from rebel.models import pretrained_args

        source, kwargs = pretrained_args(spec["clip"])
        clip = CLIPVisionModelWithProjection.from_pretrained(source, **kwargs)
        processor = CLIPImageProcessor.from_pretrained(source, **kwargs)
        head = AestheticMLP(clip.config.projection_dim)
        state = torch.load(_weights_file(spec["weights"]), map_location="cpu", weights_only=True)
        head.load_state_dict(state)
        return cls(clip, processor, head).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=list(images.float().cpu()), return_tensors="pt", do_rescale=False)
        device = next(self.head.parameters()).device
        embeddings = self.clip(pixel_values=pixels.pixel_values.to(device)).image_embeds
        return self.head(embeddings / embeddings.norm(dim=-1, keepdim=True)).float()


def load_image_reward(spec: dict[str, Any]) -> ImageReward:
    """The reward of an image config's ``reward`` section (module docstring)."""
    if spec["type"] == "colorfulness":
        from rebel.synthetic_images import colorfulness

        return colorfulness
    if spec["type"] == "laion_aesthetic":
        return LaionAesthetic.load(spec)
    raise ConfigError(f"key 'reward.type': '{spec['type']}' is not one of colorfulness, laion_aesthetic")
