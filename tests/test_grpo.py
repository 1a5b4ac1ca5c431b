"""The clipped policy-gradient loss, k3 KL, aggregation, logprob recomputation and LoRA updates."""

from __future__ import annotations

import math

import pytest
import torch

from agents.llm import LLMPolicy
from agora.grammar import Grammar, one_of, seq, text
from agora.lora import LoRAConfig, adapter_state, load_learner
from agora.policy import ActRequest
from agora.scoring import sequence_logprobs
from trainers.advantages import Sample
from trainers.grpo import GRPOConfig, GRPOTrainer, aggregate, clipped_pg_loss

PROMPTS = ["What is 2+2?", "Name a colour, please.", "Say hello in French to my friend Bob.", "Count to 3."]


def loss_of(ratio, advantage, **kw):
    logp = torch.tensor([[math.log(ratio)]])
    per_token, stats = clipped_pg_loss(logp, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), **kw)
    return float(per_token), float(stats["clipped"])


def test_clipped_objective_takes_the_pessimistic_side():
    assert loss_of(1.5, 1.0, epsilon=0.2) == pytest.approx((-1.2, 1.0))  # gain capped at 1 + eps
    assert loss_of(1.5, -1.0, epsilon=0.2) == pytest.approx((1.5, 0.0))  # a loss is never capped
    assert loss_of(0.5, 1.0, epsilon=0.2) == pytest.approx((-0.5, 0.0))
    assert loss_of(0.5, -1.0, epsilon=0.2) == pytest.approx((0.8, 1.0))  # clipped at 1 - eps
    assert loss_of(1.25, 1.0, epsilon=0.2) == pytest.approx((-1.2, 1.0))
    assert loss_of(1.25, 1.0, epsilon=0.2, epsilon_high=0.28) == pytest.approx((-1.25, 0.0))  # DAPO clip-higher


def test_k3_kl_to_the_reference():
    logp, ref = torch.tensor([[math.log(0.25)]]), torch.tensor([[math.log(0.5)]])  # pi_ref / pi_theta = 2
    per_token, stats = clipped_pg_loss(
        logp, logp.clone(), torch.tensor([0.0]), torch.ones(1, 1), epsilon=0.2, ref_logp=ref, beta=0.1
    )
    assert float(stats["kl"]) == pytest.approx(2 - math.log(2) - 1)
    assert float(per_token) == pytest.approx(0.1 * (2 - math.log(2) - 1))
    per_token, _ = clipped_pg_loss(
        logp, logp.clone(), torch.tensor([0.0]), torch.ones(1, 1), epsilon=0.2, ref_logp=ref, beta=0.0
    )
    assert float(per_token) == 0.0


def test_token_and_sequence_aggregation():
    per_token = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(aggregate(per_token, mask, "token", tokens=3, sequences=2)) == pytest.approx(2.0)  # 6 / 3 tokens
    assert float(aggregate(per_token, mask, "sequence", tokens=3, sequences=2)) == pytest.approx(2.25)  # (1.5 + 3) / 2


def sampled(model_dir, temperature=0.8, seed=0, max_new_tokens=10, grammar=None):
    model, tokenizer = load_learner(model_dir, LoRAConfig(r=4, alpha=8), seed=seed)
    params = LLMPolicy.Config(model=model_dir, temperature=temperature, max_new_tokens=max_new_tokens)
    policy = LLMPolicy(params, seed=seed, model=model, tokenizer=tokenizer)
    requests = [
        ActRequest(i, "a", None, [{"role": "user", "content": p}], grammar=grammar) for i, p in enumerate(PROMPTS)
    ]
    return model, tokenizer, policy, policy.act(requests)


# a reply grammar with free text and a choice: the masks change most tokens' distribution
REPLY = Grammar(seq("SAY: ", text(60, 6), "\nVOTE: ", one_of(["alice", "bob", "carol"])))


