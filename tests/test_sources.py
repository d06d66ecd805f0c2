"""Rollout sources (rebel.sources): what each algorithm declares, and the self-play source, which the smoke
pipeline does not run, on tiny random models."""

from types import SimpleNamespace

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from rebel import models as M
from rebel.algorithms import build_algorithm
from rebel.algorithms.base import Algorithm
from rebel.errors import HarnessError
from rebel.sources import PreferencePairs, ScoredSamples, SelfPlay, ValueModel

PAD, EOS = 0, 1
PROMPTS, K, LENGTH = 2, 2, 4


def test_algorithms_declare_their_source_and_critic():
    def build(name, **params):
        return build_algorithm(name, {"algorithm_params": {name: params}})

    dpo, ppo, rebel, self_play = build("dpo"), build("ppo"), build("rebel"), build("rebel", self_play=True)
    assert (dpo.source, ppo.source, rebel.source, self_play.source) == (
        PreferencePairs,
        ScoredSamples,
        ScoredSamples,
        SelfPlay,
    )
    assert type(self_play).source is ScoredSamples  # the mode is the instance's, from its Params
    assert (ppo.value_model, dpo.value_model) == (ValueModel, None)
    # Derived, on the class and its instances, for the modules that read them (eval.search, rebel.bandit).
    assert type(dpo).offline and dpo.offline and not (ppo.offline or self_play.offline)
    assert type(ppo).needs_value_model and not (dpo.needs_value_model or rebel.needs_value_model)
    cfg = {"policy": {"temperature": 0.7}}
    assert [s.logprob_temperature(cfg) for s in (ScoredSamples, SelfPlay, PreferencePairs)] == [0.7, 0.7, 1.0]


def test_a_derived_attribute_cannot_be_declared():
    with pytest.raises(TypeError, match="'offline' follows from the declarations; set 'source = PreferencePairs'"):
        type("Legacy", (Algorithm,), {"offline": True, "loss": lambda self, logprobs, batch, values=None: None})


def _model() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=16,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=32,
            max_position_embeddings=16,
            pad_token_id=PAD,
            eos_token_id=EOS,
        )
    )


class Replies:
    """A generation backend that answers with fixed rows: per prompt, k samples and the opponent."""

    responses = torch.tensor(
        [
            [5, 6, EOS, 7],
            [8, EOS, 9, 9],
            [10, 11, 12, 13],  # prompt 0: no EOS in the opponent
            [5, 5, 5, 5],
            [6, EOS, 2, 2],
            [7, 8, EOS, 3],
        ]
    )  # prompt 1: no EOS in the first

    def generate(self, model, prompt_ids, prompt_mask, *, temperature, max_new_tokens):
        return self.responses


def test_self_play_scores_each_sample_by_preference_against_its_prompts_opponent():
    cfg = {
        "policy": {"temperature": 0.7, "missing_eos_penalty": -1.0, "kl_coef": 0.05},
        "runtime": {"rollout_batch_size": 8},
        "data": {"response_length": LENGTH},
    }
    tokenizer = SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD, decode=lambda ids: " ".join(map(str, ids)))
    asked = []

    def oracle(rows, a, b):
        asked.append((rows, a, b))
        return torch.tensor([1.0, 0.0, 0.5, 1.0])

    algorithm = build_algorithm("rebel", {"algorithm_params": {"rebel": {"self_play": True}}})
    policy = _model()
    load = dict(backend=Replies(), load_reward_model=None)
    with pytest.raises(HarnessError, match="self-play needs a preference oracle"):
        algorithm.source.load(cfg, algorithm, M.Reference(policy, None), torch.device("cpu"), preference=None, **load)
    source = algorithm.source.load(
        cfg, algorithm, M.Reference(policy, _model()), torch.device("cpu"), preference=oracle, **load
    )
    rows = [{"id": "a"}, {"id": "b"}]
    timings = {}
    rollout = source.collect(
        policy,
        (torch.tensor([[2, 3], [3, 4]]), torch.ones(2, 2, dtype=torch.long)),
        tokenizer=tokenizer,
        timings=timings,
        rows=rows,
    )

    own = [0, 1, 3, 4]  # the opponents (rows 2 and 5) are dropped
    assert asked == [
        (
            [rows[0], rows[0], rows[1], rows[1]],
            ["5 6", "8", "5 5 5 5", "6"],
            ["10 11 12 13", "10 11 12 13", "7 8", "7 8"],
        )
    ]
    assert rollout.samples_per_prompt == K
    assert rollout.response_ids[:, 0].tolist() == Replies.responses[own, 0].tolist()
    assert rollout.scores.tolist() == [1.0, -1.0, -1.0, 1.0]  # 2 P(y ≻ y'') − 1, Γ = −1 without EOS
    torch.testing.assert_close(rollout.rewards, rollout.scores)  # π_t = π_0: no KL penalty yet
    assert {"generation_seconds", "judging_seconds", "scoring_seconds"} <= set(timings)

    means, spent = source.metrics(rollout, rows, tokenizer=tokenizer)
    assert means["preference_score"] == 0.0 and {"preference_score_var", "kl_preference_score_cov"} <= set(means)
    assert "rm_score" not in means
    assert spent == {
        "generations": PROMPTS * (K + 1),
        "generated_tokens": PROMPTS * (K + 1) * LENGTH,
        "preference_queries": PROMPTS * K,
    }


def test_self_play_without_a_judge_fails_before_anything_loads(tmp_path):
    from rebel.config import load_config
    from rebel.loop import train_online
    from rebel.paths import CONFIG_DIR

    cfg = load_config(CONFIG_DIR / "smoke.yaml")
    cfg["algorithm_params"]["rebel"] = {"self_play": True}
    missing = tmp_path / "absent"  # no data, SFT or reward model: the check comes first
    with pytest.raises(HarnessError, match="algorithm 'rebel' with the SelfPlay source needs a preference oracle"):
        train_online(cfg, "rebel", 1, data_dir=missing, sft_ref=missing, rm_ref=missing, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
