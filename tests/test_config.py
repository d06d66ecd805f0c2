"""Every shipped config validates; bad configs fail at once with one line naming the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rebel.config import effective_config, load_config, read_config_file, validate
from rebel.errors import ConfigError
from rebel.paths import CONFIG_DIR

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def smoke() -> dict:
    return yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg["name"] == path.stem


def test_expected_configs_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"embedded", "smoke", "tldr-1.4b", "tldr-2.8b", "tldr-6.9b"}


@pytest.mark.parametrize("size", ["1.4b", "2.8b", "6.9b"])
def test_paper_configs_sample_at_the_reference_codes_temperature(size):
    """The paper's numbers come from the authors' code, which samples at 0.7
    (appendix H.1.5 lists 0.1); log-probs are taken at T, so T also scales η and γ."""
    assert load_config(CONFIG_DIR / f"tldr-{size}.yaml")["policy"]["temperature"] == 0.7


def test_default_config_is_embedded():
    assert load_config(None)["name"] == "embedded"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["policy"].update(learning_rate=1e-3),
            "unknown key 'policy.learning_rate'; allowed keys here: adam_betas, adam_eps",
        ),
        (lambda c: c.update(extra=1), "unknown key 'extra'"),
        (lambda c: c["policy"].update(lr="fast"), "key 'policy.lr': 'fast' is not of type 'number'"),
        (lambda c: c["policy"].update(iterations=0), "key 'policy.iterations': 0 is less than the minimum of 1"),
        (lambda c: c["policy"].pop("kl_coef"), "key 'policy' is missing 'kl_coef'"),
        (lambda c: c["data"].update(source="web"), "key 'data.source': 'web' is not one of ['synthetic', 'hub']"),
        (
            lambda c: c.update(algorithms=["rebel", "ppo2"]),
            "key 'algorithms': unknown algorithm 'ppo2'; "
            "registered: clipped_pg, dpo, iterative_dpo, ppo, rebel, reinforce, rloo, rloo_k2, rloo_k4 (or name one "
            "by import path",
        ),
        (
            lambda c: c.update(variants={"rloo_k8": {"algorithm": "rlo", "k": 8}}),
            "key 'variants.rloo_k8': variant 'rloo_k8' is based on unknown algorithm 'rlo'; "
            "registered: clipped_pg, dpo, iterative_dpo, ppo, rebel, reinforce, rloo (or",
        ),
        (
            lambda c: c.update(variants={"rloo_k8": {"algorithm": "rloo_k4", "k": 8}}),
            "key 'variants.rloo_k8': variant 'rloo_k8' is based on the variant 'rloo_k4'; "
            "a variant's algorithm must be",
        ),
        (
            lambda c: c.update(variants={"rloo_k1": {"algorithm": "rloo", "k": 1}}),
            "key 'variants.rloo_k1': k must be >= 2",
        ),
        (
            lambda c: c.update(variants={"rloo_k8": {"algorithm": "rloo", "k": "8"}}),
            "key 'variants.rloo_k8.k': expected an integer, got '8'",
        ),
        (lambda c: c["algorithm_params"].update(rloo_k4={"k": 1}), "key 'algorithm_params.rloo_k4': k must be >= 2"),
        (lambda c: c["algorithm_params"].update(rebel={"eta": -1}), "key 'algorithm_params.rebel': eta must be > 0"),
        (
            lambda c: c["algorithm_params"].update(rebel={"beta": 1}),
            "key 'algorithm_params.rebel': unknown hyperparameter 'beta'",
        ),
        (
            lambda c: c["algorithm_params"].update(sppo={}),
            "key 'algorithm_params.sppo' names an algorithm not in 'algorithms'",
        ),
        (
            lambda c: c["policy_overrides"].update(sppo={"lr": 1e-3}),
            "key 'policy_overrides.sppo' names an algorithm not in 'algorithms'",
        ),
        (
            lambda c: c["policy_overrides"].update(rebel={"kl_coef": 0.5}),
            "unknown key 'policy_overrides.rebel.kl_coef'; allowed keys here: adam_eps, lr, minibatch_prompts",
        ),
        (lambda c: c["algorithm_params"].update(dpo={"epochs": 0}), "key 'algorithm_params.dpo': epochs must be > 0"),
        (
            lambda c: c["search"].update(seed=1),
            "key 'search.seed': 1 is one of 'seeds'; the search must not select on the reported runs",
        ),
        (
            lambda c: c["policy"].update(reward_model_calls=0),
            "key 'policy.reward_model_calls': 0 is less than the minimum of 1",
        ),
        (
            lambda c: c["data"].update(
                source="hub", hub=read_config_file(CONFIG_DIR / "tldr-1.4b.yaml")["data"]["hub"]
            ),
            "key 'eval.judge.type': 'gold' needs data.source 'synthetic'",
        ),
        (lambda c: c["model"]["base"].update(id="EleutherAI/pythia-1.4b-deduped"), "unknown key 'model.base.id'"),
        (
            lambda c: c["figures"].update(fig5=["dpo", "rebel"]),
            "key 'figures.fig5': 'dpo' is not one of the online algorithms of 'algorithms' "
            "(iterative_dpo, ppo, reinforce, rloo_k2, rloo_k4, rebel)",
        ),
    ],
)
def test_bad_config_is_rejected_with_one_line(smoke, mutate, message):
    cfg = copy.deepcopy(smoke)
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        validate(cfg, "smoke.yaml")
    text = str(info.value)
    assert message in text
    assert text.startswith("smoke.yaml: ") and "\n" not in text


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found; shipped configs: .*embedded"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def _bad_config_file(tmp_path, smoke) -> Path:
    smoke["policy"]["temprature"] = 0.7
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(smoke))
    return path


def test_cli_rejects_bad_config_in_one_line(tmp_path, smoke):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rebel",
            "data",
            "--config",
            str(_bad_config_file(tmp_path, smoke)),
            "--out",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"config error: {tmp_path / 'bad.yaml'}: unknown key 'policy.temprature'; "
        "allowed keys here: adam_betas, adam_eps, checkpoint_every,"
    )
    assert not (tmp_path / "data").exists()


def test_snakemake_rejects_bad_config_before_any_job(tmp_path, smoke):
    result = subprocess.run(
        [
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(_bad_config_file(tmp_path, smoke)),
            "--cores",
            "1",
            "-n",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "config error: config: unknown key 'policy.temprature'" in result.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_config_overrides_apply_on_top_of_the_default(tmp_path):
    """Without --configfile, --config values are merged into the embedded default, then validated; a dry run
    writes nothing (the effective config is written when a run starts)."""

    def dry_run(*override):
        return subprocess.run(
            [
                "snakemake",
                "--snakefile",
                str(REPO / "Snakefile"),
                "--directory",
                str(tmp_path),
                "--cores",
                "1",
                "-n",
                "--config",
                *override,
            ],
            capture_output=True,
            text=True,
        )

    good = dry_run("name=embedded-renamed")
    assert good.returncode == 0, good.stderr
    assert not (tmp_path / "results").exists()
    assert effective_config(None, ["name=embedded-renamed"]) == {**load_config(None), "name": "embedded-renamed"}
    bad = dry_run('policy={"temprature": 0.7}')
    assert bad.returncode != 0
    assert "config error: config: unknown key 'policy.temprature'" in bad.stderr
    # Nested values are typed as in a config file (Snakemake alone would pin the path 'null' and seed '1').
    overrides = ["name=typed", "seeds=[1, 2]", "sft={pretrained: null}", "policy={lr: 1e-3}"]
    assert dry_run(*overrides).returncode == 0
    typed = effective_config(None, overrides)
    assert typed["seeds"] == [1, 2] and typed["sft"]["pretrained"] is None
    assert typed["policy"]["lr"] == 1e-3
    assert typed["sft"]["epochs"] == load_config(None)["sft"]["epochs"]  # merged key by key


def test_cli_rejects_unknown_algorithm_in_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rebel",
            "train",
            "--config",
            str(CONFIG_DIR / "smoke.yaml"),
            "--data",
            str(tmp_path),
            "--sft",
            str(tmp_path),
            "--rm",
            str(tmp_path),
            "--algorithm",
            "ppo2",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown algorithm 'ppo2'; registered: clipped_pg, dpo, iterative_dpo, ppo, rebel, reinforce, rloo, "
        "rloo_k2, rloo_k4 (or name one by import path 'module:Class')"
    ]
    assert not (tmp_path / "out").exists()


# Bad configs that the schema alone lets through. Each case is rejected in one line naming the key and what is
# allowed, before any work starts, by validate(), by `python -m rebel` and by `snakemake -n --configfile=F`.
STILL_GOT_THROUGH = {
    "lr_nan": (lambda c: c["policy"].update(lr=float("nan")), "key 'policy.lr': expected a finite number, got nan"),
    "lr_inf": (lambda c: c["policy"].update(lr=float("inf")), "key 'policy.lr': expected a finite number, got inf"),
    "kl_coef_nan": (
        lambda c: c["policy"].update(kl_coef=float("nan")),
        "key 'policy.kl_coef': expected a finite number, got nan",
    ),
    "search_lr_inf": (
        lambda c: c["search"].update(lr=[1e-3, float("-inf")]),
        "key 'search.lr.1': expected a finite number, got -inf",
    ),
    "eta_string": (
        lambda c: c["algorithm_params"]["rebel"].update(eta="one"),
        "key 'algorithm_params.rebel.eta': expected a number, got 'one'",
    ),
    "eta_bool": (
        lambda c: c["algorithm_params"]["rebel"].update(eta=True),
        "key 'algorithm_params.rebel.eta': expected a number, got True",
    ),
    "dpo_epochs_per_iteration_float": (
        lambda c: c["algorithm_params"]["dpo"].update(epochs_per_iteration=1.5),
        "key 'algorithm_params.dpo.epochs_per_iteration': expected an integer, got 1.5",
    ),
    "ppo_whiten_string": (
        lambda c: c["algorithm_params"].update(ppo={"whiten_advantages": "yes"}),
        "key 'algorithm_params.ppo.whiten_advantages': expected true or false, got 'yes'",
    ),
    "minibatch_over_iteration": (
        lambda c: c["policy"].update(minibatch_prompts=128, prompts_per_iteration=64),
        "key 'policy.minibatch_prompts': 128 is more than policy.prompts_per_iteration (64); allowed: 1 to 64",
    ),
    "override_minibatch_over_iteration": (
        lambda c: c["policy_overrides"].update(dpo={"minibatch_prompts": 32}),
        "key 'policy_overrides.dpo.minibatch_prompts': 32 is more than "
        "policy.prompts_per_iteration (16); allowed: 1 to 16",
    ),
    "eval_n_prompts_over_test_split": (
        lambda c: c["eval"].update(n_prompts=5000),
        "key 'eval.n_prompts': 5000 is more than the 40 prompts of the split (data.synthetic.n_test); allowed: 1 to 40",
    ),
    "curve_n_prompts_over_val_split": (
        lambda c: c["eval"]["curve"].update(n_prompts=41),
        "key 'eval.curve.n_prompts': 41 is more than the 40 prompts of the split "
        "(data.synthetic.n_val); allowed: 1 to 40",
    ),
    "seed_2_70": (
        lambda c: c.update(seeds=[2**70]),
        "key 'seeds.0': 1180591620717411303424 is greater than the maximum of 4294967295",
    ),
    "search_seed_2_32": (
        lambda c: c["search"].update(seed=2**32),
        "key 'search.seed': 4294967296 is greater than the maximum of 4294967295",
    ),
    "data_seed_2_32": (
        lambda c: c["data"].update(seed=2**32),
        "key 'data.seed': 4294967296 is greater than the maximum of 4294967295",
    ),
    "sft_seed_2_40": (
        lambda c: c["sft"].update(seed=2**40),
        "key 'sft.seed': 1099511627776 is greater than the maximum of 4294967295",
    ),
    "reward_model_seed_2_33": (
        lambda c: c["reward_model"].update(seed=2**33),
        "key 'reward_model.seed': 8589934592 is greater than the maximum of 4294967295",
    ),
}
# The snakemake entry point for one case of each kind (each run is a process of about a second).
SNAKEMAKE_CASES = [
    "lr_nan",
    "lr_inf",
    "kl_coef_nan",
    "minibatch_over_iteration",
    "override_minibatch_over_iteration",
    "eval_n_prompts_over_test_split",
    "seed_2_70",
]


def _write_mutated(tmp_path, smoke, case) -> Path:
    mutate, _ = STILL_GOT_THROUGH[case]
    cfg = copy.deepcopy(smoke)
    mutate(cfg)
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("case", STILL_GOT_THROUGH)
def test_bad_config_that_got_through_is_rejected_by_validate(smoke, case):
    mutate, message = STILL_GOT_THROUGH[case]
    cfg = copy.deepcopy(smoke)
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        validate(cfg, "smoke.yaml")
    assert str(info.value) == f"smoke.yaml: {message}"


@pytest.mark.parametrize("case", STILL_GOT_THROUGH)
def test_bad_config_that_got_through_is_rejected_by_the_cli(tmp_path, smoke, case, capsys, monkeypatch):
    from rebel import cli

    def no_stage(*args):
        raise AssertionError("the stage ran on a bad config")

    monkeypatch.setattr(cli, "_run_stage", no_stage)
    path = _write_mutated(tmp_path, smoke, case)
    assert cli.main(["data", "--config", str(path), "--out", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"config error: {path}: {STILL_GOT_THROUGH[case][1]}"]


@pytest.mark.parametrize("case", SNAKEMAKE_CASES)
def test_bad_config_that_got_through_is_rejected_by_snakemake(tmp_path, smoke, case):
    result = subprocess.run(
        [
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            f"--configfile={_write_mutated(tmp_path, smoke, case)}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"config error: config: {STILL_GOT_THROUGH[case][1]}"]
    assert not (tmp_path / "results").exists()


def test_algorithm_param_of_the_wrong_type_is_rejected_by_the_train_command(smoke):
    from rebel.cli import _with_algorithm_params

    with pytest.raises(ConfigError, match=r"^--algorithm-param eta for 'rebel': expected a number, got 'one'$"):
        _with_algorithm_params(smoke, "rebel", ["eta=one"])


def test_non_utf8_config_file_is_one_line_at_the_cli(tmp_path):
    path = tmp_path / "latin1.yaml"
    data = (CONFIG_DIR / "smoke.yaml").read_bytes().replace(b"name: smoke", b"name: caf\xe9")
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(
        ConfigError,
        match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset \d+\); "
        r"a config file must be saved as UTF-8$",
    ):
        load_config(path)
    result = subprocess.run(
        [sys.executable, "-m", "rebel", "data", "--config", str(path), "--out", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"config error: {path}: not UTF-8 text (byte 0xe9 at offset {offset}); a config file must be saved as UTF-8"
    ]
    assert not (tmp_path / "data").exists()


def test_missing_render_from_folder_fails_at_parse_time(tmp_path, smoke):
    smoke["render_from"] = "no/such/dir"
    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump(smoke))
    result = subprocess.run(
        [
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "-n",
            "--cores",
            "1",
            f"--configfile={path}",
            "render",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"config error: config: key 'render_from': folder 'no/such/dir' does not exist (in {tmp_path}); "
        "expected an exported result set (python -m rebel export-cache) or null"
    ]


def test_evaluation_subset_larger_than_its_split_is_an_error(tmp_path, smoke):
    """Other sources than the synthetic task learn their split sizes only from the data stage: the
    evaluation stops in one line instead of silently judging fewer prompts."""
    from eval.evaluate import evaluate_policy, test_subset
    from rebel.errors import HarnessError

    rows = [{"id": i} for i in range(3)]
    assert len(test_subset(rows, 5, 0)) == 3  # without a key: at most n (the search's validation prompts)
    with pytest.raises(
        HarnessError,
        match=r"^eval.n_prompts: 5 is more than the 3 prompts of the test split; "
        r"allowed: 1 to 3$",
    ):
        test_subset(rows, 5, 0, key="eval.n_prompts", split="test")
    (tmp_path / "test.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(3)))
    smoke["eval"]["n_prompts"] = 5
    with pytest.raises(HarnessError, match=r"^eval.n_prompts: 5 is more than the 3 prompts of the test split"):
        evaluate_policy(
            smoke,
            tmp_path / "none",
            seed=1,
            data_dir=tmp_path,
            sft_ref=tmp_path / "none",
            rm_ref=tmp_path / "none",
            judge=None,
            out=tmp_path / "out",
        )  # before any model is loaded


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--kl-coef", "-0.1"), ("--kl-coef", "one")])
def test_non_finite_or_non_positive_search_flags_are_rejected_by_the_train_command(flag, value, capsys):
    from rebel.cli import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(
            [
                "train",
                "--data",
                "d",
                "--sft",
                "s",
                "--rm",
                "r",
                "--out",
                "o",
                "--seed",
                "1",
                "--algorithm",
                "rebel",
                flag,
                value,
            ]
        )
    assert f"argument {flag}: expected a " in capsys.readouterr().err


def test_algorithm_param_of_the_wrong_type_stops_a_snakemake_run_before_any_job(tmp_path, smoke):
    """Parsing checks algorithm names only (no torch); the parameters are checked when the run starts, before
    any job and before the effective config is written."""
    result = subprocess.run(
        [
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            f"--configfile={_write_mutated(tmp_path, smoke, 'eta_string')}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"config error: config: {STILL_GOT_THROUGH['eta_string'][1]}"
    assert not (tmp_path / "results").exists()
