"""Every shipped config validates; bad configs fail at once with one line naming the key."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rebel.config import CONFIG_DIR, ConfigError, load_config, validate

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


def test_default_config_is_embedded():
    assert load_config(None)["name"] == "embedded"


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["policy"].update(learning_rate=1e-3), "unknown key 'policy.learning_rate'; allowed keys here: adam_eps"),
    (lambda c: c.update(extra=1), "unknown key 'extra'"),
    (lambda c: c["policy"].update(lr="fast"), "key 'policy.lr': 'fast' is not of type 'number'"),
    (lambda c: c["policy"].update(iterations=0), "key 'policy.iterations': 0 is less than the minimum of 1"),
    (lambda c: c["policy"].pop("kl_coef"), "key 'policy' is missing 'kl_coef'"),
    (lambda c: c["data"].update(source="web"), "key 'data.source': 'web' is not one of ['synthetic', 'hub']"),
    (lambda c: c.update(algorithms=["rebel", "ppo2"]), "key 'algorithms': unknown algorithm 'ppo2'; registered: dpo, iterative_dpo, ppo, rebel, reinforce, rloo_k2, rloo_k4"),
    (lambda c: c["algorithm_params"].update(rebel={"eta": -1}), "key 'algorithm_params.rebel': eta must be > 0"),
    (lambda c: c["algorithm_params"].update(rebel={"beta": 1}), "key 'algorithm_params.rebel': unknown hyperparameter 'beta'"),
    (lambda c: c["algorithm_params"].update(sppo={}), "key 'algorithm_params.sppo' names an algorithm not in 'algorithms'"),
    (lambda c: c["policy_overrides"].update(sppo={"lr": 1e-3}), "key 'policy_overrides.sppo' names an algorithm not in 'algorithms'"),
    (lambda c: c["policy_overrides"].update(rebel={"kl_coef": 0.5}), "unknown key 'policy_overrides.rebel.kl_coef'; allowed keys here: adam_eps, lr, minibatch_prompts"),
    (lambda c: c["algorithm_params"].update(dpo={"epochs": 0}), "key 'algorithm_params.dpo': epochs must be > 0"),
    (lambda c: c["search"].update(seed=1), "key 'search.seed': 1 is one of 'seeds'; the search must not select on the reported runs"),
    (lambda c: c["policy"].update(reward_model_calls=0), "key 'policy.reward_model_calls': 0 is less than the minimum of 1"),
    (lambda c: c["data"].update(source="hub", hub=yaml.safe_load((CONFIG_DIR / "tldr-1.4b.yaml").read_text())["data"]["hub"]),
     "key 'eval.judge.type': 'gold' needs data.source 'synthetic'"),
    (lambda c: c["model"]["base"].update(id="EleutherAI/pythia-1.4b-deduped"), "unknown key 'model.base.id'"),
])
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
    result = subprocess.run([sys.executable, "-m", "rebel", "data", "--config", str(_bad_config_file(tmp_path, smoke)),
                             "--out", str(tmp_path / "data")], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"config error: {tmp_path / 'bad.yaml'}: unknown key 'policy.temprature'; "
                               "allowed keys here: adam_eps, checkpoint_every,")
    assert not (tmp_path / "data").exists()


def test_snakemake_rejects_bad_config_before_any_job(tmp_path, smoke):
    result = subprocess.run(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                             "--configfile", str(_bad_config_file(tmp_path, smoke)), "--cores", "1", "-n"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "config error: config: unknown key 'policy.temprature'" in result.stderr
    assert not (tmp_path / "results").exists()


def test_snakemake_config_overrides_apply_on_top_of_the_default(tmp_path):
    """Without --configfile, --config values are merged into the embedded default, then validated."""
    def dry_run(*override):
        return subprocess.run(["snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                               "--cores", "1", "-n", "--config", *override], capture_output=True, text=True)

    good = dry_run("name=embedded-renamed")
    assert good.returncode == 0, good.stderr
    written = yaml.safe_load((tmp_path / "results" / "embedded-renamed" / "config.yaml").read_text())
    assert written == {**load_config(None), "name": "embedded-renamed"}
    bad = dry_run('policy={"temprature": 0.7}')
    assert bad.returncode != 0
    assert "config error: config: unknown key 'policy.temprature'" in bad.stderr
    # Nested values are typed as in a config file (Snakemake alone would pin the path 'null' and seed '1').
    typed = dry_run("name=typed", "seeds=[1, 2]", "sft={pretrained: null}", "policy={lr: 1e-3}")
    assert typed.returncode == 0, typed.stderr
    written = yaml.safe_load((tmp_path / "results" / "typed" / "config.yaml").read_text())
    assert written["seeds"] == [1, 2] and written["sft"]["pretrained"] is None
    assert written["policy"]["lr"] == 1e-3
    assert written["sft"]["epochs"] == load_config(None)["sft"]["epochs"]  # merged key by key


def test_cli_rejects_unknown_algorithm_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rebel", "train", "--config", str(CONFIG_DIR / "smoke.yaml"),
                             "--data", str(tmp_path), "--sft", str(tmp_path), "--rm", str(tmp_path),
                             "--algorithm", "ppo2", "--seed", "1", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown algorithm 'ppo2'; registered: dpo, iterative_dpo, ppo, rebel, reinforce, rloo_k2, rloo_k4 "
        "(or name one by import path 'module:Class')"]
    assert not (tmp_path / "out").exists()
