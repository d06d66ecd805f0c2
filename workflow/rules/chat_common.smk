# The chat setting's configs, paths and input functions (rules: chat.smk; docs/chat-training.md): each table's config
# (config key `chat`) of the main schema, the run whose data and models a run uses, the policies a table reports.
import json

from rebel.config import read_config_file
from rebel.paths import REPO_ROOT

CHAT_FILES = {table: str(REPO_ROOT / path) for table, path in (config["chat"] or {}).items()}
try:
    CHAT_CFG = {table: validate(read_config_file(path), path, resolve=False) for table, path in CHAT_FILES.items()}
except ConfigError as exc:
    sys.exit(f"config error: {exc}")
CHAT_RUNS = {cfg["name"]: table for table, cfg in CHAT_CFG.items()}
CHAT_TARGETS = {"table2": ["tables/table2.csv", "figures/fig7.png"], "table3": ["tables/table3.csv"]}
SHARED_STAGES = ("data", "model", "sft", "reward_model")


def _chat(wildcards):
    return CHAT_CFG[CHAT_RUNS[wildcards.chat_run]]


def _chat_file(wildcards):
    return CHAT_FILES[CHAT_RUNS[wildcards.chat_run]]


def chat_base(name):
    """The run whose data, SFT policy and reward model a chat run uses: Table 2's when Table 3's config has the
    same data, model, SFT and reward-model settings (the embedded configs), else its own."""
    cfg, first = CHAT_CFG[CHAT_RUNS[name]], CHAT_CFG.get("table2")
    if first is not None and all(cfg[k] == first[k] for k in SHARED_STAGES):
        return f"results/{first['name']}"
    return f"results/{name}"


def chat_iterations(cfg, algorithm):
    """The policy snapshots of an algorithm's run: every ``policy.snapshot_every``-th iteration, and the last."""
    pol = policy_settings(cfg, algorithm)["policy"]
    every, last = pol.get("snapshot_every"), pol["iterations"]
    return [*range(every, last, every), last] if every else [last]


def chat_policies(cfg):
    """Every policy a chat table reports, as a path below the run: sft, <algorithm>/seed<k> (or, for an online
    algorithm with snapshots, <algorithm>/seed<k>/iter<t>), external/<label>."""
    policies, offline = ["sft"], offline_algorithms(cfg)
    for algorithm in cfg["algorithms"]:
        for seed in cfg["seeds"]:
            if policy_settings(cfg, algorithm)["policy"].get("snapshot_every") and algorithm not in offline:
                policies += [f"{algorithm}/seed{seed}/iter{t}" for t in chat_iterations(cfg, algorithm)]
            else:
                policies.append(f"{algorithm}/seed{seed}")
    return policies + [f"external/{label}" for label in cfg["chat_eval"].get("external_policies", {})]


def chat_policy_ref(wildcards):
    """The model.json of a policy path (chat_policies); a snapshot's is written by its run's job, not a rule's
    output, so a job that reads it depends on the run (chat_policy_job)."""
    name, policy = wildcards.chat_run, wildcards.chat_policy
    base = chat_base(name)
    if policy == "sft":
        return f"{base}/sft/model.json"
    if policy.startswith("external/"):
        return f"results/{name}/{policy}/model.json"
    algorithm, seed, *snapshot = policy.split("/")
    run = f"results/{name}/{algorithm}/{seed}"
    if snapshot and int(snapshot[0].removeprefix("iter")) != chat_iterations(_chat(wildcards), algorithm)[-1]:
        return f"{run}/{snapshot[0]}/policy/model.json"
    return f"{run}/policy/model.json"


def chat_policy_job(wildcards):
    """What a job reading a policy waits for: its model.json, or for a snapshot its run's run.json."""
    ref = chat_policy_ref(wildcards)
    return str(Path(ref).parents[2] / "run.json") if Path(ref).parent.parent.name.startswith("iter") else ref


def chat_pairs(wildcards):
    """An offline algorithm's preference pairs: those another run of the same seed recorded (``offline_pairs``:
    DPO on REBEL's iteration-1 pairs, Table 3), as ``(the run's run.json, the pairs file)``; else none (the
    data set's pairs)."""
    cfg = _chat(wildcards)
    source = cfg.get("offline_pairs")
    if source is None or wildcards.chat_algorithm not in offline_algorithms(cfg):
        return None
    run = f"results/{wildcards.chat_run}/{source['algorithm']}/seed{wildcards.chat_seed}"
    return f"{run}/run.json", f"{run}/pairs/iter{source['iteration']}.jsonl"


def offline_algorithms(cfg):
    from eval.search import online_algorithms  # loads the algorithm classes: only when a job needs the list

    return [a for a in cfg["algorithms"] if a not in online_algorithms(cfg)]


def chat_stage(name, wildcards):
    return f"python -m rebel {name} --config {_chat_file(wildcards)}"


def chat_policy_name(wildcards):
    """A policy path as one word (its run name in the annotations)."""
    return re.sub(r"\W", "_", wildcards.chat_policy)


def chat_report_inputs(table):
    cfg = CHAT_CFG[table]
    root = f"{REPORT_ROOT}/{cfg['name']}"
    return [f"{root}/{policy}/{name}" for policy in chat_policies(cfg)
            for name in ("chat/alpaca_eval.json", "chat/mt_bench.json", "chat/arena_hard.json", "leaderboard.json")]