def assert_ratio_one(model, tokenizer, responses, temperature, atol):
    prompts = [r.prompt_ids for r in responses]
    completions = [r.completion_ids for r in responses]
    for share in (True, False):
        logp, _, mask, _ = sequence_logprobs(
            model, prompts, completions, temperature=temperature, pad_id=tokenizer.pad_token_id, share_prefix=share
        )
        for row, r in enumerate(responses):
            recomputed = logp[row][mask[row]]
            assert recomputed.shape == (len(r.completion_ids),)
            assert torch.allclose(recomputed, torch.tensor(r.logprobs), atol=atol)
            assert torch.allclose(
                torch.exp(recomputed - torch.tensor(r.logprobs)), torch.ones(len(r.logprobs)), atol=atol
            )


def test_recomputed_logprobs_match_the_sampler_at_ratio_one(tiny_model_dir):
    model, tokenizer, _, responses = sampled(tiny_model_dir, temperature=0.8)
    assert_ratio_one(model, tokenizer, responses, 0.8, atol=1e-4)


@pytest.mark.model
def test_recomputed_logprobs_match_the_sampler_on_the_embedded_model(embedded_model_dir):
    model, tokenizer, _, responses = sampled(str(embedded_model_dir), temperature=0.7, max_new_tokens=12)
    assert_ratio_one(model, tokenizer, responses, 0.7, atol=1e-3)


def samples_from(responses, advantages):
    return [
        Sample(
            r.prompt_ids,
            r.completion_ids,
            r.logprobs,
            a,
            "g",
            i,
            "a",
            0,
            0.0,
            temperature=r.temperature,
            grammar=r.grammar,
        )
        for i, (r, a) in enumerate(zip(responses, advantages))
    ]


@pytest.mark.parametrize("which", ["tiny", pytest.param("embedded", marks=pytest.mark.model)])
def test_constrained_samples_are_trained_at_ratio_one_with_the_kl_under_the_same_masks(
    which, tiny_model_dir, embedded_model_dir
):
    """Replies decoded under a grammar: the trainer rescores them under the masks replayed from their
    token ids, so rho = 1 before the update, and the reference (the adapter-free model, equal to the
    policy before any step) under the same masks, so the KL is 0; without the tokenizer it refuses."""
    model_dir = tiny_model_dir if which == "tiny" else str(embedded_model_dir)
    model, tokenizer, _, responses = sampled(model_dir, temperature=0.8, max_new_tokens=16, grammar=REPLY)
    assert all(REPLY.matches(r.text) and r.grammar for r in responses)
    trainer = GRPOTrainer(model, GRPOConfig(learning_rate=1e-3, beta=0.1), pad_id=tokenizer.pad_token_id)
    samples = samples_from(responses, [1.0, -1.0, 1.0, -1.0])
    with pytest.raises(ValueError, match="needs the tokenizer"):
        trainer.step(samples)
    trainer.tokenizer = tokenizer
    metrics = trainer.step(samples)
    assert metrics["train/ratio"] == pytest.approx(1.0, abs=1e-3 if which == "embedded" else 1e-4)
    assert metrics["train/kl"] == pytest.approx(0.0, abs=1e-6)


