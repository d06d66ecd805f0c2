"""The Snakemake workflow: parsing is light (no torch, nothing written on a dry run), every evaluation shares the
judge cache, each job kind has one rule body, and configs compose with ``extends``."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rebel.config import load_config, read_config_file
from rebel.errors import ConfigError
from rebel.paths import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "workflow" / "rules"


def _snakemake(tmp_path, *args, python_flags=()):
    return subprocess.run(
        [
            sys.executable,
            *python_flags,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def test_a_dry_run_imports_no_torch_and_writes_nothing(tmp_path):
    start = time.perf_counter()
    result = _snakemake(tmp_path, "-n", "tables/table1.csv", python_flags=("-X", "importtime"))
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "rebel.config" in imported  # the check sees the workflow's own imports
    heavy = sorted(m for m in imported if m.split(".")[0] in {"torch", "transformers", "peft", "accelerate"})
    assert not heavy, f"parsing the workflow imported {heavy[:5]}"
    assert not (tmp_path / "results").exists()
    print(f"snakemake -n tables/table1.csv: {elapsed:.2f} s under -X importtime, {len(imported)} modules")


def test_a_run_writes_the_effective_config_when_it_starts(tmp_path):
    config = CONFIG_DIR / "smoke.yaml"
    result = _snakemake(tmp_path, f"--configfile={config}", "results/smoke/data/stats.json")
    assert result.returncode == 0, result.stderr[-2000:]
    written = yaml.safe_load((tmp_path / "results" / "smoke" / "config.yaml").read_text())
    assert written == load_config(config)
    assert list(written)[:3] == ["name", "model_size", "paper_setting"]  # the schema's order


def test_every_evaluation_uses_the_run_s_judge_cache(tmp_path):
    result = _snakemake(
        tmp_path,
        "-n",
        "-p",
        f"--configfile={CONFIG_DIR / 'smoke.yaml'}",
        "tables/table1.csv",
        "tables/search.csv",
        "tables/table6.csv",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line for line in result.stdout.splitlines() if re.search(r"python -m rebel (evaluate|ceiling) ", line)]
    splits = {re.search(r"--split (\w+)", c).group(1) for c in commands if " evaluate " in c}
    assert splits == {"test", "val"}  # Table 1 and the ablation on test prompts, the search on validation ones
    assert any("/ablation/" in c for c in commands) and any("/search/" in c for c in commands)
    assert all("--judge-cache results/smoke/judge_cache" in c for c in commands)


def test_each_job_kind_has_one_rule_body():
    """The search and ablation runs are the train and evaluate rules derived with `use rule ... with:`."""
    text = "\n".join(path.read_text() for path in sorted(RULES.glob("*.smk")))
    for stage in ("evaluate", "ceiling", "sft", "reward-model", "table1", "table6", "search-table"):
        assert text.count(f'stage("{stage}")') == 1, stage
    assert text.count("cmd=TRAIN_STAGE") == 1  # train: python -m rebel train under runtime.processes' launcher
    derived = set(re.findall(r"^use rule (\w+) as (\w+) with:", text, re.MULTILINE))
    assert derived == {
        ("train", "search_train"),
        ("train", "search_kl_train"),
        ("train", "ablation_train"),
        ("evaluate", "search_evaluate"),
        ("evaluate", "ablation_evaluate"),
    }


def test_the_paper_sizes_are_short_deltas_over_one_base():
    for size in ("1.4b", "2.8b", "6.9b"):
        path = CONFIG_DIR / f"tldr-{size}.yaml"
        assert yaml.safe_load(path.read_text())["extends"] == "base/tldr.yaml"
        assert len(path.read_text().splitlines()) <= 30
        config = load_config(path)
        assert "extends" not in config and config["name"] == f"tldr-{size}"
    assert load_config(CONFIG_DIR / "tldr-6.9b.yaml")["policy"]["lora"] is None  # a delta replaces a mapping value
    assert load_config(CONFIG_DIR / "tldr-2.8b.yaml")["policy"]["lora"]["r"] == 1024  # the base's


def _write(path: Path, mapping: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_extends_merges_mappings_key_by_key_and_replaces_everything_else(tmp_path):
    _write(tmp_path / "bases" / "root.yaml", {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"z": 1}})
    _write(tmp_path / "bases" / "mid.yaml", {"extends": "root.yaml", "a": {"y": [3]}, "d": 4})
    leaf = _write(tmp_path / "leaf.yaml", {"extends": "bases/mid.yaml", "a": {"x": 2}, "c": None})
    assert read_config_file(leaf) == {"a": {"x": 2, "y": [3]}, "b": 1, "c": None, "d": 4}


@pytest.mark.parametrize("case", ["cycle", "missing", "not_a_path"])
def test_a_bad_extends_is_one_line_naming_the_file(tmp_path, case):
    leaf = tmp_path / "leaf.yaml"
    if case == "cycle":
        _write(tmp_path / "other.yaml", {"extends": "leaf.yaml"})
        _write(leaf, {"extends": "other.yaml"})
        cycle = "leaf.yaml -> other.yaml -> leaf.yaml"
        expected = f"{tmp_path / 'other.yaml'}: key 'extends': 'leaf.yaml' makes a cycle ({cycle})"
    elif case == "missing":
        _write(leaf, {"extends": "absent.yaml"})
        expected = f"{leaf}: key 'extends': file '{tmp_path / 'absent.yaml'}' not found (relative to {tmp_path})"
    else:
        _write(leaf, {"extends": ["a.yaml"]})
        expected = f"{leaf}: key 'extends': expected the path of a config file, got ['a.yaml']"
    with pytest.raises(ConfigError) as info:
        read_config_file(leaf)
    assert str(info.value) == expected


def test_a_user_config_extends_a_shipped_one_under_snakemake(tmp_path):
    mine = _write(tmp_path / "mine.yaml", {"extends": str(CONFIG_DIR / "smoke.yaml"), "name": "mine", "seeds": [7]})
    result = _snakemake(tmp_path, "-n", f"--configfile={mine}", "--config", "algorithms=[dpo, rebel]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "results/mine/rebel/seed7/eval.json" in result.stdout
    assert "results/mine/ppo/" not in result.stdout


@pytest.mark.parametrize(
    "runtime, launch, gpus",
    [
        ("{processes: 2}", "python -m torch.distributed.run --standalone --nproc_per_node 2 -m rebel train ", 0),
        (
            "{processes: 4, gpus: 1, accelerate_config: workflow/accelerate/fsdp.yaml}",
            f"accelerate launch --config_file {REPO}/workflow/accelerate/fsdp.yaml --num_processes 4 -m rebel train ",
            4,
        ),
    ],
)
def test_training_jobs_launch_their_processes_and_ask_their_gpus(tmp_path, runtime, launch, gpus):
    """runtime.processes: every train job (Table 1's, the search's, the ablation's) starts under the launcher and
    asks gpus x processes GPUs; the other heavy jobs stay one process with runtime.gpus."""
    targets = ("tables/table1.csv", "tables/search.csv", "tables/table6.csv")
    result = _snakemake(
        tmp_path, "-n", "-p", f"--configfile={CONFIG_DIR / 'smoke.yaml'}", *targets, "--config", f"runtime={runtime}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = result.stdout.split("\nrule ")[1:]
    train = [j for j in jobs if re.search(r"rebel train ", j)]
    assert {j.split(":")[0] for j in train} == {"train", "search_train", "search_kl_train", "ablation_train"}
    assert all(launch in j and f"gpu={gpus}," in j for j in train)
    others = [j for j in jobs if "python -m rebel evaluate " in j or "python -m rebel sft " in j]
    assert others and all(f"gpu={1 if gpus else 0}," in j and "torch.distributed" not in j for j in others)
