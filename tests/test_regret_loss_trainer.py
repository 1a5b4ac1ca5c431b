"""Regret-loss training (trainers/regret_loss.py, arXiv 2403.16843): the loss, the expected play and the regret by
hand; the world's reply grid the candidates come from; the exact two-pass gradient and the update's direction on a
tiny model; the shipped campaign end to end with a resume (scenarios/campaigns/online_regret.yaml)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from solvers.regret import external_regret
from solvers.regret import regret_loss as numpy_regret_loss
from trainers.regret_loss import (
    RegretLossConfig,
    RegretLossTrainer,
    candidate_replies,
    expected_play,
    loss_sequences,
    regret_loss,
    sequence_regret,
)
from worlds.online_learning import play_grammar, raw_env

FILE = Path(__file__).resolve().parent.parent / "scenarios" / "campaigns" / "online_regret.yaml"


# --- the objective by hand ----------------------------------------------------------------------------


def test_regret_loss_by_hand_and_equal_to_the_numpy_helper():
    r = [1.0, -0.5, 2.0]
    # k = 0.5: h = (1, 0, 4), f = (e^0.5, e^-0.25, e^1)
    by_hand = (1 * math.exp(0.5) + 4 * math.exp(1.0)) / (math.exp(0.5) + math.exp(-0.25) + math.exp(1.0))
    assert by_hand == pytest.approx(2.43341, abs=1e-5)
    for k, expected in [(0.5, by_hand), (0.0, 5 / 3)]:  # k = 0: the mean of h(R)
        assert float(regret_loss(torch.tensor(r, dtype=torch.float64), k)) == pytest.approx(expected, rel=1e-12)
        assert numpy_regret_loss(r, k) == pytest.approx(expected, rel=1e-12)
    # large k: h of the worst regret
    assert float(regret_loss(torch.tensor(r, dtype=torch.float64), 60.0)) == pytest.approx(4.0, rel=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, k = rng.normal(0, 2, 6), float(rng.uniform(0, 5))
        assert float(regret_loss(torch.tensor(x), k)) == pytest.approx(numpy_regret_loss(x, k), rel=1e-10)


def test_the_gradient_flows_through_the_weights_f():
    """dL/dR_i = w_i (h'(R_i) + k (h(R_i) - L)), w = softmax(k R): the paper minimises L itself, weights included."""
    r = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64, requires_grad=True)
    k = 0.5
    loss = regret_loss(r, k)
    loss.backward()
    x = r.detach().numpy()
    w = np.exp(k * x) / np.exp(k * x).sum()
    h, dh = np.maximum(x, 0) ** 2, 2 * np.maximum(x, 0)
    np.testing.assert_allclose(r.grad.numpy(), w * (dh + k * (h - float(loss.detach()))), rtol=1e-12)


def test_expected_play_of_two_candidates_by_hand():
    vectors = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    logps = torch.log(torch.tensor([0.2, 0.8], dtype=torch.float64)) - 7.0  # only the ratio counts (renormalised)
    # p̄ = 0.2 (1, 0) + 0.8 (0.5, 0.5) = (0.6, 0.4)
    np.testing.assert_allclose(expected_play(logps, vectors).numpy(), [0.6, 0.4], rtol=1e-12)


def test_sequence_regret_by_hand():
    losses = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    plays = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    # incurred 1 + 1 + 0.5 = 2.5; totals (2, 1): the best fixed action loses 1 -> R = 1.5
    assert float(sequence_regret(losses, plays)) == pytest.approx(1.5)
    assert float(sequence_regret(losses, plays)) == pytest.approx(external_regret(losses.numpy(), plays.numpy()))


# --- the reply grid ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_actions,grid", [(2, 10), (3, 4), (3, 5), (2, 100)])
def test_the_candidates_are_the_world_reply_set(n_actions, grid):
    world = raw_env(n_actions=n_actions, grid=grid)
    texts, vectors = candidate_replies(n_actions, grid)
    assert len(texts) == math.comb(grid + n_actions - 1, n_actions - 1) == len(set(texts))
    grammar = play_grammar(n_actions, grid)
    for text, p in zip(texts, vectors):
        assert grammar.matches(text)
        np.testing.assert_allclose(world.parse("learner", text), p)
    if grid < 100:  # a reply off the grid is outside the grammar (though the lenient parser reads it)
        off = "PLAY " + " ".join(["0.01"] + ["0.00"] * (n_actions - 2) + ["0.99"])
        assert not grammar.matches(off) and world.parse("learner", off)[0] == pytest.approx(0.01)


