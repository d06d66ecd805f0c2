"""Several training processes make the update of one process on the same global batch.

The multi-process test launches this file under ``torch.distributed.run`` (2 CPU processes,
gloo): each process runs the shared loop's :func:`rebel.loop.run_iteration` on its shard of a
fixed rollout whose shards have very different response lengths, and the trainable weights,
the algorithm's state and the logged statistics after each iteration must equal those of one
process on the whole batch. Every registered algorithm is covered (``CASES``): PPO's critic
trained through DDP (``rebel.models.TokenValueModel``), its advantage whitening over all
processes' tokens, its token-mean losses over the global minibatch (also with LoRA and
``runtime.update_micro_batch_prompts``); REINFORCE's moving-average baseline; the means over
prompts of REBEL, iterative DPO and RLOO (k = 2, and k = 4 in micro-batches of one prompt) on k
different responses per prompt (unequal rewards, lengths and EOS); DPO on fixed preference pairs.
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

from rebel import models as M

PAD, EOS, VOCAB = 0, 1, 32
PROMPTS, KMAX, RESPONSE_LENGTH = 4, 4, 6
# Response tokens of sample j of prompt i (6: no EOS). Shard 0 (prompts 0, 1) has 11, 21 and 37
# tokens with k = 1, 2 and 4 samples per prompt; shard 1 (prompts 2, 3) has 3, 6 and 14.
LENGTHS = [[6, 4, 6, 3], [5, 6, 2, 5], [2, 1, 3, 1], [1, 2, 1, 3]]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query_key_value", "dense_h_to_4h", "dense_4h_to_h"]}
CASES = {  # name: (algorithm, LoRA, micro-batch prompts with 2 processes, iterations)
    "ppo": ("ppo", None, None, 2),
    "ppo_lora_micro": ("ppo", LORA, 1, 2),
    "reinforce": ("reinforce", None, None, 3),
    "rebel": ("rebel", None, None, 2),
    "iterative_dpo": ("iterative_dpo", None, None, 2),
    "rloo_k2": ("rloo_k2", None, None, 2),
    "rloo_k4": ("rloo_k4", None, 1, 2),
    "dpo": ("dpo", None, None, 2),
    "clipped_pg": ("clipped_pg", None, 1, 2),  # the image setting's baseline, here on text rollouts
}


def _model_config() -> GPTNeoXConfig:
    config = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=32,
        rotary_pct=0.25,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=EOS,
        num_labels=1,
    )
    config.reward_offset = 0.25
    return config


def _reward_model() -> GPTNeoXForSequenceClassification:
    torch.manual_seed(1)
    return GPTNeoXForSequenceClassification(_model_config())


def _policy() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(_model_config())


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """4 prompts of 3 tokens (the second left-padded); the last token names the prompt."""
    ids = torch.tensor([[5, 6, 20], [PAD, 7, 21], [8, 9, 22], [10, 11, 23]])
    return ids, (ids != PAD).long()


class FixedResponses:
    """A generation backend that answers sample j of prompt i with a fixed response of ``LENGTHS[i][j]``
    tokens: ``responses[i, j]``."""

    schedules_batches = True  # every row in one call, so that a prompt's k copies are one run in it
    sampled_logprobs = None

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.responses = torch.randint(2, 20, (PROMPTS, KMAX, RESPONSE_LENGTH), generator=g)
        for i, lengths in enumerate(LENGTHS):
            for j, length in enumerate(lengths):
                if length < RESPONSE_LENGTH:
                    self.responses[i, j, length - 1] = EOS

    def generate(self, model, prompt_ids, prompt_mask, *, temperature, max_new_tokens):
        prompts = (prompt_ids[:, -1] - 20).tolist()
        samples = [0] * len(prompts)  # a row's position in the run of its prompt's consecutive copies
        for row in range(1, len(prompts)):
            samples[row] = samples[row - 1] + 1 if prompts[row] == prompts[row - 1] else 0
        return self.responses[prompts, samples]


def _preference_pairs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """DPO's batch (``PreferencePairs.encode``'s format) of these prompts: each prompt twice, its fixed
    samples 0 (chosen) and 1 (rejected) as responses."""
    from rebel.generation import truncate_after_eos

    rows = prompt_ids[:, -1] - 20
    r_ids, r_mask, _ = truncate_after_eos(FixedResponses().responses[rows, :2].flatten(0, 1), EOS, PAD)
    return prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0), r_ids, r_mask


def _cfg(lora, micro) -> dict:
    return {
        "policy": {
            "lora": lora,
            "prompts_per_iteration": PROMPTS,
            "minibatch_prompts": PROMPTS,
            "epochs_per_iteration": 2,
            "lr": 0.05,
            "adam_eps": 1.0,
            "weight_decay": 0.0,
            "schedule": "constant",
            "temperature": 0.7,
            "missing_eos_penalty": -1.0,
            "kl_coef": 0.05,
        },
        "runtime": {"rollout_batch_size": 3, "update_micro_batch_prompts": micro},
        "data": {"response_length": RESPONSE_LENGTH},
        "model": {"dropout": False},
    }


def train(case: str, micro: int | None = None, resume_in: Path | None = None) -> dict:
    """``CASES[case]``'s iterations on this process's shard of the 4 prompts (all of them with one
    process; DPO: their fixed preference pairs): the trainable weights before and after each
    iteration, the algorithm's state and the update's statistics after each (averaged over
    processes, as the loop logs and observes them). With ``resume_in``, the run is checkpointed
    there after the first iteration and rebuilt from it."""
    from accelerate import Accelerator

    from rebel import checkpoint
    from rebel.algorithms import build_algorithm
    from rebel.checkpoint import trainable_state
    from rebel.loop import _reduce, build_run, run_iteration

    name, lora, _, iterations = CASES[case]
    accelerator = Accelerator(cpu=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    algorithm = build_algorithm(name, {})

    def build():
        torch.manual_seed(0)
        return build_run(
            _cfg(lora, micro),
            algorithm,
            iterations,
            accelerator,
            load_policy=_policy,
            load_reward_model=_reward_model,
            backend=FixedResponses(),
        )

    run = build()
    shard = PROMPTS // world
    batch = tuple(t[rank * shard : (rank + 1) * shard] for t in _prompts())
    if algorithm.offline:
        batch = _preference_pairs(*batch)
    k = algorithm.samples_per_prompt
    lengths = [n for row in LENGTHS[rank * shard : (rank + 1) * shard] for n in row[:k]]
    tokenizer = SimpleNamespace(eos_token_id=EOS, pad_token_id=PAD)
    states, algorithm_states, logged = [trainable_state(run.trainable)], [], []
    for iteration in range(iterations):
        generator = torch.Generator().manual_seed(iteration * 10 + rank)
        rollout, stats, _ = run_iteration(run, batch, generator, tokenizer=tokenizer)
        assert rollout.response_mask.sum(-1).tolist() == lengths
        means = _reduce(accelerator, {"reward": rollout.rewards.mean().item(), **stats}, "mean")
        algorithm.observe(means)
        states.append(trainable_state(run.trainable))
        algorithm_states.append(algorithm.state_dict())
        logged.append(means)
        if resume_in is not None and iteration == 0:
            checkpoint.save(resume_in, run.trainable, run.optimizer, run.scheduler, {})
            run = build()
            checkpoint.load(resume_in, run.trainable, run.optimizer, run.scheduler)
    return {"world": world, "states": states, "algorithm_states": algorithm_states, "stats": logged}


def _assert_same_updates(two: dict, one: dict, rtol: float = 1e-4) -> None:
    """Equal weights after every iteration, relative to the size of the single-process update."""
    assert (two["world"], one["world"]) == (2, 1)
    initial = one["states"][0]
    for it, (a, b) in enumerate(zip(two["states"][1:], one["states"][1:]), start=1):
        assert a.keys() == b.keys()
        moved = max((b[n] - initial[n]).abs().max().item() for n in b)
        assert moved > 1e-3, f"iteration {it}: the update is too small to compare"
        worst = max((a[n] - b[n]).abs().max().item() for n in b)
        assert worst <= rtol * moved, (
            f"iteration {it}: weights differ by {worst:.3g} (single-process update {moved:.3g})"
        )
    for a, b in zip(two["algorithm_states"], one["algorithm_states"]):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7) for k in a)
    for a, b in zip(two["stats"], one["stats"]):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a), (a, b)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Every case of ``CASES`` run by 2 processes (one launch); rank 0's results by case."""
    import subprocess

    out = tmp_path_factory.mktemp("distributed")
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        str(out),
    ]
    result = subprocess.run(
        launcher, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return {case: torch.load(out / f"{case}.pt", weights_only=False) for case in CASES}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_update_like_one_process(two_processes, case):
    """Every algorithm: PPO (weights of policy and critic, whitening, token means; LoRA with micro-batches
    of one prompt), REINFORCE (moving-average baseline, over 3 iterations), REBEL, iterative DPO, RLOO
    (k = 2; k = 4 in micro-batches of one prompt), DPO and the clipped policy gradient (micro-batches of one
    prompt), on shards of very different response tokens (11 and 3 with one sample per prompt): 2 processes
    give the single process's weights, state and logged statistics."""
    _assert_same_updates(two_processes[case], train(case))


def test_every_registered_algorithm_has_a_case():
    """Each built-in algorithm and variant of the registry is run by a case (``rloo`` as ``rloo_k2``)."""
    from rebel.registry import BUILTIN, BUILTIN_VARIANTS

    names = {name for name, *_ in CASES.values()}
    assert set(BUILTIN_VARIANTS) <= names
    assert set(BUILTIN) <= names | {v["algorithm"] for n, v in BUILTIN_VARIANTS.items() if n in names}


def test_token_means_are_exact_with_micro_batches():
    """One process: PPO's update with micro-batches of one prompt (unequal response lengths) is the
    update on the whole minibatch (the loop's token normalizer; a mean per micro-batch is not)."""
    whole, micro = train("ppo"), train("ppo", micro=1)
    for a, b in zip(micro["states"][1:], whole["states"][1:]):
        moved = max((b[n] - whole["states"][0][n]).abs().max().item() for n in b)
        assert max((a[n] - b[n]).abs().max().item() for n in b) <= 1e-4 * moved


def test_ppo_with_its_critic_resumes_from_a_checkpoint(tmp_path):
    """The critic's weights (under the checkpointed ``trainable`` names) and optimizer state resume exactly."""
    straight, resumed = train("ppo_lora_micro"), train("ppo_lora_micro", resume_in=tmp_path / "state")
    assert any(n.startswith("critic.") for n in straight["states"][0])
    for a, b in zip(resumed["states"], straight["states"]):
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _old_token_values(critic, prompt_ids, prompt_mask, response_ids, response_mask):
    """The critic's per-token values as the loop computed them before ``TokenValueModel``."""
    ids = torch.cat([prompt_ids, response_ids], dim=1)
    mask = torch.cat([prompt_mask, response_mask], dim=1)
    hidden = critic.gpt_neox(
        input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
    ).last_hidden_state
    values = critic.score(hidden[:, prompt_ids.shape[1] - 1 : -1]).squeeze(-1).float() + critic.config.reward_offset
    return values * response_mask


@pytest.mark.parametrize("lora", [None, LORA])
def test_token_value_model_forward_is_the_critic_values(lora):
    critic = _reward_model()
    if lora is not None:
        critic = M.add_lora(critic, lora, task_type="SEQ_CLS")
        torch.nn.init.normal_(
            critic.base_model.model.gpt_neox.layers[0].attention.query_key_value.lora_B.default.weight
        )
    module = M.TokenValueModel(critic)
    prompt_ids, prompt_mask = _prompts()
    responses = FixedResponses().responses[:, 0]
    from rebel.generation import truncate_after_eos

    response_ids, response_mask, _ = truncate_after_eos(responses, EOS, PAD)
    values = module(prompt_ids, prompt_mask, response_ids, response_mask)
    assert values.shape == (PROMPTS, RESPONSE_LENGTH)
    torch.testing.assert_close(values, _old_token_values(critic, prompt_ids, prompt_mask, response_ids, response_mask))
    assert (values[response_mask == 0] == 0).all() and (values[response_mask == 1] != 0).all()
    # The module holds the critic's parameters under the critic's own names (``critic.`` prefix).
    assert {f"critic.{n}" for n, _ in critic.named_parameters()} == {n for n, _ in module.named_parameters()}
    values.sum().backward()
    assert all(p.grad is not None for p in critic.parameters() if p.requires_grad)


def test_global_sum_is_the_tensor_in_one_process():
    from rebel.distributed import global_sum, world_size

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    assert world_size() == 1
    total = global_sum(x)
    assert torch.equal(total, x.detach()) and not total.requires_grad


if __name__ == "__main__":  # one of the processes launched by the two_processes fixture
    import torch.distributed as dist

    out = Path(sys.argv[1])
    for case, (_, _, micro, _) in CASES.items():
        result = train(case, micro)
        if result["world"] == 2 and dist.get_rank() == 0:
            torch.save(result, out / f"{case}.pt")
