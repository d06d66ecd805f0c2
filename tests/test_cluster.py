"""The SLURM profile (workflow/profiles/slurm) without a cluster: a dry run of a paper config shows what each job
asks of SLURM, and a real submission of one smoke job goes through the SLURM executor plugin to stand-ins for
SLURM's commands (sbatch runs the job at once and records its flags; sacct reports it COMPLETED). Also the local
profile's GPU limit (workflow/profiles/local). What a real cluster does with the flags is not tested here.

The runs call snakemake without conftest's ``snakemake`` helper: its ``--cores 2`` would override the profile's
``cores``, which the workflow needs on a cluster (``threads: workflow.cores`` of sft and reward_model)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SMOKE

from rebel.config import effective_config

SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "workflow" / "profiles" / "local"
TLDR_14B = REPO / "workflow" / "configs" / "tldr-1.4b.yaml"
# The SLURM commands the plugin (2.8.0) and its jobstep executor call: sbatch submits, sacct (or squeue) reports
# states, sinfo's presence makes sacct the status command (and names the default partition), scontrol shows the
# cluster config, sacctmgr checks the account, srun runs the job step inside the allocation (scancel only on an
# interrupt; sshare when sacctmgr lists no account).
# Stand-ins, written into a bin folder put first on PATH; they keep their records in $FAKE_SLURM_DIR.
FAKE_SBATCH = """\
import json, os, subprocess, sys
from pathlib import Path

state, argv = Path(os.environ["FAKE_SLURM_DIR"]), sys.argv[1:]


def option(name):
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


script = option("--wrap")
if script is None:  # --slurm-pass-command-as-script: the script comes on stdin
    script = sys.stdin.read()
jobs = state / "jobs.tsv"
jobid = str(1000 + (len(jobs.read_text().splitlines()) if jobs.exists() else 0))
with open(state / "sbatch.jsonl", "a") as f:
    f.write(json.dumps({"argv": argv, "script": script, "jobid": jobid}) + "\\n")
# The job runs now, to its end, in the folder -D names, its output in the --output file (%j: the job id).
with open(option("--output").replace("%j", jobid), "w") as log:
    rc = subprocess.run(["/bin/sh", "-c", script], cwd=option("-D"), stdout=log, stderr=subprocess.STDOUT,
                        env=dict(os.environ, SLURM_JOB_ID=jobid)).returncode
with open(jobs, "a") as f:
    f.write(f"{jobid}\\t{option('--job-name')}\\t{'COMPLETED' if rc == 0 else 'FAILED'}\\n")
print(jobid)  # what --parsable prints: the job id (';cluster' on a multi-cluster setup)
"""
# sacct -X --parsable2 --noheader --format=JobIdRaw,State ... --name <run id>: one 'id|STATE' line per job of
# the run. Other queries (sacct -j <id>.<step> --format=Reason for a failed job) get nothing.
FAKE_SACCT = """\
import json, os, sys
from pathlib import Path

state, argv = Path(os.environ["FAKE_SLURM_DIR"]), sys.argv[1:]
with open(state / "sacct.jsonl", "a") as f:
    f.write(json.dumps(argv) + "\\n")
if "--name" in argv:
    jobs = state / "jobs.tsv"
    for line in jobs.read_text().splitlines() if jobs.exists() else []:
        jobid, name, job_state = line.split("\\t")
        if name == argv[argv.index("--name") + 1]:
            print(f"{jobid}|{job_state}")