def test_an_update_moves_lora_weights_towards_positive_advantages(tiny_model_dir):
    model, tokenizer, policy, responses = sampled(tiny_model_dir, temperature=1.0)
    before = adapter_state(model)
    base_before = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    config = GRPOConfig(learning_rate=5e-3, micro_batch_size=3)
    trainer = GRPOTrainer(model, config, pad_id=tokenizer.pad_token_id)
    samples = samples_from(responses, [1.0, -1.0, 1.0, -1.0])
    metrics = trainer.step(samples)
    after = adapter_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in base_before.items())  # base frozen
    assert (
        metrics["train/ratio"] == pytest.approx(1.0, abs=1e-4) and metrics["train/clip_fraction"] == 0.0
    )  # one step: rho = 1
    assert metrics["train/samples"] == 4 and metrics["perf/train_tokens_per_s"] > 0
    logp, _, mask, _ = sequence_logprobs(
        model,
        [r.prompt_ids for r in responses],
        [r.completion_ids for r in responses],
        temperature=1.0,
        pad_id=tokenizer.pad_token_id,
    )
    new = (logp * mask).sum(-1)
    old = torch.tensor([sum(r.logprobs) for r in responses])
    # One step on shared weights raises the advantage-weighted log-likelihood; a single sample can still move
    # against its advantage when the others' gradients outweigh its own (a draw of the per-request seeds did).
    change = new.detach() - old
    assert change[[0, 2]].mean() > 0 > change[[1, 3]].mean()


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_zero_advantage_samples_count_in_the_loss_scale_but_are_not_forwarded(tiny_model_dir, aggregation, monkeypatch):
    """beta = 0: a sample with A = 0 is not forwarded, yet the loss is normalised by every token (sample) of the
    mini-batch, as DAPO/TRL do: the gradient equals that of the loss with both samples forwarded."""
    import trainers.grpo

    model, tokenizer, _, responses = sampled(tiny_model_dir, temperature=1.0)
    samples = samples_from(responses[:2], [1.0, 0.0])
    trainer = GRPOTrainer(model, GRPOConfig(aggregation=aggregation, max_grad_norm=1e9), pad_id=tokenizer.pad_token_id)
    grads, forwarded = [], []
    trainer.optimizer.step = lambda: grads.append([p.grad.clone() for p in trainer.parameters])

    def spy(model, prompts, completions, **kw):
        forwarded.extend(completions)
        return sequence_logprobs(model, prompts, completions, **kw)

    monkeypatch.setattr(trainers.grpo, "sequence_logprobs", spy)
    trainer.step(samples)
    assert forwarded == [samples[0].completion_ids]

    # At rho = 1, the loss with both forwarded: -sum_t rho_0t / (n_0 + n_1) (token) or -mean_t rho_0t / 2 (sequence)
    trainer.optimizer.zero_grad(set_to_none=True)
    logp, _, mask, _ = sequence_logprobs(
        model, [samples[0].prompt_ids], [samples[0].completion_ids], temperature=1.0, pad_id=tokenizer.pad_token_id
    )
    rho = torch.exp(logp[mask] - torch.tensor(samples[0].old_logprobs))
    n0, n1 = len(samples[0].completion_ids), len(samples[1].completion_ids)
    loss = -rho.sum() / (n0 + n1) if aggregation == "token" else -rho.sum() / n0 / 2
    loss.backward()
    assert any(float(g.abs().sum()) > 0 for g in grads[0])
    for got, p in zip(grads[0], trainer.parameters):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-7)


def test_the_sampling_temperature_travels_with_the_samples(tiny_model_dir):
    """The sampler records its temperature on every response; the trainer recomputes log-probs at it
    (rho = 1 above at T = 0.8) and refuses a batch that mixes temperatures or records none."""
    model, tokenizer, _, responses = sampled(tiny_model_dir, temperature=0.8)
    assert {r.temperature for r in responses} == {0.8}
    trainer = GRPOTrainer(model, GRPOConfig(learning_rate=5e-3), pad_id=tokenizer.pad_token_id)
    samples = samples_from(responses, [1.0, -1.0, 1.0, -1.0])
    assert trainer.step(samples)["train/ratio"] == pytest.approx(1.0, abs=1e-4)
    samples[0].temperature = 1.0
    with pytest.raises(ValueError, match="different temperatures"):
        trainer.step(samples)
    samples[0].temperature = None
    with pytest.raises(ValueError, match="without a recorded sampling temperature"):
        trainer.step(samples)


def test_kl_term_uses_the_adapter_free_reference(tiny_model_dir):
    model, tokenizer, _, responses = sampled(tiny_model_dir, temperature=1.0)
    trainer = GRPOTrainer(
        model, GRPOConfig(beta=0.5, learning_rate=5e-3, epochs=2, mini_batches=2), pad_id=tokenizer.pad_token_id
    )
    metrics = trainer.step(samples_from(responses, [1.0, -1.0, 1.0, -1.0]))
    # B = 0 at init: the first step's policy equals the reference; later steps drift from it and from pi_old
    assert metrics["train/optimizer_steps"] == 4
    assert metrics["train/kl"] > 0 and metrics["train/approx_kl"] != 0
