"""The embedded image task: prompt-conditioned pictures of coloured shapes, and the reward the image setting
raises on them (the image counterpart of :mod:`rebel.synthetic_tldr`).

- **Prompts**: 45, as the paper's 45 animals (appendix H.3.1): "<colour> <shape>" for 9 colours × 5 shapes.
- **Pre-training images** (:func:`render`): the prompt's shape in the prompt's colour, at a random place and
  size, on a random grey background with mild noise. The tiny LCM is pre-trained on them
  (:mod:`rebel.image_pretrain`), so that the starting policy draws recognizable, prompt-dependent pictures.
- **Reward** (:func:`colorfulness`): the colourfulness metric of Hasler and Süsstrunk (2003, "Measuring
  colourfulness in natural images", SPIE 5007), ``σ_rgyb + 0.3 μ_rgyb`` on 0–255 RGB with ``rg = R − G`` and
  ``yb = (R + G)/2 − B``; divided by 10 here, so that it reads on a scale like the LAION aesthetic predictor's.
  It is an image-statistics "aesthetic" score: grey pictures score 0, saturated contrasting colours score
  high. It can be computed exactly on any machine, so it stands in for the LAION predictor, whose CLIP
  ViT-L/14 weights cannot be downloaded here (:mod:`eval.aesthetic`).
"""

from __future__ import annotations

import numpy as np
import torch

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 140, 30),
    "purple": (120, 50, 170),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring")


def embedded_prompts() -> list[str]:
    """The 45 prompts, colour-major."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= radius**2) & (d2 >= (0.55 * radius) ** 2)
    if shape == "square":
        return (np.abs(dx) <= 0.8 * radius) & (np.abs(dy) <= 0.8 * radius)
    if shape == "cross":
        arm = 0.3 * radius
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    if shape == "triangle":  # apex up: inside when below the two slanted edges and above the base
        return (dy <= 0.8 * radius) & (dy >= -radius + 2 * np.abs(dx))
    raise ValueError(f"unknown shape '{shape}'; known: {', '.join(SHAPES)}")


def render(prompt: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One ``[size, size, 3]`` uint8 picture of ``prompt`` ("<colour> <shape>")."""
    colour, shape = prompt.split(" ", 1)
    grey = rng.uniform(70, 150)
    image = np.full((size, size, 3), grey) + rng.normal(0, 6, (size, size, 3))
    radius = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    image[_shape_mask(shape, size, cx, cy, radius)] = COLOURS[colour]
    return np.clip(image, 0, 255).astype(np.uint8)


def render_set(prompts: list[str], per_prompt: int, size: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """``per_prompt`` pictures of every prompt as ``[N, 3, size, size]`` floats in [0, 1], and each one's
    prompt index."""
    rng = np.random.default_rng(seed)
    index = [i for i in range(len(prompts)) for _ in range(per_prompt)]
    images = np.stack([render(prompts[i], rng, size) for i in index])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, index


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """``[N]`` Hasler–Süsstrunk colourfulness / 10 of ``[N, 3, H, W]`` images in [0, 1] (module docstring)."""
    rgb = images.clamp(0, 1).double() * 255.0
    r, g, b = rgb[:, 0].flatten(1), rgb[:, 1].flatten(1), rgb[:, 2].flatten(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    std = torch.sqrt(rg.var(1, correction=0) + yb.var(1, correction=0))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return ((std + 0.3 * mean) / 10.0).float()


def colour_fidelity(images: torch.Tensor, prompts: list[str], radius: float = 0.25) -> torch.Tensor:
    """``[N]`` share of each picture's pixels within ``radius`` (Euclidean, RGB in [0, 1]) of its prompt's colour:
    whether a policy still draws what it was asked for while it raises the reward (the pre-training pictures'
    shapes cover about a quarter of the picture). Not a reward: a check on reward over-optimization."""
    target = torch.tensor([COLOURS[p.split(" ", 1)[0]] for p in prompts], dtype=images.dtype) / 255.0
    distance = (images.clamp(0, 1) - target[:, :, None, None].to(images.device)).norm(dim=1)
    return (distance <= radius).float().flatten(1).mean(1)
