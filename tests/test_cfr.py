"""CFR / CFR+ on Kuhn and Leduc poker, with OpenSpiel as the reference (trees, policies, exploitability)."""

import numpy as np
import pyspiel
import pytest
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import cfr as os_cfr
from open_spiel.python.algorithms import exploitability as os_exploitability

from solvers.cfr import (
    CFRPlusSolver,
    CFRSolver,
    best_response_value,
    expected_value,
    exploitability,
    nash_conv,
    regret_matching,
    uniform_policy,
)
from solvers.games import CHANCE, TERMINAL, kuhn_poker, leduc_poker

GAMES = {"kuhn_poker": kuhn_poker, "leduc_poker": leduc_poker}


def infoset_map(node, state, found):
    """Walk our tree and OpenSpiel's in step: our infoset key -> OpenSpiel's information_state_string."""
    if node.player == TERMINAL:
        assert state.is_terminal()
        assert state.returns()[0] == pytest.approx(node.utility), state.history()
        return
    if node.player == CHANCE:
        assert [a for a, _ in state.chance_outcomes()] == node.actions
        np.testing.assert_allclose([p for _, p in state.chance_outcomes()], node.probs)
    else:
        assert state.current_player() == node.player and state.legal_actions() == node.actions
        assert found.setdefault(node.infoset, state.information_state_string()) == state.information_state_string()
    for action, child in zip(node.actions, node.children):
        infoset_map(child, state.child(action), found)


def to_openspiel(name, game, policy):
    os_game = pyspiel.load_game(name)
    keys = {}
    infoset_map(game.root, os_game.new_initial_state(), keys)
    tabular = os_policy.TabularPolicy(os_game)
    for key, probs in policy.items():
        row = tabular.state_lookup[keys[key]]
        tabular.action_probability_array[row] = 0
        _, actions = game.infosets()[key]
        tabular.action_probability_array[row, actions] = probs
    return os_game, tabular, keys


@pytest.mark.parametrize("name", GAMES)
def test_tree_matches_openspiel(name):
    game = GAMES[name]()
    keys = {}
    infoset_map(game.root, pyspiel.load_game(name).new_initial_state(), keys)
    assert len(set(keys.values())) == len(keys) == len(game.infosets())  # a bijection of information sets
    assert len(keys) == {"kuhn_poker": 12, "leduc_poker": 936}[name]


def test_regret_matching_hand_checked():
    assert regret_matching([1.0, 3.0, -2.0]) == [0.25, 0.75, 0.0]
    assert regret_matching([-1.0, 0.0]) == [0.5, 0.5]


def test_kuhn_uniform_hand_checked():
    game = kuhn_poker()
    uniform = uniform_policy(game)
    # both uniform: P0's value is 1/8 (OpenSpiel's expected_game_score gives 0.125 too)
    assert expected_value(game, uniform) == pytest.approx(0.125)
    # always-pass for both: every hand is a 1-chip showdown, symmetric -> 0
    passive = {key: np.array([1.0, 0.0]) for key in uniform}
    assert expected_value(game, passive) == pytest.approx(0.0)
    # against always-pass, P1 with K bets after a pass... BR of P0 vs passive P1: bet always; P1 never calls -> +1 each
    # hand
    assert best_response_value(game, passive, 0) == pytest.approx(1.0)


def test_cfr_plus_kuhn_reaches_nash():
    game = kuhn_poker()
    policy = CFRPlusSolver(game).solve(300)
    assert nash_conv(game, policy) < 0.01
    assert expected_value(game, policy) == pytest.approx(-1 / 18, abs=0.01)


def test_cfr_kuhn_converges_slower_but_converges():
    game = kuhn_poker()
    solver = CFRSolver(game)
    first = nash_conv(game, solver.solve(10))
    later = nash_conv(game, solver.solve(290))
    assert later < first and later < 0.05


@pytest.mark.parametrize(
    "name, plus, iterations", [("kuhn_poker", False, 15), ("kuhn_poker", True, 15), ("leduc_poker", True, 2)]
)
def test_average_policy_equals_openspiel_python_solver(name, plus, iterations):
    game = GAMES[name]()
    ours = (CFRPlusSolver(game) if plus else CFRSolver(game)).solve(iterations)
    os_game = pyspiel.load_game(name)
    reference = os_cfr.CFRPlusSolver(os_game) if plus else os_cfr.CFRSolver(os_game)
    for _ in range(iterations):
        reference.evaluate_and_update_policy()
    average = reference.average_policy()
    _, _, keys = to_openspiel(name, game, ours)
    for key, probs in ours.items():
        row = average.action_probability_array[average.state_lookup[keys[key]]]
        np.testing.assert_allclose(probs, row[game.infosets()[key][1]], atol=1e-10)


@pytest.mark.parametrize("name", GAMES)
def test_exploitability_matches_openspiel(name):
    game = GAMES[name]()
    rng = np.random.default_rng(3)
    policies = {
        "uniform": uniform_policy(game),
        "cfr+": CFRPlusSolver(game).solve(30 if name == "kuhn_poker" else 3),
    }
    if name == "kuhn_poker":  # OpenSpiel's Python best response takes ~2 s per Leduc policy
        policies["random"] = {k: rng.dirichlet(np.ones(len(p))) for k, p in uniform_policy(game).items()}
    for label, policy in policies.items():
        os_game, tabular, _ = to_openspiel(name, game, policy)
        assert exploitability(game, policy) == pytest.approx(
            os_exploitability.exploitability(os_game, tabular), abs=1e-9
        ), label
        assert nash_conv(game, policy) == pytest.approx(os_exploitability.nash_conv(os_game, tabular), abs=1e-9), label
