"""Command line of every pipeline stage: the same commands Snakemake runs, usable by hand.

    python -m rebel data         --config C --out results/N/data
    python -m rebel sft          --config C --data D --out results/N/sft
    python -m rebel reward-model --config C --data D --sft results/N/sft/model.json --out results/N/rm
    python -m rebel train        --config C --data D --sft ... --rm ... --algorithm rebel --seed 1 --out DIR
    python -m rebel evaluate     --config C --data D --sft ... --rm ... --policy DIR/policy/model.json --seed 1 \
                                 --out DIR
    python -m rebel ceiling      --config C --data D --rm ... --seed 1 --out results/N/ceiling/seed1
    python -m rebel leaderboard  --config C --data D --policy DIR/policy/model.json --out DIR
    python -m rebel search-table --config C --results results/N/search --csv tables/search.csv --md tables/search.md
    python -m rebel bandit       --bandit-config workflow/configs/testbed/bandit.yaml --algorithm A \
                                 --out results/bandit/A
    python -m rebel bandit-report --bandit-config F --results results/bandit --csv tables/bandit.csv \
                                  --md tables/bandit.md --png figures/bandit.png
    python -m rebel table6       --config C --results results/N --csv tables/table6.csv --md tables/table6.md
    python -m rebel figure5      --config C --results results/N --algorithms ppo rebel --png figures/fig5.png
    python -m rebel figure6      --config C --results results/N --algorithms rebel --png figures/fig6.png
    python -m rebel curves       --config C --results results/N --algorithms A ... --png figures/curves.png \
                                 --csv tables/curves.csv
    python -m rebel export-cache --results results --out cache
    python -m rebel benchmark    --shape pythia-70m --out results/benchmark/pythia-70m [--algorithms A ...]
    python -m rebel figure2      --benchmarks results/benchmark/pythia-70m/benchmark.json --png figures/fig2.png \
                                 --csv tables/fig2.csv --md tables/fig2.md
    python -m rebel table1       --config C --results results/N --csv tables/table1.csv --md tables/table1.md \
                                 --budget tables/table1_budget.csv
    python -m rebel mt-bench-setup --config C          # real runs: FastChat's MT-Bench questions, once
    python -m rebel chat-sets    --config C --data D --out results/N/chat
    python -m rebel chat-eval    --config C --data D --sets results/N/chat --policy P --seed 1 --name rebel_seed1 \
                                 --out DIR/chat
    python -m rebel table2       --config C --results results/N --csv tables/table2.csv --md tables/table2.md \
                                 --mt-bench-csv tables/mt_bench.csv --png figures/fig7.png
    python -m rebel reproducibility --config C --results-a results/N --results-b DIR/results/N --label-a portable \
                                 --label-b scalar --csv tables/reproducibility.csv --md tables/reproducibility.md \
                                 [--subject backends --algorithms rebel]

The image setting (paper §5.3) reads its own config (workflow/configs/image/, schema image.schema.yaml):

    python -m rebel image-data     --config I --out results/N/data
    python -m rebel image-pretrain --config I --data results/N/data --out results/N/lcm
    python -m rebel image-train    --config I --data D --lcm results/N/lcm/model.json --algorithm rebel --seed 1 \
                                   --out results/N/rebel/seed1
    python -m rebel image-report   --config I --results results/N --csv tables/image.csv --md tables/image.md \
                                   --fig3 figures/fig3.png --fig4 figures/fig4.png
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from rebel.config import load_config, load_image_config
from rebel.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    import torch

# Each stage's code is imported by its handler (:data:`STAGES`) and torch by :func:`_run_stage`, when a
# stage runs: importing this module needs neither. (The parser reads the benchmark stage's shapes and
# default algorithms from rebel.benchmark, which still imports torch at its top.)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (``--lr nan`` and ``--kl-coef inf`` are errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got '{text}'")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rebel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        p.add_argument(
            "--judge-cache",
            type=Path,
            default=None,
            help="judge reply cache folder, shared by a run's jobs (default: OUT/judge_cache)",
        )
        if name == "train":
            p.add_argument("--algorithm", required=True)
            p.add_argument(
                "--lr",
                type=positive_float,
                default=None,
                help="learning rate of this run (the search's grid point; default: the config's)",
            )
            p.add_argument(
                "--kl-coef",
                type=positive_float,
                default=None,
                help="policy.kl_coef γ of this run (the search's grid point; default: the config's)",
            )
            p.add_argument(
                "--prefs",
                type=Path,
                default=None,
                help="preference pairs an offline algorithm trains on instead of DATA/prefs_train.jsonl "
                "(Table 3: DPO on another run's pairs/iter1.jsonl)",
            )
            p.add_argument(
                "--algorithm-param",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override one of algorithm_params.<algorithm> (the η ablation: eta=0.3); repeatable",
            )
        else:
            p.add_argument(
                "--split",
                choices=["test", "val"],
                default="test",
                help="prompts to evaluate on (val: the hyperparameter search)",
            )
    p = stage("ceiling", "data", "rm", "out")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--judge-cache", type=Path, default=None, help="judge reply cache folder (default: OUT/judge_cache)")
    stage("table1", "results", "csv", "md", "budget")
    stage("mt-bench-setup")
    stage("chat-sets", "data", "out")
    p = stage("chat-eval", "data", "sets", "policy", "out")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--name", required=True, help="the policy's name in the annotations (e.g. rebel_seed1)")
    stage("tldr-chat", "results", "csv", "md", "mt-bench-csv", "png")
    stage("chat-table", "results", "csv", "md", "mt-bench-csv", "png")
    stage("search-table", "results", "csv", "md")
    stage("leaderboard", "data", "policy", "out")
    stage("table6", "results", "csv", "md")
    p = stage("reproducibility", "results-a", "results-b", "csv", "md")
    p.add_argument("--label-a", required=True, help="kernel path or generation backend of --results-a (e.g. portable)")
    p.add_argument("--label-b", required=True, help="kernel path or generation backend of --results-b (e.g. scalar)")
    p.add_argument("--subject", choices=["kernels", "backends"], default="kernels", help="what the two runs differ in")
    p.add_argument("--algorithms", nargs="+", default=None, help="compared with SFT (default: the config's)")
    for name in ("figure5", "figure6"):
        stage(name, "results", "png").add_argument("--algorithms", nargs="+", required=True)
    stage("curves", "results", "png", "csv").add_argument("--algorithms", nargs="+", required=True)
    stage("export-cache", "results", "out")
    stage("bandit", "bandit-config", "out").add_argument("--algorithm", required=True)
    stage("bandit-report", "bandit-config", "results", "csv", "md", "png")
    from rebel.benchmark import FIGURE2_ALGORITHMS, SHAPES
    from rebel.paths import CONFIG_DIR

    p = stage("benchmark", "out")
    p.set_defaults(config=CONFIG_DIR / "tldr-2.8b.yaml")  # Figure 2's setting: appendix H.1.5 at 2.8B
    p.add_argument("--shape", required=True, help=f"model shape and workload: {', '.join(SHAPES)}")
    p.add_argument("--algorithms", nargs="+", default=list(FIGURE2_ALGORITHMS))
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default: the shape's)")
    p.add_argument("--iterations", type=int, default=None, help="averaged iterations (default: the shape's)")
    p.add_argument(
        "--repeats", type=int, default=1, help="interleaved rounds over the algorithms (--generation: timed calls)"
    )
    p.add_argument("--prompts", type=int, default=None, help="prompts per iteration (default: the shape's)")
    p.add_argument(
        "--append",
        action="store_true",
        help="add these algorithms to an existing OUT/benchmark.json of the same shape and settings",
    )
    p.add_argument(
        "--generation",
        action="store_true",
        help="instead: generation tokens/s of --backends on the shape's rollout (OUT/generation.json)",
    )
    p.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    stage("image-data", "out")
    stage("image-pretrain", "data", "out")
    p = stage("image-train", "data", "lcm", "out")
    p.add_argument("--algorithm", required=True)
    p.add_argument("--seed", type=int, required=True)
    stage("image-report", "results", "csv", "md", "fig3", "fig4")
    stage("figure2", "png", "csv", "md").add_argument("--benchmarks", type=Path, nargs="+", required=True)
    stage("generation-table", "md").add_argument("--benchmarks", type=Path, nargs="+", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("eval").setLevel(logging.INFO)  # judge calls, tokens and cost
    try:
        if args.stage.startswith("image-"):
            if args.config is None:
                raise ConfigError("--config: an image stage needs an image config (workflow/configs/image/)")
            cfg = load_image_config(args.config)
        else:
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
    """Set the stage's CPU threads and device, then run the stage's handler (:data:`STAGES`)."""
    import torch

    from rebel.models import resolve_device

    torch.set_num_threads(args.threads or cfg["runtime"]["threads"])
    device = resolve_device(cfg["runtime"]["device"])
    STAGES[args.stage](args, cfg, device)


def _data(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.data import prepare_data

    prepare_data(cfg, args.out)


def _sft(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.supervised import train_sft

    train_sft(cfg, args.data, args.out, device)


def _reward_model(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.supervised import train_reward_model

    train_reward_model(cfg, args.data, args.sft, args.out, device)


def _train(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.evaluate import CurveEvaluator
    from eval.judges import gold_sample_monitor, make_judge, preference_oracle
    from rebel.algorithms import build_algorithm
    from rebel.loop import train_online

    monitor = gold_sample_monitor if cfg["data"]["source"] == "synthetic" else None
    if args.lr is not None:
        overrides = cfg["policy_overrides"].get(args.algorithm, {})
        cfg = cfg | {"policy_overrides": cfg["policy_overrides"] | {args.algorithm: overrides | {"lr": args.lr}}}
    if args.kl_coef is not None:
        cfg = cfg | {"policy": cfg["policy"] | {"kl_coef": args.kl_coef}}
    if args.algorithm_param:
        cfg = _with_algorithm_params(cfg, args.algorithm, args.algorithm_param)
    algorithm = build_algorithm(args.algorithm, cfg)  # a named variant with its parameters
    # Only self-play asks the judge during training (an API judge needs its key only then).
    with (
        make_judge(cfg, args.judge_cache or args.out / "judge_cache") if algorithm.self_play else nullcontext()
    ) as judge:
        curve = (
            None
            if cfg["eval"]["curve"]["every"] is None
            else CurveEvaluator(cfg, args.data, args.rm, device, seed=args.seed)
        )
        train_online(
            cfg,
            args.algorithm,
            args.seed,
            data_dir=args.data,
            sft_ref=args.sft,
            rm_ref=args.rm,
            out=args.out,
            monitor=monitor,
            preference=preference_oracle(judge) if judge else None,
            curve=curve,
            data_file=args.prefs,
        )


def _evaluate(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.evaluate import evaluate_policy
    from eval.judges import make_judge

    with make_judge(cfg, args.judge_cache or args.out / "judge_cache") as judge:
        evaluate_policy(
            cfg,
            args.policy,
            seed=args.seed,
            data_dir=args.data,
            sft_ref=args.sft,
            rm_ref=args.rm,
            judge=judge,
            out=args.out,
            split=args.split,
        )


def _ceiling(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.evaluate import evaluate_ceiling
    from eval.judges import make_judge

    with make_judge(cfg, args.judge_cache or args.out / "judge_cache") as judge:
        evaluate_ceiling(cfg, seed=args.seed, data_dir=args.data, rm_ref=args.rm, judge=judge, out=args.out)


def _leaderboard(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.leaderboard import evaluate_leaderboard

    evaluate_leaderboard(cfg, args.policy, args.data, args.out, device)


def _bandit(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.bandit import BanditConfig, write_runs

    write_runs(BanditConfig.load(args.bandit_config), args.algorithm, args.out)


def _bandit_report(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.bandit_report import write_bandit_report
    from rebel.bandit import BanditConfig

    bandit = BanditConfig.load(args.bandit_config)
    write_bandit_report(args.results, list(bandit.algorithms), list(bandit.seeds), args.csv, args.md, args.png)


def _search_table(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.search import write_search_table

    write_search_table(cfg, args.results, args.csv, args.md)


def _table6(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.ablation import write_table6

    write_table6(cfg, args.results, args.csv, args.md)


def _reproducibility(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.reproducibility import write_reproducibility

    runs = args.results_a, args.results_b, args.label_a, args.label_b
    write_reproducibility(cfg, *runs, args.csv, args.md, args.algorithms, args.subject)


def _figure(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    """``figure5`` and ``figure6``: the function of :mod:`eval.figures` named like the stage."""
    from eval import figures

    getattr(figures, args.stage)(cfg, args.results, args.algorithms, args.png)


def _curves(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.curves import write_curves

    write_curves(cfg, args.results, args.algorithms, args.png, args.csv)


def _benchmark(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.benchmark import run_benchmark

    if args.generation:
        from rebel.generation_benchmark import run_generation_benchmark

        run_generation_benchmark(
            cfg, args.shape, args.out, backends=args.backends, repeats=args.repeats, config_name=str(args.config)
        )
        return
    run_benchmark(
        cfg,
        args.shape,
        args.algorithms,
        args.out,
        warmup=args.warmup,
        iterations=args.iterations,
        repeats=args.repeats,
        prompts=args.prompts,
        threads=args.threads,
        config_name=str(args.config),
        append=args.append,
    )


def _figure2(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.benchmark_report import write_figure2

    write_figure2(args.benchmarks, args.png, args.csv, args.md)


def _generation_table(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.generation_benchmark import write_generation_table

    write_generation_table(args.benchmarks, args.md)


def _export_cache(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.cache import export_cache

    print(f"copied {len(export_cache(args.results, args.out))} files to {args.out}")


def _mt_bench_setup(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.mt_bench import FASTCHAT_CACHE, download_fastchat

    download_fastchat(FASTCHAT_CACHE, cfg["chat_eval"]["mt_bench"]["fastchat_commit"])


def _chat_sets(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.chat_eval import write_chat_sets
    from eval.mt_bench import FASTCHAT_CACHE

    write_chat_sets(cfg, args.data, args.out, FASTCHAT_CACHE)


def _chat_eval(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.chat_eval import evaluate_chat

    evaluate_chat(
        cfg, args.policy, seed=args.seed, name=args.name, data_dir=args.data, sets_dir=args.sets, out=args.out
    )


def _tldr_chat(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.table2 import write_table2

    write_table2(cfg, args.results, args.csv, args.md, args.mt_bench_csv, args.png)


def _chat_table(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.chat_tables import write_chat_table

    write_chat_table(cfg, args.results, args.csv, args.md, args.mt_bench_csv, args.png)


def _table1(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.tables import write_table1

    def files(algorithms: list[str], name: str) -> dict:
        return {(a, seed): args.results / a / f"seed{seed}" / name for a in algorithms for seed in cfg["seeds"]}

    ceiling = (
        {seed: args.results / "ceiling" / f"seed{seed}" / "eval.json" for seed in cfg["seeds"]}
        if cfg["data"]["source"] == "synthetic"
        else None
    )
    write_table1(
        cfg,
        files(["sft", *cfg["algorithms"]], "eval.json"),
        files(cfg["algorithms"], "run.json"),
        args.results / "data" / "stats.json",
        args.results / "rm" / "eval.json",
        args.csv,
        args.md,
        args.budget,
        ceiling,
    )


Handler = Callable[[argparse.Namespace, dict, "torch.device"], None]


def _image_data(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from rebel.data import write_jsonl
    from rebel.synthetic_images import embedded_prompts

    prompts = embedded_prompts() if cfg["data"]["prompts"] == "embedded" else cfg["data"]["prompts"]
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "prompts.jsonl", [{"id": f"p{i:03d}", "prompt": p} for i, p in enumerate(prompts)])


def _image_pretrain(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    import torch

    from rebel.data import read_jsonl
    from rebel.image_pretrain import pretrain_lcm

    ref = cfg["model"]["pretrained"]
    if ref is not None:  # a published pipeline: the reference alone (a local path made absolute)
        from rebel.models import write_model_ref
        from rebel.paths import REPO_ROOT

        write_model_ref(args.out / "model.json", {"path": str(REPO_ROOT / ref["path"])} if "path" in ref else ref)
        return
    torch.set_num_threads(cfg["pretrain"]["threads"])
    pretrain_lcm(cfg, [r["prompt"] for r in read_jsonl(args.data / "prompts.jsonl")], args.out)


def _image_train(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.image_eval import ImageCurveEvaluator, ImageEvaluator
    from rebel.algorithms import build_algorithm
    from rebel.config import policy_settings
    from rebel.data import read_jsonl
    from rebel.loop import train_online
    from rebel.models import read_model_ref

    # A curve point every eval.curve.every_reward_queries queries, in this algorithm's iterations.
    pol = policy_settings(cfg, args.algorithm)["policy"]
    per_iteration = pol["prompts_per_iteration"] * build_algorithm(args.algorithm, cfg).samples_per_prompt
    every = cfg["eval"]["curve"]["every_reward_queries"]
    if every % per_iteration:
        raise ConfigError(
            f"key 'eval.curve.every_reward_queries': {every} is not a multiple of {args.algorithm}'s "
            f"{per_iteration} reward queries per iteration"
        )
    cfg = cfg | {"eval": cfg["eval"] | {"curve": {"every": every // per_iteration}}}
    prompts = [r["prompt"] for r in read_jsonl(args.data / "prompts.jsonl")]
    evaluator = ImageEvaluator(cfg, read_model_ref(args.lcm), prompts, device)
    curve = ImageCurveEvaluator(evaluator, min(cfg["figure4"]["prompts"], len(prompts)))
    train_online(
        cfg, args.algorithm, args.seed, data_dir=args.data, sft_ref=args.lcm, rm_ref=None, out=args.out, curve=curve
    )


def _image_report(args: argparse.Namespace, cfg: dict, device: torch.device) -> None:
    from eval.image_report import figure3, figure4, image_table

    image_table(cfg, args.results, args.csv, args.md)
    figure3(cfg, args.results, args.fig3)
    figure4(cfg, args.results, args.fig4)


STAGES: dict[str, Handler] = {
    "data": _data,
    "sft": _sft,
    "reward-model": _reward_model,
    "train": _train,
    "evaluate": _evaluate,
    "ceiling": _ceiling,
    "leaderboard": _leaderboard,
    "bandit": _bandit,
    "bandit-report": _bandit_report,
    "search-table": _search_table,
    "table6": _table6,
    "reproducibility": _reproducibility,
    "figure5": _figure,
    "figure6": _figure,
    "curves": _curves,
    "benchmark": _benchmark,
    "figure2": _figure2,
    "generation-table": _generation_table,
    "export-cache": _export_cache,
    "mt-bench-setup": _mt_bench_setup,
    "chat-sets": _chat_sets,
    "chat-eval": _chat_eval,
    "tldr-chat": _tldr_chat,
    "chat-table": _chat_table,
    "table1": _table1,
    "image-data": _image_data,
    "image-pretrain": _image_pretrain,
    "image-train": _image_train,
    "image-report": _image_report,
}
"""The dispatch table: stage name (as on the command line, :func:`_parser`) -> its handler, called
with the parsed arguments, the validated config and the resolved device."""


def _with_algorithm_params(cfg: dict, algorithm: str, assignments: list[str]) -> dict:
    """``cfg`` with ``algorithm_params.<algorithm>`` updated by ``KEY=VALUE`` pairs (values read as YAML)."""
    import yaml

    from rebel.algorithms import build_algorithm

    params = dict(cfg["algorithm_params"].get(algorithm, {}))
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"--algorithm-param '{assignment}': expected KEY=VALUE, e.g. eta=0.3")
        params[key] = yaml.safe_load(value)
    from rebel.algorithms.base import ParamTypeError

    updated = cfg | {"algorithm_params": cfg["algorithm_params"] | {algorithm: params}}
    try:
        build_algorithm(algorithm, updated)
    except ParamTypeError as exc:
        raise ConfigError(f"--algorithm-param {exc.field} for '{algorithm}': {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--algorithm-param for '{algorithm}': {exc}") from None
    return updated
