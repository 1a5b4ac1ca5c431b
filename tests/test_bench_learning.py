"""The learning comparisons of bench/learning/ are fair: every arm runs the same schedule and optimiser from the same
seed, only what is compared differs (the trainer, the matchmaking rule); paired differences are per held-out seed; the
league's standings are read by hand-checked formulas."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from agora.campaign import load_campaign
from bench.learning import common, hiper, matchmaking

FILE = Path(__file__).resolve().parent.parent / hiper.FILE


@pytest.mark.parametrize("method", ["grpo", "gigpo", "grpo-plan"])
def test_every_method_gets_the_same_budget_as_hiper(method):
    data = yaml.safe_load(FILE.read_text())
    base = load_campaign(FILE)
    other = load_campaign(FILE, hiper.method_overrides(data, method))
    for key in ("iterations", "groups_per_iteration", "group_size", "seed", "concurrency", "max_retries"):
        assert getattr(other.spec, key) == getattr(base.spec, key), key
    assert other.spec.evaluation == base.spec.evaluation and other.spec.learner.lora == base.spec.learner.lora
    for key in ("learning_rate", "epochs", "mini_batches", "micro_batch_size", "epsilon", "beta", "max_grad_norm"):
        assert getattr(other.trainer_config, key) == getattr(base.trainer_config, key), key
    assert other.trainer_entry.name == "grpo" and other.name != base.name  # its own run and checkpoints
    assert other.trainer_config.estimator == ("gigpo" if method == "gigpo" else "grpo")
    assert other.learner_policy == ("plan_execute" if method == "grpo-plan" else "llm")
    same = {"model", "temperature", "max_new_tokens", "demonstrations", "constrained"}
    assert {k: getattr(other.learner_config, k) for k in same} == {k: getattr(base.learner_config, k) for k in same}


def test_the_report_pairs_episodes_by_held_out_seed():
    def row(arm, scores):
        final = {"eval/greedy/parse_failure_rate": 0.0}
        games = [{"seed": s, "score": x, "win": 1.0, "turns": 4, "deal": 1.0} for s, x in zip([7, 8, 9], scores)]
        before = [{**g, "score": 0.0, "win": 0.0} for g in games]
        return {
            "arm": arm,
            "seconds": 1.0,
            "first": final,
            "final": final,
            "history": {0: 1.0},
            "before": {"greedy": before},
            "after": {"greedy": games},
        }

    lines, table = common.report([row("hiper", [1.0, 2.0, 3.0]), row("grpo", [2.0, 4.0, 3.0])], baseline="hiper")
    assert table["vs_baseline"][1] == pytest.approx(1.0)  # (1 + 2 + 0) / 3
    assert table["delta"][1] == pytest.approx(3.0)  # (2 + 4 + 3) / 3, each after - before on its seed
    low, high = table["vs_baseline_low"][1], table["vs_baseline_high"][1]
    assert low == pytest.approx(1.0 - 4.302653 * 1.0 / np.sqrt(3), rel=1e-5) and high > 1.0
    assert "| grpo | greedy |" in lines[3] and "+1.00" in lines[3]


LEAGUE = Path(__file__).resolve().parent.parent / matchmaking.FILE


def test_every_matchmaking_arm_gets_the_same_budget():
    arms = matchmaking.arms(str(LEAGUE))
    assert [a.name for a in arms] == ["pfsp", "uniform", "latest"]
    campaigns = [load_campaign(LEAGUE, arm.changes) for arm in arms]
    specs = [c.spec.model_dump(mode="json") for c in campaigns]
    for arm, spec in zip(arms, specs):
        assert spec["league"].pop("matchmaking") == arm.name and arm.collect is matchmaking.league_standing
        assert spec.pop("name") == f"league-matchmaking-{arm.name}"  # its own run and checkpoints
    assert specs[0] == specs[1] == specs[2]  # the schedule, optimiser, seed, LoRA, league and evaluation
    assert specs[0]["iterations"] == matchmaking.BUDGET["iterations"] and specs[0]["league"]["payoff"]["every"] == 0
    assert set(campaigns[0].evaluations) == {"fair", "greedy"}  # the fixed panel, the same for every arm


def hand_made_league():
    """Versions fair, greedy, learner-0, learner-2 (the final learner); U[k, l] = P(alice side wins), k as alice."""
    versions = ["fair", "greedy", "learner-0", "learner-2"]
    U = np.array(
        [
            [0.5, 0.25, 0.5, 0.0],
            [0.75, 0.5, 1.0, 1.0],  # greedy as alice always beats learner-2 as bob
            [0.5, 0.0, 0.5, 0.25],
            [1.0, 0.25, 0.75, 0.5],  # learner-2 as alice: greedy as bob wins 3 in 4
        ]
    )
    leaderboard = [
        {"step": 1, "version": "learner", "mu": 20.0, "ci95_low": 16.0, "ci95_high": 24.0},
        {"step": 2, "version": "learner-2", "mu": 27.0, "ci95_low": 23.08, "ci95_high": 30.92},
        {"step": 2, "version": "learner", "mu": 24.0, "ci95_low": 22.0, "ci95_high": 26.0},
        {"step": 2, "version": "greedy", "mu": 30.0, "ci95_low": 28.0, "ci95_high": 32.0},
    ]
    return versions, U, leaderboard


def test_the_final_learners_exploitability_and_ratings_by_hand():
    versions, U, leaderboard = hand_made_league()
    elo = {"learner-2": (1550.0, 1500.0, 1600.0), "greedy": (1600.0, 1550.0, 1650.0)}
    out = matchmaking.learner_standing("learner-2", leaderboard, versions, U, elo)
    # as bob, learner-2 scores 1 - 0.5 against itself; the best alice (greedy) gets 1.0 against it: gain 0.5
    # as alice, learner-2 scores 0.5 against itself; the best bob (greedy) gets 1 - 0.25 = 0.75 against it: gain 0.25
    assert (out["gain_a"], out["gain_b"]) == pytest.approx((0.5, 0.25))
    assert out["exploitability"] == pytest.approx((0.5 + 0.25) / 2)
    assert (out["rating"], out["rating_low"], out["rating_high"]) == pytest.approx((27.0, 23.08, 30.92))  # step 2's
    assert (out["live_rating"], out["live_rating_low"], out["live_rating_high"]) == pytest.approx((24.0, 22.0, 26.0))
    assert (out["elo"], out["elo_low"], out["elo_high"]) == (1550.0, 1500.0, 1600.0)
    assert (out["step"], out["versions"]) == (2.0, 4.0)
    # a learner that is the league's best response to itself on both sides is unexploitable
    assert matchmaking.learner_standing("greedy", leaderboard, versions, U, elo)["exploitability"] == 0.0


def test_collect_reads_the_final_snapshot_from_the_finished_league():
    from solvers.population import PolicyVersion, Population
    from solvers.ratings import BradleyTerryFit

    versions, U, leaderboard = hand_made_league()
    population = Population(
        [
            PolicyVersion("fair", "scripted"),
            PolicyVersion("greedy", "scripted"),
            PolicyVersion("learner-0", "lora"),
            PolicyVersion("learner-1", "lora", parent="learner-0"),
            PolicyVersion("learner-2", "lora", parent="learner-1"),
        ]
    )
    fit = BradleyTerryFit(
        ["greedy", "learner-2"], np.array([1600.0, 1400.0]), np.array([1550.0, 1300.0]), np.array([1650.0, 1500.0])
    )
    league = SimpleNamespace(population=population, leaderboard=leaderboard)
    opponents = SimpleNamespace(
        league=league, payoff_matrix=(versions, U), fit=fit, payoff_metrics={"league/exploitability": 0.125}
    )
    out = matchmaking.league_standing(SimpleNamespace(opponents=opponents), None)
    assert out["exploitability"] == pytest.approx(0.375) and out["rating"] == 27.0
    assert (out["elo"], out["elo_low"], out["elo_high"]) == (1400.0, 1300.0, 1500.0)
    assert out["meta_exploitability"] == 0.125
