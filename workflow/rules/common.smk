# Config loading and validation, paths, resources and wildcard constraints shared by all rules. Parsing reads
# the YAML and checks it against the schema and the algorithm registry only: no torch import, no file written
# (the effective config is written when a run starts, onstart below); algorithm classes load in the jobs.
import os
import re
import sys
from pathlib import Path

from rebel.config import dump_config, effective_config, fingerprint, policy_settings, validate
from rebel.errors import ConfigError
from rebel.launch import job_gpus, launcher
from rebel.paths import CONFIG_DIR

try:
    # The --configfile files (else the embedded default) with their `extends` resolved, then --config values.
    _effective = effective_config(workflow.overwrite_configfiles, workflow.config_settings.config_args)
    config.clear()
    config.update(validate(_effective, "config", resolve=False))
except ConfigError as exc:
    sys.exit(f"config error: {exc}")
if config["render_from"] is not None and not os.path.isdir(config["render_from"]):
    # Else every table would only be listed as a missing input, with no word that the folder is absent.
    sys.exit(f"config error: config: key 'render_from': folder '{config['render_from']}' does not exist "
             f"(in {os.getcwd()}); expected an exported result set (python -m rebel export-cache) or null")

# Software environment of every rule (used with --use-conda; pip from pyproject.toml is the source of truth).
ENV = "../../environment.yml"
RUN = f"results/{config['name']}"
# Tables and figures read only small result files under REPORT: this run's, or those of an exported
# result set (render_from; no rule writes there, so rendering from it never schedules training).
REPORT_ROOT = config["render_from"] or "results"
REPORT = f"{REPORT_ROOT}/{config['name']}"
LOGS = f"{RUN}/logs"
# The effective config (after extends and --config overrides) is what every stage command reads.
CONFIG_FILE = f"{RUN}/config.yaml"
BENCHMARKS = f"{RUN}/benchmarks"
# Not an output: one append-only reply cache per judge model, shared by every evaluation of the run (each
# line written under a file lock); deleting it costs only repeated judge calls.
JUDGE_CACHE = f"{RUN}/judge_cache"
# What a training, evaluation or model-building job asks of the scheduler (a cluster executor reads these).
HEAVY = {"mem_mb": config["runtime"]["mem_mb"], "gpu": job_gpus(config["runtime"])}
# A training job: runtime.processes data-parallel processes, each with its GPUs (rebel/launch.py).
TRAINING = HEAVY | {"gpu": job_gpus(config["runtime"], config["runtime"]["processes"])}


onstart:
    # Before any job: the algorithms' parameters too (this loads their classes, which a dry run does not).
    try:
        validate(config, "config")
    except ConfigError as exc:
        sys.exit(f"config error: {exc}")
    dump_config(config, Path(CONFIG_FILE))

STAGE = f"python -m rebel {{stage}} --config {CONFIG_FILE}"
TRAIN_STAGE = f"{launcher(config['runtime'])} train --config {CONFIG_FILE}"
SFT_REF = f"{RUN}/sft/model.json"
RM_REF = f"{RUN}/rm/model.json"
DATA = f"{RUN}/data"
DATA_FILES = [f"{DATA}/{name}" for name in (
    "train.jsonl", "val.jsonl", "test.jsonl", "prefs_train.jsonl", "prefs_val.jsonl",
    "stats.json", "tokenizer/tokenizer.json")]


wildcard_constraints:
    algorithm="|".join(re.escape(a) for a in ["sft", *config["algorithms"]]),
    seed=r"\d+",
    lr=r"[0-9.e+-]+",
    kl=r"[0-9.e+-]+",


def stage(name):
    return STAGE.format(stage=name)


def policy_of(wildcards):
    if wildcards.algorithm == "sft":
        return SFT_REF
    return f"{RUN}/{wildcards.algorithm}/seed{wildcards.seed}/policy/model.json"

def folder_above(levels, key=None):
    """A params function: the folder ``levels`` above the first file of input ``key`` (of all inputs: None), so
    that a rule names the result set it reads by its inputs."""

    def folder(wildcards, input):
        files = input if key is None else input[key]
        return str(Path(files if isinstance(files, str) else files[0]).parents[levels - 1])

    return folder


def online():
    """The config's online algorithms (not DPO, which is trained offline)."""
    from eval.search import online_algorithms  # loads the algorithm classes: only when a job needs the list

    return online_algorithms(config)


def search_runs(wildcards):
    """Every grid point's evaluation: the lr sweep of every algorithm, the kl_coef sweep of the online ones."""
    from eval.search import kl_sweep  # loads the algorithm classes: only when the search is asked for

    lr_runs = expand(f"{REPORT}/search/{{algorithm}}/lr{{lr}}/eval.json", algorithm=config["algorithms"],
                     lr=SEARCH_LRS)
    return lr_runs + [f"{REPORT}/search/{algorithm}/kl{kl:g}/eval.json" for algorithm, kl in kl_sweep(config)]


def ablation_runs(wildcards):
    """The evaluation of every (η, seed): Table 1's REBEL runs at the config's own η, ablation runs else."""
    from eval.ablation import run_dirs  # reads REBEL's default η: only when Table 6 is asked for

    return [f"{folder}/eval.json" for folder in run_dirs(config, Path(REPORT)).values()]
