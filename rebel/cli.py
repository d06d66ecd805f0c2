"""Command line of every pipeline stage: the same commands Snakemake runs, usable by hand.

    python -m rebel data         --config C --out results/N/data
    python -m rebel sft          --config C --data D --out results/N/sft
    python -m rebel reward-model --config C --data D --sft results/N/sft/model.json --out results/N/rm
    python -m rebel train        --config C --data D --sft ... --rm ... --algorithm rebel --seed 1 --out DIR
    python -m rebel evaluate     --config C --data D --sft ... --rm ... --policy DIR/policy/model.json --seed 1 --out DIR
    python -m rebel search-table --config C --results results/N/search --csv tables/search.csv --md tables/search.md
    python -m rebel bandit       --bandit-config workflow/configs/testbed/bandit.yaml --algorithm A --out results/bandit/A
    python -m rebel bandit-report --bandit-config F --results results/bandit --csv tables/bandit.csv \
                                  --md tables/bandit.md --png figures/bandit.png
    python -m rebel table1       --config C --results results/N --csv tables/table1.csv --md tables/table1.md \
                                 --budget tables/table1_budget.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rebel.config import ConfigError, HarnessError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rebel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)

    def stage(name: str, *paths: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.add_argument("--config", type=Path, default=None, help="config file (default: the embedded config)")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: runtime.threads)")
        for path in paths:
            p.add_argument(f"--{path}", type=Path, required=True)
        return p

    stage("data", "out")
    stage("sft", "data", "out")
    stage("reward-model", "data", "sft", "out")
    for name in ("train", "evaluate"):
        p = stage(name, "data", "sft", "rm", "out", *(["policy"] if name == "evaluate" else []))
        p.add_argument("--seed", type=int, required=True)
        if name == "train":
            p.add_argument("--algorithm", required=True)
            p.add_argument("--lr", type=float, default=None,
                           help="learning rate of this run (the search's grid point; default: the config's)")
        else:
            p.add_argument("--split", choices=["test", "val"], default="test",
                           help="prompts to evaluate on (val: the hyperparameter search)")
    stage("table1", "results", "csv", "md", "budget")
    stage("search-table", "results", "csv", "md")
    stage("bandit", "bandit-config", "out").add_argument("--algorithm", required=True)
    stage("bandit-report", "bandit-config", "results", "csv", "md", "png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        _run_stage(args, cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (HarnessError, FileNotFoundError, NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_stage(args: argparse.Namespace, cfg: dict) -> None:
    torch.set_num_threads(args.threads or cfg["runtime"]["threads"])
    from rebel.models import resolve_device

    device = resolve_device(cfg["runtime"]["device"])
    if args.stage == "data":
        from rebel.data import prepare_data

        prepare_data(cfg, args.out)
    elif args.stage == "sft":
        from rebel.supervised import train_sft

        train_sft(cfg, args.data, args.out, device)
    elif args.stage == "reward-model":
        from rebel.supervised import train_reward_model

        train_reward_model(cfg, args.data, args.sft, args.out, device)
    elif args.stage == "train":
        from eval.judges import gold_sample_monitor, make_judge, preference_oracle
        from rebel.loop import train_online

        synthetic = cfg["data"]["source"] == "synthetic"
        monitor = gold_sample_monitor if synthetic else None
        preference = preference_oracle(make_judge(cfg)) if synthetic else None
        if args.lr is not None:
            overrides = cfg["policy_overrides"].get(args.algorithm, {})
            cfg = cfg | {"policy_overrides": cfg["policy_overrides"] | {args.algorithm: overrides | {"lr": args.lr}}}
        train_online(cfg, args.algorithm, args.seed, data_dir=args.data, sft_ref=args.sft, rm_ref=args.rm,
                     out=args.out, monitor=monitor, preference=preference)
    elif args.stage == "evaluate":
        from eval.evaluate import evaluate_policy
        from eval.judges import make_judge

        evaluate_policy(cfg, args.policy, seed=args.seed, data_dir=args.data, sft_ref=args.sft, rm_ref=args.rm,
                        judge=make_judge(cfg), out=args.out, split=args.split)
    elif args.stage == "bandit":
        from rebel.bandit import BanditConfig, write_runs

        write_runs(BanditConfig.load(args.bandit_config), args.algorithm, args.out)
    elif args.stage == "bandit-report":
        from eval.bandit_report import write_bandit_report
        from rebel.bandit import BanditConfig

        bandit = BanditConfig.load(args.bandit_config)
        write_bandit_report(args.results, list(bandit.algorithms), list(bandit.seeds), args.csv, args.md, args.png)
    elif args.stage == "search-table":
        from eval.search import write_search_table

        write_search_table(cfg, args.results, args.csv, args.md)
    elif args.stage == "table1":
        from eval.tables import write_table1

        def files(algorithms: list[str], name: str) -> dict:
            return {(a, seed): args.results / a / f"seed{seed}" / name for a in algorithms for seed in cfg["seeds"]}

        write_table1(cfg, files(["sft", *cfg["algorithms"]], "eval.json"), files(cfg["algorithms"], "run.json"),
                     args.results / "data" / "stats.json", args.results / "rm" / "eval.json",
                     args.csv, args.md, args.budget)
