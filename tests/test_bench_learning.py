"""The HiPER comparison of bench/learning/ is fair: every method runs the same schedule and optimiser from the same
seed, only the trainer (and the flat methods' reply format) differs (pairing: tests/test_bench_learning_common.py)."""

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