def test_the_world_prompt_example_and_fallback_are_on_its_grid():
    world = raw_env(n_actions=3, grid=5, rounds=2)
    world.reset(seed=3)
    texts = set(candidate_replies(3, 5)[0])
    prompt = world.prompt("learner", world.observe("learner"))
    assert "each a multiple of 0.20" in prompt and prompt.endswith("PLAY 0.60 0.40 0.00")
    assert world.demonstration("learner")[1]["content"] in texts
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert world.render_action("learner", world.fallback_action("learner", rng)) in texts
    world.step(np.array([1.0, 0.0, 0.0]))
    assert world.episode_info()["grid"] == 5
    assert "multiple" not in raw_env(n_actions=3).prompt("learner", world.observe("learner"))  # grid 100: as before
    with pytest.raises(ValueError, match="divide"):
        play_grammar(2, 3)
    with pytest.raises(ValueError, match="grid"):
        raw_env(grid=3)


# --- a tiny learner ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def episodes(tiny_model_dir):
    """Two loss sequences (gaussian, 2 actions, 3 rounds, tenths) x two rollouts each, played by the tiny LLM."""
    from agents.llm import LLMConfig, LLMPolicy
    from agora.lora import LoRAConfig, load_learner
    from agora.rollout import GroupRollout

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    llm = LLMPolicy(
        LLMConfig(model=tiny_model_dir, temperature=1.0, max_new_tokens=16), seed=0, model=model, tokenizer=tokenizer
    )
    rollout = GroupRollout(
        lambda: raw_env(n_actions=2, rounds=3, grid=10, sequence="gaussian"),
        {"learner": llm},
        {"learner": "learner"},
        seed=0,
        seeds=[11, 12],
        group_size=2,
        max_retries=0,
    )
    return rollout.run(4)


@pytest.fixture
def trainer(tiny_model_dir):
    """A fresh tiny learner (the weights that played `episodes`) and its regret-loss trainer."""
    from agora.lora import LoRAConfig, load_learner

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)

    def make(**config) -> RegretLossTrainer:
        out = RegretLossTrainer(model, RegretLossConfig(**config), pad_id=tokenizer.pad_token_id, seed=0)
        out.tokenizer = tokenizer
        return out

    return make


def test_loss_sequences_count_each_group_once(episodes, trainer):
    t = trainer()
    sequences = loss_sequences(episodes, ["learner"], t.tokenizer)
    assert len(episodes) == 4 and len(sequences) == 2  # the two rollouts of a group share the sequence and prompts
    for s in sequences:
        assert s.losses.shape == (3, 2) and len(s.prompts) == 3 and s.grid == 10 and s.temperature == 1.0
        assert all(tail == [t.tokenizer.eos_token_id] for tail in s.tails)  # each reply ended with the stop token
        assert all(g for g in s.grammars)


def test_under_the_grammar_the_reply_grid_holds_the_whole_mass(episodes, trainer):
    """Σ_{y ∈ Y} π_θ(y | x) = 1 under the grammar's masks (each sampled reply is Y's tokenization of its text), so
    the softmax over Y renormalises nothing: p̄ is what the policy plays in expectation."""
    from agora.scoring import sequence_logprobs

    t = trainer()
    sequences = t.sequences(episodes, ["learner"])
    texts = candidate_replies(2, 10)[0]
    for e in episodes:
        for step in e.steps:
            assert step.completion_ids == sequences[0].replies[texts.index(step.text)] + [t.tokenizer.eos_token_id]
    for s in sequences:
        completions = [c + s.tails[0] for c in s.replies]
        with torch.no_grad():
            logp, _, mask, _ = sequence_logprobs(
                t.model,
                [s.prompts[0]] * len(completions),
                completions,
                temperature=s.temperature,
                pad_id=t.pad_id,
                allowed=t.masks.allowed([s.grammars[0]] * len(completions), completions),
            )
        assert float(torch.logsumexp((logp * mask).sum(-1), 0)) == pytest.approx(0.0, abs=1e-4)


def test_the_two_pass_gradient_is_the_gradient_of_the_loss(episodes, trainer):
    t = trainer(k=2.0, rounds_per_pass=2)
    sequences = t.sequences(episodes, ["learner"])
    t.model.train()
    t.optimizer.zero_grad(set_to_none=True)
    loss, r = t.accumulate_gradient(sequences)
    two_pass = [p.grad.clone() for p in t.parameters]
    assert (r > 0).all(), "near-uniform plays of a random model have positive regret on these sequences"
    t.optimizer.zero_grad(set_to_none=True)
    regrets = torch.stack(  # one graph: every round with gradients, then L
        [sequence_regret(torch.tensor(s.losses, dtype=torch.float32), t.expected_plays(s, range(3))) for s in sequences]
    )
    direct = regret_loss(regrets, 2.0)
    direct.backward()
    assert float(direct.detach()) == pytest.approx(float(loss), rel=1e-5)
    for a, p in zip(two_pass, t.parameters):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-7)
    assert any(float(a.abs().sum()) > 0 for a in two_pass)