"""
# squeue --format=%i|%T --states=all --noheader --name <run id>: as sacct (the plugin falls back to it).
FAKE_SQUEUE = FAKE_SACCT.replace("sacct.jsonl", "squeue.jsonl")
# srun <options> <command...>: the job step, run in place (its options recorded).
FAKE_SRUN = """\
#!/bin/sh
echo "$@" >> "$FAKE_SLURM_DIR/srun.log"
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
exec "$@"
"""


def write_bin(folder: Path, scripts: dict[str, str]) -> Path:
    """Executables ``name: text`` in ``folder`` (Python, unless the text starts with a #! line)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text if text.startswith("#!") else f"#!{sys.executable}\n{text}")
        path.chmod(0o755)
    return folder


def run_snakemake(workdir: Path, *args: str, config: Path, env: dict[str, str], timeout: int = 300):
    """The repository's Snakefile in ``workdir`` (also the current directory), with ``args`` (a profile)."""
    cmd = ["snakemake", *args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd.append(f"--configfile={config}")
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def clean_env(bin_folder: Path, **extra: str) -> dict[str, str]:
    """This environment with ``bin_folder`` first on PATH, no REBEL_SLURM_*/REBEL_GPUS/SLURM_* variables, ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REBEL_SLURM_", "SLURM_", "SBATCH_")) and k not in {"REBEL_GPUS", "CUDA_VISIBLE_DEVICES"}
    }
    env["PATH"] = f"{bin_folder}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def planned_jobs(output: str) -> list[dict]:
    """The jobs a dry run prints: rule, wildcards, threads and resources (values as int where they are)."""
    jobs: list[dict] = []
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            jobs.append({"rule": line.split()[1][:-1], "threads": 1, "resources": {}, "wildcards": ""})
        elif jobs and line.startswith("    threads: "):
            jobs[-1]["threads"] = int(line.split(": ", 1)[1])
        elif jobs and line.startswith("    wildcards: "):
            jobs[-1]["wildcards"] = line.split(": ", 1)[1]
        elif jobs and line.startswith("    resources: "):
            for item in line.split(": ", 1)[1].split(", "):
                key, _, value = item.partition("=")
                jobs[-1]["resources"][key] = int(value) if value.isdigit() else value
    return jobs


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    """A dry run of Table 1 of tldr-1.4b through the SLURM profile in an empty folder, with an sbatch and an srun
    first on PATH that fail and leave a mark when called."""
    root = tmp_path_factory.mktemp("slurm_dry_run")
    marks = root / "called"
    failing = f'#!/bin/sh\necho "$0 $*" >> "{marks}"\necho "no SLURM here" >&2\nexit 1\n'
    bin_folder = write_bin(root / "bin", {"sbatch": failing, "srun": failing})
    workdir = root / "work"
    workdir.mkdir()
    env = clean_env(bin_folder, REBEL_SLURM_PARTITION="gpu-test")
    args = ["-n", "tables/table1.csv", "--profile", str(SLURM_PROFILE)]
    result = run_snakemake(workdir, *args, config=TLDR_14B, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return {"output": output, "jobs": planned_jobs(result.stdout), "marks": marks, "workdir": workdir}


def test_slurm_dry_run_shows_each_jobs_request(paper_dry_run):
    jobs, output = paper_dry_run["jobs"], paper_dry_run["output"]
    assert not paper_dry_run["marks"].exists(), f"a SLURM command was called: {paper_dry_run['marks'].read_text()}"
    assert "Using profile" in output and "slurm" in output
    assert not list(paper_dry_run["workdir"].glob("results")), "a dry run wrote results"

    config = effective_config([TLDR_14B], None)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    # 7 algorithms x 3 seeds (DPO trains offline, through the same rule).
    assert len(by_rule["train"]) == len(config["algorithms"]) * len(config["seeds"]) == 21
    assert {j["wildcards"] for j in by_rule["train"]} == {
        f"algorithm={a}, seed={s}" for a in config["algorithms"] for s in config["seeds"]
    }
    # What each rule asks: GPUs from the rule (runtime.gpus x runtime.processes = 1 x 8 for train), memory from
    # runtime.mem_mb (rules) or the profile's default, wall time (minutes) and partition from the profile,
    # threads from runtime.threads or the profile's set-threads.
    expected = {
        "train": {"gpu": 8, "mem_mb": 64000, "runtime": 2880, "threads": 8},
        "evaluate": {"gpu": 1, "mem_mb": 64000, "runtime": 240, "threads": 8},
        "sft": {"gpu": 1, "mem_mb": 64000, "runtime": 720, "threads": 8},
        "reward_model": {"gpu": 1, "mem_mb": 64000, "runtime": 720, "threads": 8},
        "data": {"gpu": None, "mem_mb": 8000, "runtime": 120, "threads": 1},
        "table1": {"gpu": None, "mem_mb": 8000, "runtime": 60, "threads": 1},
    }
    assert config["runtime"]["mem_mb"] == 64000 and config["runtime"]["processes"] == 8
    assert set(by_rule) == set(expected)
    for rule, want in expected.items():
        for job in by_rule[rule]:
            got = {
                "gpu": job["resources"].get("gpu"),
                "mem_mb": job["resources"].get("mem_mb"),
                "runtime": job["resources"].get("runtime"),
                "threads": job["threads"],
            }
            assert got == want, f"{rule} {job['wildcards']}: {job['resources']}"
            assert job["resources"].get("slurm_partition") == "gpu-test"
            assert "slurm_account" not in job["resources"]  # REBEL_SLURM_ACCOUNT unset: the plugin guesses
    assert len(jobs) == 49


def test_the_plugin_turns_a_train_job_into_these_sbatch_flags(paper_dry_run):
    """The resources of one planned train job through the plugin's own sbatch builder (no SLURM command runs)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    class Job:
        def __init__(self, planned):
            self.resources = Resources(planned["resources"])
            self.threads = planned["threads"]

    planned = next(j for j in paper_dry_run["jobs"] if j["rule"] == "train")
    job = Job(planned)
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": "log/%j.log",
        "comment_str": "rule_train",
        "account": "",
        "partition": f" -p {shlex.quote(job.resources.slurm_partition)}",
        "workdir": "/work",
    }
    flags = shlex.split(get_submit_command(job, params) + set_gres_string(job))
    assert flags[0] == "sbatch" and "--parsable" in flags
    assert flags[flags.index("-t") + 1] == "2880"
    assert flags[flags.index("--mem") + 1] == "64000"
    assert flags[flags.index("-p") + 1] == "gpu-test"
    assert "--cpus-per-task=8" in flags and "--gpus=8" in flags
    assert not any(f.startswith("--ntasks") for f in flags)  # a GPU job: no task count unless asked


@pytest.mark.slow
def test_slurm_submission_through_stand_ins(tmp_path):
    """One smoke job (the data rule) submitted with the profile: sbatch's flags, the job run, its state read back."""
    state = tmp_path / "slurm"
    state.mkdir()
    bin_folder = write_bin(
        tmp_path / "bin",
        {
            "sbatch": FAKE_SBATCH,
            "sacct": FAKE_SACCT,
            "squeue": FAKE_SQUEUE,
            "srun": FAKE_SRUN,
            "sinfo": "#!/bin/sh\necho PARTITION\necho 'default-partition*'\n",
            "scontrol": "#!/bin/sh\necho 'MaxArraySize            = 1001'\n",
            "sacctmgr": "#!/bin/sh\necho test-account\n",  # the accounts of the user, checked against -A
        },
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = clean_env(
        bin_folder,
        FAKE_SLURM_DIR=str(state),
        REBEL_SLURM_PARTITION="test-partition",
        REBEL_SLURM_ACCOUNT="test-account",
    )
    # First status check after 1 s instead of the plugin's 40 (the stand-in's jobs are done when submitted).
    args = ["results/smoke/data/stats.json", "--profile", str(SLURM_PROFILE)]
    result = run_snakemake(workdir, *args, "--slurm-init-seconds-before-status-checks", "1", config=SMOKE, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "1 of 1 steps (100%) done" in output

    # The job ran: the data rule's outputs exist.
    stats = json.loads((workdir / "results/smoke/data/stats.json").read_text())
    assert stats and (workdir / "results/smoke/data/tokenizer/tokenizer.json").is_file()

    # One sbatch call, for the one job, with the profile's and the rule's resources as flags.
    calls = [json.loads(line) for line in (state / "sbatch.jsonl").read_text().splitlines()]
    assert len(calls) == 1
    argv, script = calls[0]["argv"], calls[0]["script"]

    def flag(name):
        return argv[argv.index(name) + 1]

    assert "--parsable" in argv and "--export=ALL" in argv
    assert flag("-p") == "test-partition"  # default-resources slurm_partition from REBEL_SLURM_PARTITION
    assert flag("-A") == "test-account"  # slurm_account from REBEL_SLURM_ACCOUNT
    assert flag("-t") == "120"  # set-resources data: runtime (minutes)
    assert flag("--mem") == "8000"  # default-resources mem_mb (the data rule sets none)
    assert "--cpus-per-task=1" in argv and "--ntasks=1" in argv  # the rule's one thread
    assert not any(a.startswith(("--gpus", "--gres")) for a in argv)  # smoke: runtime.gpus 0
    assert flag("-D") == str(workdir)
    assert flag("--comment") == "rule_data"
    assert f"has been submitted with SLURM jobid {calls[0]['jobid']}" in output

    # The job's command: Snakemake for that one job, through the jobstep executor (srun), installing nothing.
    job = shlex.split(script)
    assert job[:3] == [sys.executable, "-m", "snakemake"]
    assert job[job.index("--target-jobs") + 1] == "data:"
    assert job[job.index("--executor") + 1] == "slurm-jobstep"
    assert not {"--use-conda", "--software-deployment-method", "--sdm", "--deploy-sources"} & set(job)
    steps = (state / "srun.log").read_text().splitlines()
    assert len(steps) == 1 and "--cpus-per-task=1" in steps[0].split()

    # The state came from sacct, asked by the run's job name.
    queries = [json.loads(line) for line in (state / "sacct.jsonl").read_text().splitlines()]
    assert any(q[q.index("--name") + 1] == flag("--job-name") for q in queries if "--name" in q)


def test_local_profile_limits_gpus(tmp_path):
    """The local profile's GPU limit: REBEL_GPUS here; a job asking more is capped to it (Snakemake)."""
    bin_folder = write_bin(tmp_path / "bin", {})
    env = clean_env(bin_folder, REBEL_GPUS="2")
    args = ["-n", "results/tldr-1.4b/dpo/seed1/run.json", "--profile", str(LOCAL_PROFILE)]
    result = run_snakemake(tmp_path, *args, config=TLDR_14B, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    gpus = {job["rule"]: job["resources"].get("gpu") for job in planned_jobs(result.stdout)}
    assert gpus == {"data": None, "sft": 1, "reward_model": 1, "train": 2}
