"""The pipeline is deterministic on one machine: a second run from scratch writes the same Table 1,
learning curves and policies, digit for digit (the reproducibility check then only has to explain
differences between kernel paths and machines)."""

import hashlib

import pytest
from conftest import snakemake

pytestmark = pytest.mark.slow


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_smoke_pipeline_writes_identical_tables_curves_and_weights(smoke_run, tmp_path):
    snakemake(tmp_path, "tables/table1.csv")
    for name in (
        "tables/table1.csv",
        "tables/table1_budget.csv",
        "results/smoke/rm/eval.json",
        "results/smoke/sft/model/model.safetensors",
        "results/smoke/rebel/seed1/curve.jsonl",
        "results/smoke/rebel/seed1/policy/adapter_model.safetensors",
        "results/smoke/ppo/seed1/generations.jsonl",
        "results/smoke/ceiling/seed1/eval.json",
    ):
        assert _digest(tmp_path / name) == _digest(smoke_run / name), name
