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
