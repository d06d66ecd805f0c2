"""Retraining the pinned embedded SFT policy and reward model is one switch away, and lands within tolerance."""

import json

import pytest
from conftest import REPO, snakemake

pytestmark = pytest.mark.slow

EMBEDDED = REPO / "workflow" / "configs" / "embedded.yaml"
PINNED_EVAL = REPO / "workflow" / "resources" / "embedded" / "rm" / "eval.json"
TOLERANCE = 0.03
"""Agreement of a from-scratch reward model moves by up to about 0.04 between CPUs' native kernels (Intel
AVX-512 0.744, AMD AVX-512 0.785, AMD AVX2 0.783; docs/reproducibility.md); on the portable path it is one
number everywhere, so a retrain that lands further than this from the pinned model is a real regression."""


def test_retrained_sft_and_reward_model_match_the_pinned_ones_within_tolerance(tmp_path):
    snakemake(
        tmp_path,
        "results/embedded/rm/eval.json",
        "--config",
        "sft={pretrained: null}",
        "reward_model={pretrained: null}",
        config=EMBEDDED,
    )
    run = tmp_path / "results" / "embedded"
    assert json.loads((run / "sft" / "model.json").read_text()) == {"path": "model"}  # trained, not the pinned one
    retrained, pinned = json.loads((run / "rm" / "eval.json").read_text()), json.loads(PINNED_EVAL.read_text())
    for key in ("val_accuracy", "val_gold_accuracy"):
        assert retrained[key] == pytest.approx(pinned[key], abs=TOLERANCE), (key, retrained[key], pinned[key])
