"""bench/learning/common.py pairs held-out games by seed and its experiments give every arm the same budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agora.campaign import load_campaign
from bench.learning import common, gigpo, grpo_bargain

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = ("iterations", "groups_per_iteration", "group_size", "seed", "concurrency", "max_retries")
OPTIMISER = ("learning_rate", "epochs", "mini_batches", "micro_batch_size", "epsilon", "beta", "max_grad_norm")


def loaded(arms):
    return [load_campaign(ROOT / arm.file, arm.changes) for arm in arms]


def assert_same_budget(campaigns):
    first = campaigns[0]
    for other in campaigns[1:]:
        for key in SCHEDULE:
            assert getattr(other.spec, key) == getattr(first.spec, key), key
        assert other.spec.evaluation == first.spec.evaluation and other.spec.learner.lora == first.spec.learner.lora
        for key in OPTIMISER:
            assert getattr(other.trainer_config, key) == getattr(first.trainer_config, key), key
        assert other.learner_config == first.learner_config and other.name != first.name


def test_grpo_bargain_arms_differ_only_in_the_training_opponent():
    fair, greedy = loaded(grpo_bargain.arms())
    assert_same_budget([fair, greedy])
    assert fair.learner_config.constrained and set(fair.evaluations) == {"fair", "greedy"}
    assert [c.train.seats["bob"].entry.name for c in (fair, greedy)] == ["fair", "greedy"]
    assert fair.trainer_config == greedy.trainer_config


def test_gigpo_arms_differ_only_in_the_estimator():
    grpo, step_level = loaded(gigpo.arms())
    assert_same_budget([grpo, step_level])
    assert grpo.trainer_config.estimator == "grpo" and step_level.trainer_config.estimator == "gigpo"
    assert step_level.trainer_config.anchor_fields == ["counts", "values", "offer", "turn"]
    assert grpo.train.world_config.max_turns == 4 == step_level.train.world_config.max_turns
    same = grpo.trainer_config.model_dump(exclude={"estimator", "gamma", "anchor_fields"})
    assert same == step_level.trainer_config.model_dump(exclude={"estimator", "gamma", "anchor_fields"})


def games(scores, wins, seeds=(7, 8, 9)):
    return [{"seed": s, "score": x, "win": w, "turns": 2, "agreement": 1.0} for s, x, w in zip(seeds, scores, wins)]


def row(arm, before, after, wins_before=(0, 0, 0), wins_after=(1, 0, 0.5)):
    return {
        "arm": arm,
        "seconds": 1.0,
        "first": {},
        "final": {"eval/fair/parse_failure_rate": 0.0},
        "history": {0: 1.0},
        "before": {"fair": games(before, wins_before)},
        "after": {"fair": games(after, wins_after)},
        "extra": {},
    }


def test_the_report_pairs_games_by_held_out_seed():
    rows = [row("a", [1.0, 2.0, 3.0], [2.0, 2.0, 5.0]), row("b", [1.0, 2.0, 3.0], [3.0, 4.0, 5.0])]
    lines, table = common.report(rows, baseline="a", extra=("agreement",))
    assert table["delta"][0] == pytest.approx(1.0)  # (1 + 0 + 2) / 3, after - before of the same seeds
    half = 4.302653 * np.std([1.0, 0.0, 2.0], ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert (table["delta_low"][0], table["delta_high"][0]) == pytest.approx((1.0 - half, 1.0 + half), rel=1e-5)
    assert table["vs_baseline"][1] == pytest.approx(1.0)  # (1 + 2 + 0) / 3, b - a after training
    assert np.isnan(table["vs_baseline"][0])  # the baseline against itself
    assert table["win"][0] == pytest.approx(0.5) and 0 < table["win_low"][0] < 0.5 < table["win_high"][0] < 1
    assert table["win_delta"][0] == pytest.approx(0.5)
    assert "| b | fair | 3 |" in lines[3] and "+1.00" in lines[3]


def test_pairing_uses_only_seeds_both_sides_played():
    after = games([5.0, 1.0], [1, 0], seeds=(7, 99))
    before = games([1.0, 2.0, 3.0], [0, 0, 0])
    assert common.paired(after, before)[0] == pytest.approx(4.0)


def test_overrides_are_read_as_yaml_and_malformed_ones_refused():
    assert common.parse_overrides(["iterations=2", "learner.constrained=false"]) == {
        "iterations": 2,
        "learner.constrained": False,
    }
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        common.parse_overrides(["iterations"])


def test_what_collect_read_is_logged_as_a_table_and_numbers_as_metrics():
    class Tracker:
        tables, metrics = {}, {}

        def log_table(self, table, name):
            self.tables[name] = table

        def log_metrics(self, metrics):
            self.metrics.update(metrics)

    rows = [
        {"arm": "a", "extra": {"rating": 1.5, "pairs/fair": [{"p": 0.5}], "note": "x"}},
        {"arm": "b", "extra": {"rating": float("nan")}},
    ]
    tracker = Tracker()
    common.log_extra(tracker, rows, "t")
    assert tracker.tables["learning/t_extra.json"] == {
        "arm": ["a", "b"],
        "rating": [1.5, rows[1]["extra"]["rating"]],
        "note": ["x", None],
    }
    assert tracker.metrics == {"a/rating": 1.5}  # not the nan, not the records, not the text


def test_overrides_after_arms_are_refused_not_dropped(capsys):
    from bench.learning import kto_werewolf

    args = kto_werewolf.command().parse_args(["evaluation.episodes=16", "--arms", "kto"])
    assert args.arms == ["kto"] and args.overrides == ["evaluation.episodes=16"]
    with pytest.raises(SystemExit) as exit_info:  # `--arms` would swallow the override: refused, with its name
        kto_werewolf.command().parse_args(["--arms", "kto", "evaluation.episodes=16"])
    assert exit_info.value.code == 2 and "evaluation.episodes=16" in capsys.readouterr().err


def test_the_preference_game_arms_share_the_budget_and_the_analysis_reads_the_game():
    from bench.learning import preference_game as pg

    campaigns = loaded([pg.arm(name) for name in pg.ARMS])
    for c in campaigns:
        for key in SCHEDULE:
            assert getattr(c.spec, key) == getattr(campaigns[0].spec, key), key
        assert c.spec.evaluation == campaigns[0].spec.evaluation and c.learner_config == campaigns[0].learner_config
        assert c.trainer_config.learning_rate == 5e-4 and c.trainer_config.micro_batch_size == 16
    assert len({c.name for c in campaigns}) == 4
    nash, prox, dno, inpo = (c.trainer_config for c in campaigns)
    assert nash.beta == prox.beta == inpo.tau == pg.TAU  # the same regularised game
    P = pg.preference_matrix()
    assert P[1, 0] == 1.0 and P[0, 1] == 0.0 and P[0, 0] == 0.5 and P[0, 2] == 1.0  # paper beats rock beats scissors
    assert pg.distribution([0, 0, 1]) == pytest.approx([2.5 / 4.5, 1.5 / 4.5, 0.5 / 4.5])
    uniform = [0, 1, 2] * 40
    rows = [
        {"arm": "even", "extra": {"reference_actions": [0] * 120, "actions": [[0] * 120, uniform]}},
        {"arm": "rock", "extra": {"reference_actions": [0] * 120, "actions": [[0] * 120, [0] * 120]}},
    ]
    lines, out = pg.analyse(rows)
    assert out["arms"]["even"]["exploitability"] == pytest.approx(0.0, abs=1e-9)
    assert out["arms"]["rock"]["exploitability"] == pytest.approx(0.5, abs=0.01)  # paper always beats it
    curve = out["arms"]["even"]["kl_curve"]
    assert len(curve) == 3 and curve[0] == curve[1] > curve[2]  # mu, then the iterates: uniform is nearer pi*_tau
    # A's reply k against B's reply k + N/2: even (rock, paper, scissors, ...) against pure rock wins one in three,
    # ties one in three
    (m, lo, hi) = out["round_robin"]["even vs rock"]
    assert m == pytest.approx(0.5) and lo < 0.5 < hi
    assert any("Bradley-Terry" in line for line in lines)
