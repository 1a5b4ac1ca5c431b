"""The online-learning world: PettingZoo API, loss sequences, regret by hand, FTL linear vs Hedge
sublinear through the engine, strict parsing, the run report, and an LLM run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pettingzoo.test import api_test, seed_test
from pydantic import ValidationError

from agents.scripted.online_learning import FollowTheLeader, Hedge, Uniform
from agora.rollout import Rollout
from agora.run import run_scenario
from agora.scenario import load_scenario, resolve_scenario
from agora.world import ParseError, TextWorld
from tests.conftest import SCENARIOS
from worlds.online_learning import OnlineLearningConfig, env, loss_sequence, raw_env


@pytest.mark.parametrize("sequence", ["uniform", "gaussian", "alternating", "trending"])
def test_pettingzoo_api_and_seeds(sequence):
    api_test(raw_env(sequence=sequence, rounds=8), num_cycles=20)
    api_test(env(sequence=sequence, rounds=8), num_cycles=20)
    seed_test(lambda: raw_env(sequence=sequence, rounds=8), num_cycles=20)


def test_is_a_text_world_and_validates_its_config():
    assert isinstance(raw_env(), TextWorld)
    with pytest.raises(ValidationError, match="sequence"):
        raw_env(sequence="random_walk")
    with pytest.raises(ValidationError, match="n_actions"):
        raw_env(n_actions=1)


def test_loss_sequences():
    rng = np.random.default_rng(0)
    config = OnlineLearningConfig(n_actions=3, rounds=6, sequence="alternating")
    np.testing.assert_array_equal(
        loss_sequence(config, rng), [[0.5, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1]]
    )
    for sequence in ("uniform", "gaussian", "trending"):
        losses = loss_sequence(OnlineLearningConfig(rounds=500, sequence=sequence), np.random.default_rng(1))
        assert losses.shape == (500, 3) and losses.min() >= 0 and losses.max() <= 1
    gaussian = loss_sequence(
        OnlineLearningConfig(rounds=2000, sequence="gaussian", noise=0.05), np.random.default_rng(2)
    )
    assert gaussian.std(axis=0).max() < 0.06  # each action fluctuates around its own mean
    trending = loss_sequence(
        OnlineLearningConfig(rounds=1000, sequence="trending", noise=0.0), np.random.default_rng(3)
    )
    steps = np.diff(trending, axis=0)
    assert np.abs(steps - steps[0]).max() < 1e-12  # straight lines, no noise


def test_regret_of_a_fixed_play_sequence_by_hand():
    world = raw_env(n_actions=2, rounds=3, sequence="alternating")
    world.reset(seed=0)  # losses (0.5, 0), (0, 1), (1, 0)
    for action in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5]):
        world.step(np.array(action))
    metrics = world.episode_metrics()
    # paid 0.5 + 1 + 0.5 = 2; action 0 totals 1.5, action 1 totals 1 -> Reg_3 = 1
    assert metrics["loss"] == 2.0 and metrics["best_fixed_loss"] == 1.0
    assert metrics["regret"] == 1.0 and metrics["regret_per_round"] == pytest.approx(1 / 3)
    assert world.regret_curve().tolist() == [0.5, 1.0, 1.0]  # after 2 rounds: paid 1.5, action 0 totals 0.5
    assert world.rewards == {"learner": -0.5} and world.truncations == {"learner": True}
    assert world.episode_info()["plays"][2] == [0.5, 0.5]


def test_weights_are_normalised():
    world = raw_env(n_actions=2, rounds=2, sequence="alternating")
    world.reset(seed=0)
    world.step(np.array([0.0, 0.0]))  # no weight: uniform
    world.step(np.array([3.0, 1.0]))
    np.testing.assert_allclose(world.plays, [[0.5, 0.5], [0.75, 0.25]])


def play(policy, sequence: str, rounds: int, n_actions: int = 2, episodes: int = 1):
    make = lambda: raw_env(n_actions=n_actions, rounds=rounds, sequence=sequence)  # noqa: E731
    return Rollout(make, {"learner": policy}, {"learner": "x"}, seed=0, record_observations=False).run(episodes)


def test_ftl_regret_is_linear_on_alternating_losses_and_hedge_sublinear():
    ratios = {"ftl": [], "hedge": []}
    for T in (100, 1600):
        (ftl,) = play(FollowTheLeader(FollowTheLeader.Config(), seed=0), "alternating", T)
        (hedge,) = play(Hedge(Hedge.Config(), seed=0), "alternating", T)
        assert ftl.metrics["regret"] == pytest.approx(T / 2, abs=1)  # it always picks the action about to lose
        assert hedge.metrics["regret"] <= np.sqrt(T * np.log(2) / 2)  # Hedge's bound for losses in [0, 1]
        ratios["ftl"].append(ftl.metrics["regret_per_round"])
        ratios["hedge"].append(hedge.metrics["regret_per_round"])
    assert ratios["ftl"][1] == pytest.approx(ratios["ftl"][0], abs=0.01)  # Reg_T / T stays at 1/2
    assert ratios["hedge"][1] < ratios["hedge"][0] / 3  # shrinks like 1/√T (4x here)


def test_uniform_has_linear_regret_on_stochastic_losses_and_hedge_does_not():
    uniform = play(Uniform(Uniform.Config(), seed=0), "gaussian", 1000, n_actions=3, episodes=3)
    hedge = play(Hedge(Hedge.Config(), seed=0), "gaussian", 1000, n_actions=3, episodes=3)
    assert np.mean([e.metrics["regret_per_round"] for e in uniform]) > 0.05  # pays the mean, not the best mean
    assert np.mean([e.metrics["regret_per_round"] for e in hedge]) < np.sqrt(np.log(3) / 2 / 1000)


def test_parser_is_strict_with_actionable_messages():
    world = raw_env(n_actions=3)
    np.testing.assert_allclose(world.parse("learner", "PLAY 0.2 0.5 0.3"), [0.2, 0.5, 0.3])
    np.testing.assert_allclose(
        world.parse("learner", "I'd rather display it.\n**Play:** 0.2, 0.5, 0.3."), [0.2, 0.5, 0.3]
    )
    with pytest.raises(ParseError, match="no 'PLAY' line"):
        world.parse("learner", "I will play 0.2 0.5 0.3")  # PLAY starts its line
    np.testing.assert_allclose(
        world.parse("learner", "PLAY 0.333 0.333 0.333"), [1 / 3] * 3
    )  # within 0.01: renormalised
    cases = {
        "I would pick action 1": "no 'PLAY' line",
        "PLAY 0.5 0.5": "exactly 3 probabilities",
        "PLAY 0.5 0.5 0.5": "sum to 1.5",
        "PLAY 1.5 -0.5 0": "between 0 and 1",
        "PLAY 0.2 0.5 zero": "numbers only",
        "PLAY 1 0 0\nPLAY 0 1 0": "more than one",
    }
    for text, message in cases.items():
        with pytest.raises(ParseError, match=message):
            world.parse("learner", text)
    rng = np.random.default_rng(1)
    for _ in range(300):
        text = (
            "".join(map(chr, rng.integers(0, 0x10FFFF, size=int(rng.integers(0, 50)))))
            .encode("utf-8", "replace")
            .decode("utf-8", "replace")
        )
        try:
            p = world.parse("learner", "PLAY " + text if rng.random() < 0.5 else text)
            assert p.shape == (3,) and abs(p.sum() - 1) < 1e-9
        except ParseError:
            pass
    for action in ([1, 0, 0], [0.2, 0.3, 0.5], [0.01, 0.33, 0.66]):  # on the hundredths grid: exact
        np.testing.assert_allclose(
            world.parse("learner", world.render_action("learner", np.array(action))), action, atol=1e-12
        )
    # off the grid: rounded to hundredths that still sum to 1.00 (largest remainders round up)
    assert world.render_action("learner", [1 / 3] * 3) == "PLAY 0.34 0.33 0.33"
    assert world.render_action("learner", [0.125, 0.125, 0.75]) == "PLAY 0.13 0.12 0.75"
    assert world.render_action("learner", [0.996, 0.002, 0.002]) == "PLAY 1.00 0.00 0.00"
    assert abs(world.fallback_action("learner", np.random.default_rng(0)).sum() - 1) < 1e-12


def test_prompt_shows_the_loss_history_and_totals():
    world = raw_env(n_actions=2, rounds=3, sequence="alternating")
    world.reset(seed=0)
    assert "No losses are known yet" in world.prompt("learner", world.observe("learner"))
    world.step(np.array([1.0, 0.0]))
    world.step(np.array([1.0, 0.0]))
    text = world.prompt("learner", world.observe("learner"))
    assert (
        "  1: 0.50 0.00\n  2: 0.00 1.00" in text and "action 0 0.50, action 1 1.00" in text and "round 3 of 3" in text
    )
    demo = world.demonstration("learner")
    np.testing.assert_allclose(world.parse("learner", demo[1]["content"]), [0.5, 0.5])


def test_scripted_scenario_reports_regret_and_its_curve(tracking_uri):
    from mlflow import MlflowClient

    scenario = load_scenario(SCENARIOS / "online_learning_scripted.yaml", {"episodes": 3})
    result = run_scenario(scenario)
    assert result.summary["eval/regret"] <= np.sqrt(200 * np.log(2) / 2)
    assert result.summary["eval/regret_per_round"] == pytest.approx(result.summary["eval/regret"] / 200)
    client = MlflowClient(tracking_uri)
    assert len(client.get_metric_history(result.run_id, "regret_curve")) == 200
    assert "figures/regret_curve.png" in {a.path for a in client.list_artifacts(result.run_id, "figures")}
    ftl = run_scenario(
        load_scenario(
            SCENARIOS / "online_learning_scripted.yaml", {"episodes": 3, "agents": {"learner": {"policy": "ftl"}}}
        ),
        track=False,
    )
    assert ftl.summary["eval/regret_per_round"] == pytest.approx(0.5, abs=0.01)


def test_llm_text_path_with_a_tiny_model(tiny_model_dir):
    """A random tiny model writes garbage: every turn is re-prompted, then the fallback distribution is played."""
    scenario = resolve_scenario(
        {
            "name": "ol-llm",
            "world": {"id": "online_learning", "n_actions": 2, "rounds": 3},
            "episodes": 2,
            "seed": 0,
            "agents": {"learner": {"policy": "llm", "model": tiny_model_dir, "max_new_tokens": 4}},
        }
    )
    result = run_scenario(scenario, track=False)
    assert len(result.episodes) == 2 and all(len(e.steps) == 3 for e in result.episodes)
    assert result.summary["parse/failure_rate"] > 0 and "eval/regret" in result.summary


@pytest.mark.model
def test_shipped_llm_scenario_runs_with_the_embedded_model():
    world = {"id": "online_learning", "n_actions": 2, "rounds": 3, "sequence": "gaussian"}
    learner = {"learner": {"policy": "llm", "max_new_tokens": 16}}
    scenario = load_scenario(SCENARIOS / "online_learning.yaml", {"episodes": 1, "world": world, "agents": learner})
    result = run_scenario(scenario, track=False)
    assert all(len(e.steps) == 3 for e in result.episodes)
    assert 0 <= result.summary["parse/fallback_rate"] <= 1 and np.isfinite(result.summary["eval/regret"])


# --- hostile replies (issue #14) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["\n" * 31_000 + "PLAY 0.2 0.5 0.3", "play\n" * 6_000, "PLAY 0.2 " + " " * 31_000 + "x", "PLAY " + "1" * 31_000],
)
def test_parser_takes_linear_time(text):
    """100k newlines took 44 s (a MULTILINE regex whose leading whitespace class crossed lines)."""
    world = raw_env()
    start = time.perf_counter()
    try:
        assert world.parse("learner", text).shape == (3,)
    except ParseError:
        pass
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("text", ["PLAY 0.5.5 0", "PLAY 0.5 0.5 0\x07", "PLAY 1e309 0 0"])
def test_parser_rejects_glued_numbers_and_binary(text):
    with pytest.raises(ParseError):
        raw_env().parse("learner", text)
