"""Meta-solvers: hand-checked games, and OpenSpiel's alpha-Rank as the reference."""

import numpy as np
import pytest
from open_spiel.python.egt import alpharank as os_alpharank

from solvers.meta import (
    alpharank,
    exploitability,
    fixation_probability,
    nash_conv,
    replicator_dynamics,
    zero_sum_nash,
)
from worlds.matrix import GAMES


def table(name):
    payoffs = np.asarray(GAMES[name][1], dtype=float)
    return payoffs[..., 0], payoffs[..., 1]


def test_rps_nash_is_uniform_with_value_zero():
    A, _ = table("rock_paper_scissors")
    x, y, value = zero_sum_nash(A)
    np.testing.assert_allclose(x, [1 / 3] * 3, atol=1e-8)
    np.testing.assert_allclose(y, [1 / 3] * 3, atol=1e-8)
    assert value == pytest.approx(0.0, abs=1e-9)


def test_biased_zero_sum_nash_hand_checked():
    # A = [[2, -1], [-1, 1]]: row indifference 2q - (1-q) = -q + (1-q) -> q = 2/5; value = 1/5; x = (2/5, 3/5)
    x, y, value = zero_sum_nash(np.array([[2.0, -1.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(x, [0.4, 0.6], atol=1e-8)
    np.testing.assert_allclose(y, [0.4, 0.6], atol=1e-8)
    assert value == pytest.approx(0.2)


def test_matching_pennies_uniform_has_zero_exploitability():
    A, B = table("matching_pennies")
    assert nash_conv(A, B, [0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    # pure heads vs uniform: the column player gains 1 by best-responding with tails -> NashConv 1, expl 1/2
    assert nash_conv(A, B, [1, 0], [0.5, 0.5]) == pytest.approx(1.0)
    assert exploitability(A, B, [1, 0], [0.5, 0.5]) == pytest.approx(0.5)


def test_rps_pure_rock_exploitability():
    A, B = table("rock_paper_scissors")
    # both play rock: each gains 1 by switching to paper -> NashConv 2
    assert nash_conv(A, B, [1, 0, 0], [1, 0, 0]) == pytest.approx(2.0)


def test_prisoners_dilemma_defect_is_the_equilibrium():
    A, B = table("prisoners_dilemma")
    assert nash_conv(A, B, [0, 1], [0, 1]) == pytest.approx(0.0)
    assert nash_conv(A, B, [1, 0], [1, 0]) == pytest.approx(4.0)  # 5 - 3 for each player
    x, y = replicator_dynamics(A, B, [0.9, 0.1], [0.9, 0.1], iterations=5000, dt=0.05)
    assert x[1] > 0.99 and y[1] > 0.99
    pi = alpharank(A, B)
    assert pi[1, 1] > 0.99  # (defect, defect) holds the mass


def test_replicator_rps_time_average_is_uniform():
    A, B = table("rock_paper_scissors")
    x, y = replicator_dynamics(A, B, [0.5, 0.3, 0.2], [0.2, 0.5, 0.3], iterations=20000, dt=0.01, average=True)
    np.testing.assert_allclose(x, [1 / 3] * 3, atol=0.03)
    np.testing.assert_allclose(y, [1 / 3] * 3, atol=0.03)


def test_fixation_probability_limits():
    assert fixation_probability(1.0, 1.0, m=50) == pytest.approx(1 / 50)
    u = 0.01 * (1.0 - 0.5)
    assert fixation_probability(1.0, 0.5, alpha=0.01, m=10) == pytest.approx((1 - np.exp(-u)) / (1 - np.exp(-10 * u)))
    assert fixation_probability(0.0, 1.0, alpha=100, m=50) == pytest.approx(0.0, abs=1e-300)  # no overflow


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # inside OpenSpiel's fixation probability at α = 100
@pytest.mark.parametrize("name", ["rock_paper_scissors", "matching_pennies", "prisoners_dilemma"])
@pytest.mark.parametrize("alpha", [0.5, 100.0])
def test_alpharank_matches_openspiel(name, alpha):
    A, B = table(name)
    _, _, pi_ref, _, _ = os_alpharank.compute([A, B], m=50, alpha=alpha)
    np.testing.assert_allclose(alpharank(A, B, alpha=alpha, m=50).ravel(), pi_ref, atol=1e-6)


def test_alpharank_matches_openspiel_random_game():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    _, _, pi_ref, _, _ = os_alpharank.compute([A, B], m=20, alpha=2.0)
    np.testing.assert_allclose(alpharank(A, B, alpha=2.0, m=20).ravel(), pi_ref, atol=1e-6)
