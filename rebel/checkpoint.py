"""Resumable training state: trainable weights (safetensors), optimizer and scheduler, counters.

``model`` is whatever holds the trainable modules (the loop passes a ``ModuleDict`` of the
policy and, for algorithms with a value model, the critic).

A checkpoint directory is written completely under a temporary name and then swapped in,
so a run killed at any instant finds either the previous or the new checkpoint, whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_DONE = "COMPLETE"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def save(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, meta: dict[str, Any]
) -> None:
    new, old = directory.with_name(directory.name + ".new"), directory.with_name(directory.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_file({k: v.cpu() for k, v in trainable_state(model).items()}, new / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, new / "optimizer.pt")
    (new / "meta.json").write_text(json.dumps(meta, indent=2))
    (new / _DONE).touch()
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    new.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint, including one caught mid-swap."""
    for candidate in (
        directory,
        directory.with_name(directory.name + ".new"),
        directory.with_name(directory.name + ".old"),
    ):
        if (candidate / _DONE).is_file():
            return candidate
    return None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    state = load_file(path / "trainable.safetensors")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        raise RuntimeError(
            f"checkpoint '{path}' does not match the model's trainable parameters "
            f"({len(set(state) ^ expected)} names differ); was the config changed?"
        )
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    opt = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    return json.loads((path / "meta.json").read_text())
