"""Nash-MD and INPO: tabular last-iterate convergence to the regularised equilibrium; INPO's loss, pairs and LLM
trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from agora.errors import ScenarioError
from agora.scenario import validate_model
from agora.trajectory import Episode
from solvers.preference_games import (
    geometric_mixture,
    inpo_step,
    last_iterate,
    nash_md_step,
    regularized_nash,
    regularized_value,
)
from tests.conftest import learner_step
from trainers.inpo import INPOConfig, INPOTrainer, inpo_loss, inpo_pairs
from trainers.judges import OutcomeJudge
from trainers.preference import Decision

RPS = 0.5 + 0.5 * np.array([[0, 1, -1], [-1, 0, 1], [1, -1, 0]])  # P(y > y'): rock, paper, scissors
# a weighted cycle: P - 1/2 = [[0, a, -b], [-a, 0, c], [b, -c, 0]] has the Nash equilibrium ∝ (c, b, a)
A, B, C = 0.3, 0.2, 0.4
CYCLE = 0.5 + np.array([[0, A, -B], [-A, 0, C], [B, -C, 0]])
CYCLE_NASH = np.array([C, B, A]) / (A + B + C)  # (4/9, 2/9, 1/3)
MU = np.array([0.6, 0.3, 0.1])  # a reference that favours rock


def kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def test_one_update_by_hand():
    P = np.array([[0.5, 0.8], [0.2, 0.5]])
    uniform = np.array([0.5, 0.5])
    # tau = 0: both are multiplicative weights, pi_1 ∝ 0.5 exp([0.65, 0.35]): pi_1(0) = sigmoid(0.3)
    for step in (inpo_step, nash_md_step):
        assert step(uniform, P, uniform, eta=1.0, tau=0.0)[0] == pytest.approx(1 / (1 + np.exp(-0.3)))
    # the geometric mixture of (0.8, 0.2) and uniform with weight 1/2 is ∝ (sqrt 0.4, sqrt 0.1) = (2/3, 1/3)
    assert geometric_mixture(np.array([0.8, 0.2]), uniform, 0.5) == pytest.approx([2 / 3, 1 / 3])
    # eta tau = 1: INPO forgets pi_t: pi_1 ∝ mu exp(eta P mu)
    pi = np.array([0.9, 0.1])
    mu = np.array([0.25, 0.75])
    assert inpo_step(pi, P, mu, eta=2.0, tau=0.5) == pytest.approx(softmax(np.log(mu) + 2.0 * P @ pi))
    # Nash-MD plays against the mixture, not pi_t: with eta tau = 1 the mixture is mu itself
    assert nash_md_step(pi, P, mu, eta=2.0, tau=0.5) == pytest.approx(softmax(np.log(mu) + 2.0 * P @ mu))


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
@pytest.mark.parametrize("tau", [1.0, 0.3, 0.1])
def test_the_solver_finds_the_regularised_equilibrium(P, tau):
    star = regularized_nash(P, MU, tau)
    # checked independently of how it was found: each player's regularised best response to pi* is pi*
    assert softmax(np.log(MU) + P @ star / tau) == pytest.approx(
        star, abs=1e-8
    )  # max player: argmax pi^T P pi* - tau KL
    assert softmax(np.log(MU) - P.T @ star / tau) == pytest.approx(
        star, abs=1e-8
    )  # min player: argmin pi*^T P pi' + tau KL
    rng = np.random.default_rng(0)
    others = rng.dirichlet(np.ones(3), size=200)
    assert max(regularized_value(p, P, MU, tau) for p in others) <= regularized_value(star, P, MU, tau) + 1e-12
    assert not np.allclose(star, MU) and not np.allclose(star, np.ones(3) / 3, atol=1e-3)  # a non-trivial point


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
def test_inpo_last_iterate_converges_to_the_regularised_equilibrium(P):
    for tau, eta in ((1.0, 0.5), (0.3, 0.5), (0.1, 0.5), (0.01, 0.05)):
        star = regularized_nash(P, MU, tau)
        last = last_iterate(inpo_step, P, MU, eta=eta, tau=tau, iterations=int(30 / (eta * tau)))
        assert last == pytest.approx(star, abs=1e-6), (tau, eta)


@pytest.mark.parametrize("P", [RPS, CYCLE], ids=["rps", "weighted_cycle"])
def test_nash_md_last_iterate_reaches_the_equilibrium_up_to_its_step_size(P):
    tau = 0.3
    star = regularized_nash(P, MU, tau)
    gaps = []
    for eta in (1.0, 0.5, 0.1, 0.02):
        last = last_iterate(nash_md_step, P, MU, eta=eta, tau=tau, iterations=int(40 / (eta * tau)))
        gaps.append(kl(star, last))
        assert gaps[-1] <= 2 * eta / tau  # the fixed point of KL' = (1 - eta tau) KL + 2 eta^2
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-5


@pytest.mark.parametrize("P, nash", [(RPS, np.ones(3) / 3), (CYCLE, CYCLE_NASH)], ids=["rps", "weighted_cycle"])
def test_as_tau_goes_to_zero_the_equilibrium_approaches_the_unregularised_nash(P, nash):
    distances = [np.abs(regularized_nash(P, MU, tau) - nash).max() for tau in (1.0, 0.1, 0.01, 0.001)]
    assert distances == sorted(distances, reverse=True) and distances[-1] < 2e-3
    # and the INPO iterates get there too, although mu puts six times more mass on rock than on scissors
    last = last_iterate(inpo_step, P, MU, eta=0.05, tau=0.01, iterations=60_000)
    assert np.abs(last - nash).max() < 0.02 < np.abs(MU - nash).max()


# --- INPO on an LLM -----------------------------------------------------------------------------


def test_inpo_loss_by_hand():
    t = lambda x: torch.tensor([x])  # noqa: E731
    # h = (-1 - -3) - 1 * 0.2 * (-2 - -2.5) - 0.8 * (-1.5 - -2.5) = 2 - 0.1 - 0.8 = 1.1; (1.1 - 0.5)^2 = 0.36
    loss, h = inpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), t(-1.5), t(-2.5), eta=1.0, tau=0.2)
    assert float(h) == pytest.approx(1.1) and float(loss) == pytest.approx(0.36)
    # tau = 0: online IPO with pi_t as the reference
    loss, h = inpo_loss(t(-1.0), t(-3.0), t(-9.0), t(-9.0), t(-1.5), t(-2.5), eta=2.0, tau=0.0)
    assert float(h) == pytest.approx(1.0) and float(loss) == pytest.approx(0.0)


def test_inpo_config_is_validated():
    with pytest.raises(ScenarioError, match="eta \\* tau = 2 must be at most 1"):
        validate_model(INPOConfig, {"eta": 4.0, "tau": 0.5}, prefix="trainer", file=None)
    with pytest.raises(ScenarioError) as info:
        validate_model(INPOConfig, {"pairing": "random"}, prefix="trainer", file=None)
    assert info.value.path == "trainer.pairing"


step = learner_step


def test_inpo_pairs_are_judged_within_groups():
    eps = [
        Episode(i, 7, {}, [step([1, 2], [10 + i], [-float(i)])], returns={"a": r})
        for i, r in enumerate([1.0, 3.0, 2.0, 2.0, 5.0])
    ]
    judge = OutcomeJudge()
    pairs, ties = inpo_pairs(eps, ["a"], judge, "adjacent")  # (0, 1): 1 wins; (2, 3): a tie; 4 has no partner
    assert [(w.completion_ids, l.completion_ids, w.old_logprobs, l.old_logprobs) for w, l in pairs] == [
        ([11], [10], [-1.0], [-0.0])
    ]
    assert ties == 1 and judge.calls == 2
    pairs, ties = inpo_pairs(eps, ["a"], judge, "all")
    assert len(pairs) == 9 and ties == 1 and judge.calls == 2 + 10


def test_inpo_trainer_loss_by_hand_and_it_decreases(tiny_model_dir):
    from agora.lora import LoRAConfig, load_learner
    from agora.scoring import sequence_logprobs

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    prompt = tokenizer("Which colour is the sky?")["input_ids"]
    good, bad = tokenizer(" Blue.")["input_ids"], tokenizer(" Green cheese.")["input_ids"]
    old_good, old_bad = [-2.0] * len(good), [-1.0] * len(bad)  # pi_t as a sampler might have recorded it
    episodes = [
        Episode(0, 7, {}, [step(prompt, good, old_good)], returns={"a": 1.0}),
        Episode(1, 7, {}, [step(prompt, bad, old_bad)], returns={"a": 0.0}),
    ]
    eta, tau, temperature = 1.0, 0.2, 0.7
    config = INPOConfig(eta=eta, tau=tau, learning_rate=1e-2)
    trainer = INPOTrainer(model, config, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _, mask, _ = sequence_logprobs(
            model, [prompt, prompt], [good, bad], temperature=temperature, pad_id=tokenizer.pad_token_id
        )
    seq = (logp * mask).sum(-1)
    # LoRA B = 0: pi = pi_ref, so h = (1 - eta tau) (log pi(y_w)/pi(y_l) - log pi_t(y_w)/pi_t(y_l))
    h = (1 - eta * tau) * (float(seq[0] - seq[1]) - (sum(old_good) - sum(old_bad)))
    first = trainer.update(episodes, ["a"])
    assert first["train/pairs"] == 1 and first["train/judge_calls"] == 1 and first["train/optimizer_steps"] == 1
    assert first["train/h"] == pytest.approx(h, abs=1e-4) and first["train/loss"] == pytest.approx(
        (h - eta / 2) ** 2, abs=1e-4
    )
    losses = [first["train/loss"]] + [trainer.update(episodes, ["a"])["train/loss"] for _ in range(5)]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0]
    # the checkpoint state round-trips (optimizer + shuffling generator)
    state = trainer.state_dict()
    again = INPOTrainer(model, config, pad_id=tokenizer.pad_token_id)
    again.load_state_dict(state)
    assert again.optimizer.state_dict()["state"].keys() == trainer.optimizer.state_dict()["state"].keys()
    assert isinstance(trainer.items(episodes, ["a"])[0][0], Decision)


# --- in a campaign ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trainer, judge_calls",
    [
        (
            "{id: grpo, group_reward: spo, judge: {id: outcome}, learning_rate: 0.01, micro_batch_size: 16}",
            2 * 3,
        ),  # 2 groups x G(G-1)/2
        ("{id: grpo, group_reward: arena, learning_rate: 0.01, micro_batch_size: 16}", 2 * 4),  # 2 groups x (2G - 2)
        (
            "{id: inpo, eta: 1.0, tau: 0.1, pairing: all, learning_rate: 0.01, micro_batch_size: 16}",
            2 * 3,
        ),  # 2 groups x 3 pairs
    ],
    ids=["spo", "arena", "inpo"],
)
def test_judged_trainers_run_a_campaign_end_to_end(tmp_path, tracking_uri, tiny_model_dir, trainer, judge_calls):
    from safetensors.torch import load_file

    from agora.campaign import load_campaign
    from mlflow import MlflowClient
    from tests.test_campaign import TINY

    text = TINY.format(model=tiny_model_dir, iterations=2, dir=tmp_path / "ck")
    text = text.replace("trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16}", f"trainer: {trainer}")
    text += (
        "max_retries: 0\n"  # a re-prompt quotes the failed reply, and pairs need the same prompt in both trajectories
    )
    (tmp_path / "c.yaml").write_text(text)
    result = load_campaign(tmp_path / "c.yaml").run()
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    calls = client.get_metric_history(result.run_id, "train/judge_calls")
    assert [m.step for m in calls] == [0, 1] and all(m.value == judge_calls for m in calls)
    assert [m.step for m in client.get_metric_history(result.run_id, "train/loss")] == [0, 1]
    adapter = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    if "inpo" in trainer:  # the seeded rollouts give judged pairs with a winner (6 vs 4 in the first group)
        assert sum(m.value for m in client.get_metric_history(result.run_id, "train/pairs")) > 0
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
