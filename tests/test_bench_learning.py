"""The HiPER comparison of bench/learning/ is fair: every method runs the same schedule and optimiser from the same
seed, only the trainer (and the flat methods' reply format) differs (pairing: tests/test_bench_learning_common.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from agora.campaign import load_campaign
from bench.learning import hiper, matchmaking

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


def test_the_judge_arms_share_the_budget_and_differ_only_in_the_group_reward():
    """spo_judge: outcome, spo-llm and arena-llm run the same schedule, evaluation, decoding, LoRA and optimiser;
    only `trainer.group_reward` and `trainer.judge` (and the run name) differ."""
    from bench.learning import spo_judge

    root = Path(__file__).resolve().parent.parent
    arms = spo_judge.arms(str(root / spo_judge.FILE))
    assert [a.name for a in arms] == ["outcome", "spo-llm", "arena-llm"]
    loaded = [load_campaign(a.file, a.changes) for a in arms]
    base = loaded[0]
    for other in loaded[1:]:
        assert other.spec.model_dump(exclude={"name", "trainer"}) == base.spec.model_dump(exclude={"name", "trainer"})
        mine, theirs = other.trainer_config.model_dump(), base.trainer_config.model_dump()
        assert {k for k in mine if mine[k] != theirs[k]} == {"group_reward", "judge"}
        assert other.learner_config == base.learner_config and other.name != base.name
    assert base.spec.learner.constrained and base.spec.iterations == spo_judge.BUDGET["iterations"]
    assert [c.trainer_config.group_reward for c in loaded] == ["return", "spo", "arena"]
    assert [c.trainer_config.judge.id for c in loaded] == ["outcome", "llm", "llm"]
    assert loaded[1].trainer_config.judge == loaded[2].trainer_config.judge
    assert loaded[1].trainer_config.judge.rubric == spo_judge.RUBRIC


def test_judged_quality_pairs_by_seed_and_agreement_counts_only_decided_pairs():
    """P(after > before) is asked of the judge for the episodes of one held-out seed; the agreement with the score
    is 1 / 0 / 1/2 per pair whose scores differ (judge for the higher, for the lower, undecided), pairs with equal
    scores left out."""
    from agora.trajectory import Episode
    from bench.learning import spo_judge
    from trainers.judges import OutcomeJudge

    def episode(seed, mine, theirs):
        return Episode(index=0, seed=seed, policies={}, returns={"alice": mine, "bob": theirs})

    before = [episode(1, 2.0, 5.0), episode(2, 4.0, 4.0), episode(3, 3.0, 3.0)]
    after = [episode(3, 1.0, 3.0), episode(1, 6.0, 1.0), episode(9, 9.0, 0.0)]  # seed 9 was not played before
    pairs = spo_judge.judged_pairs(OutcomeJudge(), before, after, ["alice"])
    got = [(r["seed"], r["p"], r["score"], r["score_before"]) for r in pairs]
    assert got == [(3, 0.0, 1.0, 3.0), (1, 1.0, 6.0, 2.0)]  # P(after > before): the after episode is a
    rows = [
        {"p": 0.9, "score": 2.0, "score_before": 1.0},  # agrees
        {"p": 0.2, "score": 2.0, "score_before": 1.0},  # disagrees
        {"p": 0.5, "score": 0.0, "score_before": 1.0},  # undecided: half
        {"p": 0.1, "score": 0.0, "score_before": 1.0},  # agrees
        {"p": 0.9, "score": 1.0, "score_before": 1.0},  # equal scores: left out
    ]
    assert spo_judge.judge_agreement(rows) == (pytest.approx((1 + 0 + 0.5 + 1) / 4), 4)
    assert np.isnan(spo_judge.judge_agreement(rows[-1:])[0])
    history = {
        0: {"train/judge_calls": 56.0, "train/judge_model_calls_total": 100.0, "train/judge_cache_hits_total": 2.0},
        1: {"train/judge_calls": 56.0, "train/judge_model_calls_total": 180.0, "train/judge_cache_hits_total": 9.0},
    }
    assert spo_judge.judge_costs(history) == {"judge_calls": 112.0, "judge_model_calls": 180.0, "judge_cache_hits": 9.0}
    assert spo_judge.judge_costs({0: {"train/reward/learner": 1.0}})["judge_calls"] == 0.0


def test_lspo_report_pairs_each_side_with_the_rule_based_baseline_by_seed():
    """lspo_werewolf's table on a hand-made history: Wilson win rates of the latent side and of the rule-based
    baseline on the same games, the gain as a t interval of per-seed differences, the latent game beside them."""
    from bench.learning import lspo_werewolf
    from campaigns.evaluation import wilson_interval

    def games(village, wolves):
        return [
            {"seed": 10 + k, "village": v, "werewolves": w, "draw": 1.0 - v - w}
            for k, (v, w) in enumerate(zip(village, wolves))
        ]

    held_out = {
        0: {
            "latent_village": games([1, 0, 0, 0], [0, 1, 1, 0]),
            "latent_werewolves": games([0, 0, 1, 0], [1, 1, 0, 1]),
            "rule_based": games([1, 1, 0, 0], [0, 0, 1, 1]),
        },
        1: {
            "latent_village": games([1, 1, 1, 0], [0, 0, 0, 1]),
            "latent_werewolves": games([0, 0, 0, 0], [1, 1, 1, 1]),
            "rule_based": games([1, 1, 0, 0], [0, 0, 1, 1]),
        },
    }
    history = {
        0: {"cfr/nash_conv": 0.0, "cfr/utility_spread": 0.5, "train/pairs": 4.0, "train/loss": 0.6931},
        1: {"cfr/nash_conv": 0.01, "cfr/utility_stderr": 0.2, "cfr/utility_spread": 1.0, "train/accuracy": 0.5},
    }
    lines, table = lspo_werewolf.report(history, held_out)
    assert table["iteration"] == [0, 0, 1, 1] and table["side"] == ["village", "werewolves"] * 2
    assert table["games"] == [4] * 4
    assert table["win"] == [0.25, 0.75, 0.75, 1.0] and table["baseline"] == [0.5, 0.5, 0.5, 0.5]
    assert (table["win_low"][0], table["win_high"][0]) == pytest.approx(wilson_interval(1.0, 4))
    assert (table["baseline_low"][1], table["baseline_high"][1]) == pytest.approx(wilson_interval(2.0, 4))
    # iteration 0, village side: per-seed differences 0, -1, 0, 0 (mean -0.25, s = 0.5)
    half = 3.182446 * 0.5 / 2
    assert table["gain"][0] == pytest.approx(-0.25)
    assert (table["gain_low"][0], table["gain_high"][0]) == pytest.approx((-0.25 - half, -0.25 + half), rel=1e-5)
    assert table["gain"][3] == pytest.approx(0.5)  # werewolves 1,1,1,1 against 0,0,1,1 on the same seeds
    assert np.isnan(table["utility_stderr"][0]) and table["utility_stderr"][2] == 0.2
    assert table["utility_spread"] == [0.5, 0.5, 1.0, 1.0] and table["nash_conv"][2] == 0.01
    assert "| 0 | village | 4 | 0.25 [" in lines[2] and "-0.25 [" in lines[2]
    assert lines[-1].startswith("| 1 | nan | 0.0100 | nan | 0.2000 | 1.0000 |")
    village, wolves = lspo_werewolf.figure(table).axes
    assert list(village.lines[-2].get_ydata()) == [0.5, 0.5]  # the baseline line
    assert list(wolves.lines[0].get_ydata()) == [0.75, 1.0]  # the latent werewolves' win rate per iteration


def test_the_kto_werewolf_arms_share_the_budget():
    """kto and grpo: the same werewolf games (world, learner seats, village, schedule, seed, evaluation, LoRA,
    sampling), learning rate and optimiser settings; only the trainer differs, with GRPO's optimiser steps set to
    KTO's expected count."""
    from bench.learning import kto_werewolf

    root = Path(__file__).resolve().parent.parent
    kto, grpo = (
        load_campaign(root / arm.file, arm.changes) for arm in kto_werewolf.arms(str(root / kto_werewolf.FILE))
    )
    for key in ("iterations", "groups_per_iteration", "group_size", "seed", "concurrency", "max_retries"):
        assert getattr(grpo.spec, key) == getattr(kto.spec, key), key
    assert grpo.spec.evaluation == kto.spec.evaluation and grpo.spec.learner.lora == kto.spec.learner.lora
    assert grpo.spec.world == kto.spec.world and grpo.spec.opponents == kto.spec.opponents
    assert grpo.learner_config == kto.learner_config and kto.learner_config.constrained
    assert grpo.learner_seats == kto.learner_seats == ["werewolf_0", "werewolf_1"]
    for key in kto_werewolf.SHARED:
        assert getattr(grpo.trainer_config, key) == getattr(kto.trainer_config, key), key
    assert (kto.trainer_entry.name, kto.trainer_config.loss) == ("preference", "kto")
    assert grpo.trainer_entry.name == "grpo" and grpo.name != kto.name  # its own run and checkpoints
    data = yaml.safe_load((root / kto_werewolf.FILE).read_text())
    assert grpo.trainer_config.mini_batches == kto_werewolf.kto_steps(data) and grpo.trainer_config.epochs == 1
    assert set(kto.evaluations) == {"rule_based"} and kto.spec.evaluation.seed != kto.spec.seed


def test_kto_steps_is_labelled_decisions_over_the_micro_batch():
    from bench.learning.kto_werewolf import kto_steps

    data = {"groups_per_iteration": 2, "group_size": 6, "trainer": {"micro_batch_size": 16, "epochs": 3}}
    # 12 games x 10 decisions x 0.8 labelled = 96 labels -> 96 / 16 = 6 steps an epoch
    assert kto_steps(data) == 6
    assert kto_steps(data, decisions_per_game=6.0, labelled=0.75) == 4  # 54 labels -> ceil(54 / 16)
    data["trainer"]["micro_batch_size"] = 64
    assert kto_steps(data) == 2  # ceil(96 / 64)


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
