"""The learning comparisons of bench/learning/ are fair: every method runs the same schedule and optimiser from the
same seed, only the trainer (and the flat methods' reply format) differs; paired differences are per held-out seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from agora.campaign import load_campaign
from bench.learning import hiper

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
    def row(method, scores):
        final = {
            "eval/greedy/score": float(np.mean(scores)),
            "eval/greedy/score_ci_low": 0.0,
            "eval/greedy/score_ci_high": 1.0,
            "eval/greedy/win_rate": 0.5,
            "eval/greedy/win_rate_ci_low": 0.1,
            "eval/greedy/win_rate_ci_high": 0.9,
            "eval/greedy/parse_failure_rate": 0.0,
            "eval/greedy/fallback_rate": 0.0,
        }
        played = {"greedy": [{"seed": s, "score": x, "turns": 4, "deal": 1.0} for s, x in zip([7, 8, 9], scores)]}
        return {"method": method, "seconds": 1.0, "first": final, "final": final, "history": {0: 1.0}, "played": played}

    lines, table = hiper.report([row("hiper", [1.0, 2.0, 3.0]), row("grpo", [2.0, 4.0, 3.0])])
    assert table["vs_hiper"][1] == pytest.approx(1.0)  # (1 + 2 + 0) / 3
    low, high = hiper.mean_ci([1.0, 2.0, 0.0])[1:]
    assert low == pytest.approx(1.0 - 4.302653 * 1.0 / np.sqrt(3), rel=1e-5) and high > 1.0
    assert "| grpo | greedy |" in lines[3] and "+1.00" in lines[3]


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
