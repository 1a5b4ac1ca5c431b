"""Ratings: OpenSkill bookkeeping vs the library on a fixed log, Weng–Lin by hand, Elo by hand, BT recovery."""

import math

import numpy as np
import pytest
from openskill.models import PlackettLuce

from solvers.ratings import ELO_SCALE, OpenSkillRatings, bradley_terry, elo_expected, elo_update

# a fixed game log: 1v1s, a 3-player free-for-all, and a 2v2 team game (werewolf-like sides)
LOG = [
    ([["a"], ["b"]], None),
    ([["b"], ["c"]], None),
    ([["c"], ["a"], ["b"]], None),
    ([["a", "b"], ["c", "d"]], [2, 1]),  # ranks: team c+d won
    ([["d"], ["a"]], [1, 1]),  # a draw
]


def test_openskill_first_game_matches_weng_lin_by_hand():
    ratings = OpenSkillRatings()
    ratings.rate([["a"], ["b"]])
    mu, sigma, beta, tau = 25.0, 25 / 3, 25 / 6, 25 / 300
    var = sigma**2 + tau**2  # σ² += τ² before the game
    c = math.sqrt(2 * (var + beta**2))
    # equal teams: p = 1/2; μ_w += σ²/c·(1 − p); σ ← σ·sqrt(1 − γ·σ²/c²·p(1 − p)), γ = σ/c
    assert ratings.mu("a") == pytest.approx(mu + var / c * 0.5)
    assert ratings.mu("b") == pytest.approx(mu - var / c * 0.5)
    gamma = math.sqrt(var) / c
    assert ratings.sigma("a") == pytest.approx(math.sqrt(var) * math.sqrt(1 - gamma * var / c**2 * 0.25))


def test_openskill_log_matches_the_library_reference():
    ours = OpenSkillRatings()
    model = PlackettLuce()
    reference = {name: model.rating(name=name) for name in "abcd"}
    for teams, ranks in LOG:
        ours.rate(teams, ranks=ranks)
        new = model.rate([[reference[n] for n in team] for team in teams], ranks=ranks)
        for team, rated in zip(teams, new):
            for name, r in zip(team, rated):
                reference[name] = r
    for name in "abcd":
        assert ours.mu(name) == pytest.approx(reference[name].mu, abs=1e-12)
        assert ours.sigma(name) == pytest.approx(reference[name].sigma, abs=1e-12)
        assert ours.conservative(name) == pytest.approx(reference[name].mu - 3 * reference[name].sigma)
    assert [row[0] for row in ours.leaderboard()] == sorted("abcd", key=lambda n: -ours.conservative(n))


def test_openskill_bad_games_are_refused():
    ratings = OpenSkillRatings()
    with pytest.raises(ValueError, match="two non-empty teams"):
        ratings.rate([["a"]])
    with pytest.raises(ValueError, match="one seat"):
        ratings.rate([["a"], ["a"]])


def test_elo_by_hand():
    assert elo_expected(1500, 1500) == 0.5
    assert elo_expected(1900, 1500) == pytest.approx(10 / 11)  # 400 points: odds 10:1
    assert elo_update(1500, 1500, 1.0, k=32) == (1516.0, 1484.0)
    a, b = elo_update(1500, 1500, 0.5)
    assert (a, b) == (1500.0, 1500.0)


def test_bradley_terry_two_players_closed_form():
    # a beats b 3 times in 4: the MLE (no prior) has σ(θ_a − θ_b) = 3/4 -> gap = ln 3 on θ, ±ln3/2 around 1500
    games = [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)]
    fit = bradley_terry(games, prior=0.0)
    gap = math.log(3) * ELO_SCALE
    np.testing.assert_allclose(fit.elo, [1500 + gap / 2, 1500 - gap / 2], atol=1e-3)


def test_bradley_terry_recovers_known_strengths_with_bootstrap_intervals():
    rng = np.random.default_rng(1)
    truth = {"p0": -1.0, "p1": 0.0, "p2": 0.5, "p3": 1.5}  # θ, mean 0.25
    names = list(truth)
    games = []
    for _ in range(3000):
        a, b = rng.choice(4, size=2, replace=False)
        p = 1 / (1 + math.exp(-(truth[names[a]] - truth[names[b]])))
        games.append((names[a], names[b], float(rng.random() < p)))
    fit = bradley_terry(games, bootstrap=40, rng=np.random.default_rng(2))
    expected = 1500 + ELO_SCALE * (np.array(list(truth.values())) - 0.25)
    assert fit.players == names
    np.testing.assert_allclose(fit.elo, expected, atol=25)  # about 0.14 on the θ scale
    assert np.all(fit.lower < fit.elo) and np.all(fit.elo < fit.upper)
    covered = np.sum((fit.lower <= expected) & (expected <= fit.upper))
    assert covered >= 3
    assert np.all(fit.upper - fit.lower < 120)
    assert list(np.argsort(fit.elo)) == [0, 1, 2, 3]


def test_bradley_terry_refuses_bad_scores():
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        bradley_terry([("a", "b", 2.0)])
    with pytest.raises(ValueError, match="no games"):
        bradley_terry([])
