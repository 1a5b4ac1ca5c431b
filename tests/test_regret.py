"""External regret: hand-checked sequences, Hedge sublinear vs fixed/FTL linear, agents in repeated matrix games."""

import numpy as np
import pytest

from agents.scripted.matrix import Hedge, MixedStrategy
from agora.rollout import Rollout
from solvers.regret import (
    cumulative_regret,
    episode_history,
    external_regret,
    follow_the_leader,
    hedge,
    regret_loss,
    repeated_game_losses,
    repeated_game_regret,
)
from worlds.matrix import GAMES, parallel_env


def test_regret_by_hand():
    losses = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # always action 0: loss 2; best fixed action (1) loses 1 -> regret 1
    assert external_regret(losses, [0, 0, 0]) == pytest.approx(1.0)
    # uniform: loss 1.5 -> regret 0.5
    assert external_regret(losses, np.full((3, 2), 0.5)) == pytest.approx(0.5)
    # after round 2 both actions have lost 1, so the regret is back to 0
    np.testing.assert_allclose(cumulative_regret(losses, [0, 0, 0]), [1.0, 0.0, 1.0])
    assert external_regret(losses, [1, 0, 1]) == pytest.approx(-1.0)  # beating the best fixed action is negative regret
    with pytest.raises(ValueError, match="2 plays for 3"):
        external_regret(losses, [0, 1])


def test_fixed_action_against_an_adversary_has_linear_regret():
    for T in (100, 1000):
        losses = np.tile([1.0, 0.0], (T, 1))  # the adversary always punishes action 0
        assert external_regret(losses, np.zeros(T, dtype=int)) / T == pytest.approx(1.0)


def adversarial_for_ftl(T):
    # ℓ_1 = (1/2, 0), then (0, 1), (1, 0), ...: FTL always picks the action about to lose
    losses = np.array([[0.0, 1.0] if t % 2 else [1.0, 0.0] for t in range(T)])
    losses[0] = [0.5, 0.0]
    return losses


def test_follow_the_leader_is_linear_and_hedge_sublinear_on_the_same_sequence():
    ratios = []
    for T in (100, 10_000):
        losses = adversarial_for_ftl(T)
        ftl = external_regret(losses, follow_the_leader(losses))
        assert ftl / T > 0.45  # about T/2
        reg = external_regret(losses, hedge(losses))
        assert reg <= np.sqrt(T * np.log(2) / 2)  # Hedge's bound for losses in [0, 1]
        ratios.append(reg / T)
    assert ratios[1] < ratios[0] / 5  # Reg_T / T shrinks (like 1/√T: 10x here)


def test_hedge_on_random_losses_within_bound():
    rng = np.random.default_rng(0)
    T, n = 5000, 5
    losses = rng.random((T, n)) + np.linspace(0, 0.1, n)  # action 0 slightly better on average
    losses = np.clip(losses, 0, 1)
    assert external_regret(losses, hedge(losses)) <= np.sqrt(T * np.log(n) / 2)


def test_regret_loss_limits():
    regrets = [1.0, -2.0, 3.0]
    assert regret_loss(regrets, k=0.0) == pytest.approx((1 + 0 + 9) / 3)  # mean of max(0, R)^2
    assert regret_loss(regrets, k=50.0) == pytest.approx(9.0, rel=1e-6)  # -> worst case h(max R)
    assert regret_loss([2.0], k=3.0) == pytest.approx(4.0)


def test_repeated_game_losses_and_regret_by_hand():
    payoffs = np.asarray(GAMES["rock_paper_scissors"][1], dtype=float)
    own = payoffs[..., 0]
    np.testing.assert_allclose(
        repeated_game_losses(own, [1]), [[1.0, 0.0, -1.0]]
    )  # vs paper: rock -1, paper 0, scissors +1
    history = [(0, 1), (0, 1), (0, 1)]  # rock vs paper three times
    assert repeated_game_regret(payoffs, history, seat=0) == pytest.approx(6.0)  # scissors would win 3, rock lost 3
    assert repeated_game_regret(payoffs, history, seat=1) == pytest.approx(0.0)  # paper was the best reply


def play(row, column, rounds, seed=0):
    seats = ["player_0", "player_1"]
    rollout = Rollout(
        lambda: parallel_env(rounds=rounds),
        dict(zip(seats, (row, column))),
        {"player_0": "row", "player_1": "col"},
        seed=seed,
    )
    (episode,) = rollout.run(1)
    return episode_history(episode, seats)


def test_agents_in_repeated_rps_fixed_action_linear_hedge_sublinear():
    payoffs = np.asarray(GAMES["rock_paper_scissors"][1], dtype=float)
    T = 400
    rock = MixedStrategy(MixedStrategy.Config(probs=[1, 0, 0]), seed=0)
    biased = MixedStrategy(MixedStrategy.Config(probs=[0.2, 0.6, 0.2]), seed=1)
    history = play(rock, biased, T)
    assert len(history) == T
    fixed = repeated_game_regret(payoffs, history, seat=0)
    assert fixed / T > 0.6  # expected (0.4 - (-0.4)) = 0.8 per round: scissors beats the paper-heavy opponent
    learner = Hedge(Hedge.Config(seat=0), seed=2)
    history = play(learner, MixedStrategy(MixedStrategy.Config(probs=[0.2, 0.6, 0.2]), seed=1), T)
    assert repeated_game_regret(payoffs, history, seat=0) / T < 0.15
    assert sum(a == 2 for a, _ in history[-100:]) > 80  # it has learned scissors


def test_hedge_refuses_another_game():
    learner = Hedge(Hedge.Config(game="matching_pennies"), seed=0)
    with pytest.raises(ValueError, match="matching_pennies"):
        play(learner, MixedStrategy(MixedStrategy.Config(), seed=1), 3)
