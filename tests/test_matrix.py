"""The matrix world: PettingZoo parallel API, payoffs by hand, custom tables, strict parsing."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test
from pydantic import ValidationError

from agora.world import ParseError, TextWorld
from worlds.matrix import parallel_env


@pytest.mark.parametrize("game", ["rock_paper_scissors", "matching_pennies", "prisoners_dilemma"])
def test_pettingzoo_parallel_api(game):
    parallel_api_test(parallel_env(game=game, rounds=5), num_cycles=20)
    parallel_seed_test(lambda: parallel_env(game=game, rounds=5), num_cycles=20)


def test_is_a_text_world():
    assert isinstance(parallel_env(), TextWorld)


def test_prisoners_dilemma_payoffs_by_hand():
    env = parallel_env(game="prisoners_dilemma", rounds=3)
    env.reset(seed=0)
    plays = [(0, 0), (0, 1), (1, 1)]  # (C,C) -> 3,3 ; (C,D) -> 0,5 ; (D,D) -> 1,1
    rewards = [env.step({"player_0": a, "player_1": b})[1] for a, b in plays]
    assert rewards == [
        {"player_0": 3.0, "player_1": 3.0},
        {"player_0": 0.0, "player_1": 5.0},
        {"player_0": 1.0, "player_1": 1.0},
    ]
    assert env.agents == [] and env.episode_metrics()["score/player_1"] == 9.0


def test_observation_is_from_each_players_side():
    env = parallel_env(rounds=2)
    env.reset(seed=0)
    obs, *_ = env.step({"player_0": 0, "player_1": 2})
    assert obs["player_0"]["history"][0].tolist() == [0, 2]
    assert obs["player_1"]["history"][0].tolist() == [2, 0]
    assert obs["player_0"]["history"][1].tolist() == [-1, -1]


def test_custom_game_and_its_validation():
    env = parallel_env(game="custom", actions=["stag", "hare"], payoffs=[[[4, 4], [0, 3]], [[3, 0], [3, 3]]], rounds=1)
    env.reset()
    assert env.step({"player_0": 0, "player_1": 1})[1] == {"player_0": 0.0, "player_1": 3.0}
    with pytest.raises(ValidationError, match="2x2 table"):
        parallel_env(game="custom", actions=["a", "b"], payoffs=[[[1, 1]]])
    with pytest.raises(ValidationError, match="only for game: custom"):
        parallel_env(actions=["a", "b"])


def test_parser_rejects_with_actionable_messages_and_never_crashes():
    env = parallel_env()
    with pytest.raises(ParseError, match="choose one of: rock, paper, scissors"):
        env.parse("player_0", "ACTION: lizard")
    with pytest.raises(ParseError, match="more than one"):
        env.parse("player_0", "ACTION: rock\nACTION: paper")
    rng = np.random.default_rng(1)
    for _ in range(300):
        text = (
            "".join(map(chr, rng.integers(0, 0x10FFFF, size=int(rng.integers(0, 50)))))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        )
        try:
            assert env.parse("player_0", text) in range(3)
        except ParseError:
            pass
    for action in range(3):
        assert env.parse("player_0", env.render_action("player_0", action)) == action


def test_episode_metrics_give_each_seats_external_regret_by_hand():
    env = parallel_env(rounds=3)
    env.reset(seed=0)
    for _ in range(3):  # rock vs paper three times
        env.step({"player_0": 0, "player_1": 1})
    metrics = env.episode_metrics()
    # player_0 lost 3; scissors would have won 3 -> regret 6, 2 per round; paper was player_1's best reply -> 0
    assert metrics["regret/player_0"] == 6.0 and metrics["regret_per_round/player_0"] == 2.0
    assert metrics["regret/player_1"] == 0.0
    assert env.regret_curve(env.history, 0).tolist() == [2.0, 4.0, 6.0]


def run_matrix(player_0: dict, rounds: int, tracking: bool = False):
    from agora.run import run_scenario
    from agora.scenario import resolve_scenario

    scenario = resolve_scenario(
        {
            "name": "regret",
            "world": {"id": "matrix", "rounds": rounds},
            "episodes": 4,
            "seed": 0,
            "agents": {"player_0": player_0, "player_1": {"policy": "mixed", "probs": [0.2, 0.6, 0.2]}},
        }
    )
    return run_scenario(scenario, track=tracking)


def test_agora_run_logs_regret_hedge_small_always_rock_not(tracking_uri):
    from mlflow import MlflowClient

    hedge = run_matrix({"policy": "hedge"}, rounds=300, tracking=True)
    rock = run_matrix({"policy": "mixed", "probs": [1, 0, 0]}, rounds=300)
    assert hedge.summary["eval/regret_per_round/player_0"] < 0.15
    # rock vs (0.2, 0.6, 0.2) earns -0.4 a round where scissors would earn +0.4: regret/T about 0.8
    assert rock.summary["eval/regret_per_round/player_0"] > 0.6
    curve = hedge.report.series["regret_curve/player_0"]
    assert [t for t, _ in curve] == list(range(1, 301)) and curve[-1][1] == pytest.approx(
        hedge.summary["eval/regret/player_0"]
    )
    client = MlflowClient(tracking_uri)
    assert client.get_run(hedge.run_id).data.metrics["eval/regret_per_round/player_0"] < 0.15
    assert len(client.get_metric_history(hedge.run_id, "regret_curve/player_0")) == 300
    assert "figures/regret_curve.png" in {a.path for a in client.list_artifacts(hedge.run_id, "figures")}


# --- hostile replies and actions (issue #14) ------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ACTION: rock", 0),
        ("  **Action:** Paper.", 1),
        ("I thought about it.\n> action: `scissors`", 2),
        ("ACTION: rock\nACTION: ROCK", 0),
    ],
)
def test_parser_reads_one_action_at_a_line_start(text, expected):
    assert parallel_env().parse("player_0", text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("ACTION: rock paper", "not one action"),  # was rock
        ("My action: rock", "no 'ACTION"),  # was rock: the label must start its line
        ("ACTION: rock\x00", "control characters"),
        ("ACTION: " + "rock " * 3000, "not one action"),
        ("ACTION: rock" + " " * 40_000, "more than 32000"),
    ],
)
def test_parser_rejects_what_is_not_exactly_one_action(text, message):
    with pytest.raises(ParseError, match=message):
        parallel_env().parse("player_0", text)


@pytest.mark.parametrize("text", ["action" + " " * 31_000 + "x", "ACTION:" * 4_000, "action\n" * 4_000])
def test_parser_takes_linear_time(text):
    """'action' + spaces took 28 s at 100k characters (quadratic backtracking)."""
    start = time.perf_counter()
    with pytest.raises(ParseError):
        parallel_env().parse("player_0", text)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("action", [-1, 3, 1.0, "1", None, True, np.int64(7)])
def test_step_rejects_actions_outside_the_action_space(action):
    """-1 used to play the last action, then episode_metrics raised."""
    env = parallel_env(rounds=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside its action space"):
        env.step({"player_0": action, "player_1": 0})
    with pytest.raises(ValueError, match="no action for player_1"):
        env.step({"player_0": 0})
    assert env.history == []
    env.step({"player_0": np.int64(2), "player_1": np.array(1)})
    assert env.history == [(2, 1)] and env.episode_metrics()["freq/paper"] == 0.5
