"""PSRO on matrix games (exact payoffs and oracle), meta-strategy selection, payoffs from rollouts."""

import numpy as np
import pytest

from agents.scripted.matrix import MixedStrategy
from solvers.meta import exploitability
from solvers.psro import matrix_best_response, matrix_psro, meta_strategy, mixture, rollout_payoff_matrix
from worlds.matrix import GAMES, parallel_env


def table(name):
    payoffs = np.asarray(GAMES[name][1], dtype=float)
    return payoffs[..., 0], payoffs[..., 1]


def test_psro_rps_from_one_pure_strategy_reaches_uniform():
    A, B = table("rock_paper_scissors")
    result = matrix_psro(A, B, start=(0, 0))
    # rock,rock -> both add paper -> Nash of {rock, paper} is pure paper -> both add scissors -> uniform
    assert result.stop_reason == "threshold"
    assert len(result.populations[0]) == 3 and len(result.populations[1]) == 3
    np.testing.assert_allclose(mixture(result.populations[0], result.meta_strategies[0]), [1 / 3] * 3, atol=1e-8)
    np.testing.assert_allclose(mixture(result.populations[1], result.meta_strategies[1]), [1 / 3] * 3, atol=1e-8)
    assert result.exploitability[0] == pytest.approx(1.0)  # pure rock vs rock: each gains 1 by paper -> NashConv 2
    assert result.exploitability[-1] == pytest.approx(0.0, abs=1e-9)


def test_psro_matching_pennies_and_budget():
    A, B = table("matching_pennies")
    result = matrix_psro(A, B, start=(1, 0))
    np.testing.assert_allclose(mixture(result.populations[0], result.meta_strategies[0]), [0.5, 0.5], atol=1e-8)
    assert result.exploitability[-1] == pytest.approx(0.0, abs=1e-9)
    stopped = matrix_psro(*table("rock_paper_scissors"), max_iterations=1)
    assert (
        stopped.stop_reason == "budget" and len(stopped.exploitability) == 2
    )  # the iteration that added, and the final evaluation


def test_psro_uniform_meta_solver_stalls_where_double_oracle_does_not():
    # uniform over {rock, paper} is (1/2, 1/2, 0); its best response (paper) is already in the population
    result = matrix_psro(*table("rock_paper_scissors"), meta_solver="uniform")
    assert result.stop_reason == "no new best response"
    assert result.exploitability[-1] == pytest.approx(0.5)


def test_best_response_oracle_hand_checked():
    A, B = table("prisoners_dilemma")
    oracle = matrix_best_response(A, B)
    cooperate = [np.array([1.0, 0.0])]
    assert oracle(0, cooperate, np.array([1.0])).tolist() == [0.0, 1.0]  # defect against a cooperator
    assert oracle(1, cooperate, np.array([1.0])).tolist() == [0.0, 1.0]


def test_nash_meta_solver_refuses_general_sum():
    A, B = table("prisoners_dilemma")
    with pytest.raises(ValueError, match="constant-sum"):
        meta_strategy(A, B, "nash")
    x, y = meta_strategy(A, B, "alpharank")
    assert x[1] > 0.99 and y[1] > 0.99
    with pytest.raises(ValueError, match="unknown meta-solver"):
        meta_strategy(A, B, "best")


def policies(table):
    return {
        name: (lambda seed, p=probs: MixedStrategy(MixedStrategy.Config(probs=p), seed=seed))
        for name, probs in table.items()
    }


def test_rollout_payoff_matrix_pure_strategies_exact_and_seeded():
    pure = policies({"rock": [1, 0, 0], "paper": [0, 1, 0], "scissors": [0, 0, 1]})
    make = lambda: parallel_env(game="rock_paper_scissors", rounds=4)  # noqa: E731
    U0, U1 = rollout_payoff_matrix(make, pure, pure, episodes_per_cell=3)
    A, _ = table("rock_paper_scissors")
    np.testing.assert_allclose(U0, 4 * A)  # 4 rounds per episode, deterministic play
    np.testing.assert_allclose(U1, -4 * A)
    mixed = policies({"uniform": [1 / 3] * 3, "rockish": [0.6, 0.2, 0.2]})
    first = rollout_payoff_matrix(make, mixed, mixed, episodes_per_cell=50, seed=7)
    again = rollout_payoff_matrix(make, mixed, mixed, episodes_per_cell=50, seed=7)
    np.testing.assert_array_equal(first[0], again[0])
    other = rollout_payoff_matrix(make, mixed, mixed, episodes_per_cell=50, seed=8)
    assert not np.array_equal(first[0], other[0])
    # rockish vs rockish: expected 0; a round is +1/-1 with probability 0.28 each (variance 0.56),
    # so the mean of 50 four-round returns has standard error sqrt(4 * 0.56 / 50); allow 4 of them
    assert abs(first[0][1, 1]) < 4 * np.sqrt(4 * 0.56 / 50)


def test_rollout_payoff_matrix_feeds_meta_solver():
    pure = policies({"rock": [1, 0, 0], "paper": [0, 1, 0], "scissors": [0, 0, 1]})
    U0, U1 = rollout_payoff_matrix(lambda: parallel_env(rounds=2), pure, pure, episodes_per_cell=1)
    x, y = meta_strategy(U0, U1, "nash")
    A, B = table("rock_paper_scissors")
    assert exploitability(A, B, x, y) == pytest.approx(0.0, abs=1e-9)
