"""The HiPER and KTO-werewolf comparisons of bench/learning/ are fair: every method runs the same schedule and
optimiser from the same seed, only the trainer (and the flat methods' reply format) differs (pairing:
tests/test_bench_learning_common.py)."""

from __future__ import annotations

from pathlib import Path

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
