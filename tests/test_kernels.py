"""Kernel paths (rebel/kernels.py) and pinned checkpoints: the two guards of cross-machine reproducibility."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, SMOKE

from rebel import kernels
from rebel import models as M
from rebel.config import load_config
from rebel.errors import HarnessError

PROBE = (
    "import hashlib, torch\n"
    "torch.manual_seed(0); torch.set_num_threads(1)\n"
    "x = torch.randn(256, 96)\n"
    "y = torch.nn.functional.layer_norm(x @ torch.randn(96, 96), (96,)).softmax(-1)\n"
    "print(torch.backends.cpu.get_cpu_capability(), hashlib.sha256(y.numpy().tobytes()).hexdigest())\n"
)

needs_avx2 = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="the portable path needs an x86-64 CPU with AVX2",
)


def _config(tmp_path, path):
    config = yaml.safe_load(SMOKE.read_text())
    config["runtime"]["cpu_kernels"] = path
    file = tmp_path / f"{path}.yaml"
    file.write_text(yaml.safe_dump(config))
    return file


def _probe(tmp_path, path):
    """Capability and result hash of a small float32 computation in a fresh process pinned by the CLI's rule."""
    code = (
        f"from rebel.kernels import pin_from_argv; pin_from_argv(['--config', {str(_config(tmp_path, path))!r}])\n"
        + PROBE
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return out.stdout.split()


@needs_avx2
def test_the_config_pins_the_kernel_path_before_torch_loads_and_paths_give_different_bits(tmp_path):
    portable, scalar = _probe(tmp_path, "portable"), _probe(tmp_path, "scalar")
    assert portable[0] == "AVX2" and scalar[0] == "DEFAULT"
    assert portable[1] != scalar[1]  # the check compares genuinely different floating-point paths
    assert _probe(tmp_path, "portable") == portable  # and each path is deterministic


def test_active_refuses_a_process_whose_torch_runs_other_kernels():
    other = "scalar" if torch.backends.cpu.get_cpu_capability() != "DEFAULT" else "portable"
    with pytest.raises(HarnessError, match=f"runtime.cpu_kernels is '{other}' but PyTorch runs its"):
        kernels.active(other)
    assert kernels.active("native")["cpu_kernels"] == "native"
    with pytest.raises(ValueError, match="unknown kernel path 'avx9'; expected one of native, portable, exact, scalar"):
        kernels.environment("avx9")


def test_a_bad_kernel_path_in_a_config_is_a_one_line_error(tmp_path):
    config = yaml.safe_load(SMOKE.read_text())
    config["runtime"]["cpu_kernels"] = "fast"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rebel",
            "data",
            "--config",
            str(tmp_path / "bad.yaml"),
            "--out",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"config error: {tmp_path / 'bad.yaml'}: key 'runtime.cpu_kernels': 'fast' is not one of "
        "['native', 'portable', 'exact', 'scalar']"
    ]


def test_the_embedded_config_pins_its_sft_and_reward_model_by_sha256():
    cfg = load_config()
    for key in ("sft", "reward_model"):
        ref = cfg[key]["pretrained"]
        resolved = M.verify_pinned(ref, f"{key}.pretrained")
        assert M.file_sha256(REPO / ref["path"] / M.WEIGHTS_FILE) == ref["sha256"]
        assert resolved["path"] == str((REPO / ref["path"]).resolve())


def test_a_changed_pinned_checkpoint_is_refused_in_one_line(tmp_path):
    shutil.copytree(REPO / "workflow/resources/embedded/rm", tmp_path / "rm")
    ref = {"path": str(tmp_path / "rm"), "sha256": load_config()["reward_model"]["pretrained"]["sha256"]}
    M.verify_pinned(ref, "reward_model.pretrained")
    weights = tmp_path / "rm" / M.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(
        HarnessError,
        match=r"^key 'reward_model.pretrained.sha256': '.*model.safetensors' has "
        r"SHA-256 [0-9a-f]{64}, the config pins [0-9a-f]{64}; restore the file or "
        r"set 'reward_model.pretrained: null' to train it$",
    ):
        M.verify_pinned(ref, "reward_model.pretrained")
    with pytest.raises(HarnessError, match="pinned checkpoint '.*' not found"):
        M.verify_pinned({"path": str(tmp_path / "nowhere"), "sha256": ref["sha256"]}, "sft.pretrained")


def test_a_pinned_model_trained_with_another_tokenizer_is_refused(tmp_path):
    from rebel.supervised import _check_tokenizer

    data = tmp_path / "data" / "tokenizer"
    data.mkdir(parents=True)
    (data / "tokenizer.json").write_text(json.dumps({"model": "another"}))
    with pytest.raises(HarnessError, match="was trained with another tokenizer than"):
        _check_tokenizer({"path": str(REPO / "workflow/resources/embedded/sft")}, tmp_path / "data", "sft.pretrained")