def test_an_update_lowers_the_regret_and_moves_mass_to_the_best_action(episodes, trainer):
    t = trainer(k=1.0, learning_rate=5e-3, epochs=3)
    sequences = t.sequences(episodes, ["learner"])
    t.model.train()

    def best_action_mass() -> float:
        with torch.no_grad():
            return float(
                np.mean(
                    [t.expected_plays(s, range(3))[:, s.losses.sum(axis=0).argmin()].mean().item() for s in sequences]
                )
            )

    before_r, before_mass = t.regrets(sequences), best_action_mass()
    metrics = t.update(episodes, ["learner"])
    after_r, after_mass = t.regrets(sequences), best_action_mass()
    assert metrics["train/regret"] == pytest.approx(float(before_r.mean()), rel=1e-5)
    assert metrics["train/loss"] == pytest.approx(float(regret_loss(before_r, 1.0)), rel=1e-5)
    assert metrics["train/sequences"] == 2 and metrics["train/candidates"] == 11
    assert metrics["train/regret_per_round"] == pytest.approx(float(before_r.mean()) / 3, rel=1e-5)
    assert float(regret_loss(after_r, 1.0)) < float(regret_loss(before_r, 1.0))
    assert float(after_r.mean()) < float(before_r.mean()) and after_mass > before_mass


def test_refuses_replies_off_the_grid_and_grids_too_large(episodes, trainer):
    t = trainer()
    off = [replace(e, steps=[replace(s, text="PLAY 0.33 0.67") for s in e.steps]) for e in episodes]
    with pytest.raises(ValueError, match="not on the reply grid"):
        t.update(off, ["learner"])
    with pytest.raises(ValueError, match="`grid` lower"):
        trainer(max_candidates=10).update(episodes, ["learner"])


def test_a_campaign_on_another_world_is_refused():
    from agora.campaign import load_campaign
    from agora.errors import ScenarioError

    other = FILE.parent / "negotiation_grpo.yaml"
    with pytest.raises(ScenarioError, match="trains on the world online_learning, not negotiation"):
        load_campaign(other, {"trainer": {"id": "regret_loss"}})


def test_the_online_regret_campaign_trains_and_resumes(tmp_path, tracking_uri, tiny_model_dir):
    """The shipped campaign at tiny sizes: 2 iterations in one go equal 1 + a resume for the second (weights,
    optimizer, generators restored)."""
    from safetensors.torch import load_file

    from agora.campaign import load_campaign
    from mlflow import MlflowClient

    def changes(folder: str, iterations: int) -> dict:
        return {
            "learner.model": tiny_model_dir,
            "world.rounds": 2,
            "trainer.epochs": 1,
            "iterations": iterations,
            "groups_per_iteration": 2,
            "evaluation.episodes": 2,
            "concurrency": 4,
            "checkpoint.dir": str(tmp_path / folder),
        }

    straight = load_campaign(FILE, changes("a", 2)).run()
    client = MlflowClient(tracking_uri)
    run = straight.run_id
    assert client.get_run(run).info.status == "FINISHED"
    regret = client.get_metric_history(run, "train/regret")
    assert len(regret) == 2 and all(math.isfinite(m.value) for m in regret)
    assert [m.value for m in client.get_metric_history(run, "train/sequences")] == [2.0, 2.0]
    assert client.get_metric_history(run, "eval/train/regret_per_round")
    load_campaign(FILE, changes("b", 1)).run()
    resumed = load_campaign(FILE, changes("b", 2)).run(resume=True)
    a = load_file(str(straight.checkpoint / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in a.items())
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_regret_growth_bench_runs_every_player(tmp_path, tiny_model_dir):
    """bench/regret_growth.py on the tiny model (with a fresh adapter standing in for a trained one)."""
    from agora.lora import LoRAConfig, load_learner, save_adapter
    from bench.regret_growth import growth_exponent, main

    assert growth_exponent([10, 40], [2.0, 4.0]) == pytest.approx(0.5)  # Reg_T ∝ √T
    assert growth_exponent([10, 40], [1.0, 4.0]) == pytest.approx(1.0) and math.isnan(growth_exponent([10], [1.0]))
    model, _ = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    save_adapter(model, tmp_path / "adapter")
    argv = ["--model", tiny_model_dir, "--adapter", str(tmp_path / "adapter"), "--rounds", "2", "3"]
    result = main(argv + ["--episodes", "1", "--max-new-tokens", "16"])
    assert set(result) == {"hedge", "ftl", "uniform", "llm", "trained"}
    assert all(len(r) == 2 and all(len(x) == 1 and math.isfinite(x[0]) for x in r) for r in result.values())


def test_a_saved_adapter_loads_back_into_the_same_model_without_warnings(tmp_path, tiny_model_dir):
    import warnings

    from agora.lora import LoRAConfig, load_learner, load_trained, save_adapter

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    save_adapter(model, tmp_path / "adapter")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, _ = load_trained(tiny_model_dir, tmp_path / "adapter")
    ids = torch.tensor([tokenizer("PLAY: 0.5, 0.5")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
        with loaded.disable_adapter():
            assert (loaded(input_ids=ids).logits - model(input_ids=ids).logits).abs().max() > 1e-3
