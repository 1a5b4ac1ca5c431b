"""Trajectories -> groups -> advantages: GRPO and GiGPO rules, each against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agora.trajectory import Episode, Step
from trainers.advantages import (
    discounted_returns,
    group_advantages,
    similarity_clusters,
    step_advantages,
    training_samples,
    zero_variance_fraction,
)

R2 = 1 / math.sqrt(2)


def test_grpo_group_statistics_with_and_without_std():
    returns, groups = [1.0, 3.0, 2.0, 2.0], ["a", "a", "b", "b"]
    # group a: mean 2, sample std sqrt(2); group b: all equal -> 0
    assert group_advantages(returns, groups) == pytest.approx([-R2, R2, 0, 0], abs=1e-5)
    assert group_advantages(returns, groups, std_normalize=False) == pytest.approx([-1, 1, 0, 0])


def test_grpo_batch_statistics_use_the_whole_batch():
    returns, groups = [1.0, 3.0, 2.0, 2.0], ["a", "a", "b", "b"]
    std = math.sqrt(2 / 3)  # sample std of [1, 3, 2, 2] around its mean 2
    assert group_advantages(returns, groups, statistics="batch") == pytest.approx([-1 / std, 1 / std, 0, 0], abs=1e-5)
    assert group_advantages([5.0], ["x"]) == pytest.approx([0.0])  # a group of one carries no signal


def test_zero_variance_groups_are_counted():
    assert zero_variance_fraction(np.array([1.0, 3.0, 2.0, 2.0, 0.0]), ["a", "a", "b", "b", "c"]) == pytest.approx(
        2 / 3
    )


def test_discounted_returns():
    assert discounted_returns([0.0, 0.0, 1.0], 0.5) == pytest.approx([0.25, 0.5, 1.0])
    assert discounted_returns([1.0, 2.0], 1.0) == pytest.approx([3.0, 2.0])


def test_gigpo_exact_anchor_groups_and_singletons():
    # steps 0, 1, 3 share anchor s0 (returns 1, 3, 2: mean 2, std 1); step 2 is alone -> 0
    out = step_advantages(np.array([1.0, 3.0, 5.0, 2.0]), ["s0", "s0", "s1", "s0"], ["g"] * 4)
    assert out == pytest.approx([-1, 1, 0, 0], abs=1e-5)
    # anchor groups never cross episode groups
    out = step_advantages(np.array([1.0, 3.0]), ["s0", "s0"], ["g", "h"])
    assert out == pytest.approx([0, 0])


def test_gigpo_similarity_key_clusters_greedily_on_first_members():
    keys = ["abcdefghij", "abcdefghiX", "zzzzzzzzzz", "abcdefgXYZ"]
    # ratio("abcdefghij", "abcdefghiX") = 0.9; with "abcdefgXYZ" 0.7
    assert similarity_clusters(keys, 0.85) == [0, 0, 1, 2]
    assert similarity_clusters(keys, 0.65) == [0, 0, 1, 0]
    out = step_advantages(np.array([1.0, 3.0, 7.0]), keys[:3], ["g"] * 3, key="similarity", similarity_threshold=0.85)
    assert out == pytest.approx([-R2, R2, 0], abs=1e-5)


def step(agent, turn, reward=0.0, obs=None, ids=True):
    return Step(
        agent=agent,
        turn=turn,
        prompt="p",
        text="t",
        action=None,
        reward=reward,
        prompt_ids=[1, 2, turn] if ids else None,
        completion_ids=[5, 6] if ids else None,
        logprobs=[-0.1, -0.2] if ids else None,
        observation=obs,
    )


def episode(index, seed, returns, steps):
    return Episode(index=index, seed=seed, policies={"a": "llm", "b": "fair"}, steps=steps, returns=returns)


def test_training_samples_group_by_seed_and_credit_each_agent_its_own_return():
    episodes = [
        episode(
            0,
            7,
            {"a": 1.0, "b": 9.0},
            [step("a", 0, obs={"s": 0}), step("b", 1, ids=False), step("a", 2, 1.0, obs={"s": 1})],
        ),
        episode(1, 7, {"a": 3.0, "b": 7.0}, [step("a", 0, obs={"s": 0}), step("a", 1, 3.0, obs={"s": 2})]),
        episode(2, 8, {"a": 4.0, "b": 0.0}, [step("a", 0, 4.0, obs={"s": 0})]),  # a group of one
    ]
    samples, stats = training_samples(episodes, lambda e: ["a"])
    assert [(s.episode, s.turn) for s in samples] == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 0)]
    assert [s.advantage for s in samples] == pytest.approx([-R2, -R2, R2, R2, 0], abs=1e-5)
    assert samples[0].group == "7:a" and samples[0].old_logprobs == [-0.1, -0.2]
    assert stats["train/groups"] == 2 and stats["train/zero_variance_groups"] == pytest.approx(0.5)

    # team credit: both episodes of seed 7 return 10 in all -> no signal
    samples, _ = training_samples(episodes[:2], lambda e: ["a"], credit="team")
    assert [s.advantage for s in samples] == pytest.approx([0, 0, 0, 0])

    # GiGPO adds omega * A^S: the two turn-0 steps share anchor {"s": 0}; their step returns are 1 and 3
    samples, _ = training_samples(episodes[:2], lambda e: ["a"], estimator="gigpo", step_weight=0.5)
    assert [s.advantage for s in samples] == pytest.approx([-R2 - 0.5 * R2, -R2, R2 + 0.5 * R2, R2], abs=1e-5)


def test_self_play_seats_are_separate_trajectories():
    def both(e):
        return ["a", "b"]

    episodes = [
        episode(0, 7, {"a": 1.0, "b": 9.0}, [step("a", 0), step("b", 1)]),
        episode(1, 7, {"a": 3.0, "b": 7.0}, [step("a", 0), step("b", 1)]),
    ]
    samples, stats = training_samples(episodes, both)
    by = {(s.episode, s.agent): s.advantage for s in samples}
    assert by[(0, "a")] == pytest.approx(-R2, abs=1e-5) and by[(0, "b")] == pytest.approx(R2, abs=1e-5)
    assert stats["train/groups"] == 2


def test_invalid_action_penalty_lowers_the_return_of_fallback_trajectories():
    failed = step("a", 0, 2.0)
    failed.fallback = True
    episodes = [episode(0, 7, {"a": 2.0, "b": 0.0}, [failed]), episode(1, 7, {"a": 2.0, "b": 0.0}, [step("a", 0, 2.0)])]
    samples, stats = training_samples(episodes, lambda e: ["a"], invalid_action_penalty=1.0, std_normalize=False)
    assert [s.ret for s in samples] == [1.0, 2.0] and [s.advantage for s in samples] == pytest.approx([-0.5, 0.5])
    assert samples[0].fallback and stats["train/zero_variance_groups"] == 0.0


def two_games(b_return=0.0, fallback=False):
    """Seed 7 played twice; seat a decides at the shared anchor {"s": 0} and then at a distinct state.
    Game 0: a's rewards 0 then 1 (b gets `b_return`); game 1: a's rewards 0 then 3 (b gets 0)."""
    first = step("a", 0, 0.0, obs={"s": 0})
    first.fallback = fallback
    return [
        episode(0, 7, {"a": 1.0, "b": b_return}, [first, step("a", 2, 1.0, obs={"s": 1})]),
        episode(1, 7, {"a": 3.0, "b": 0.0}, [step("a", 0, 0.0, obs={"s": 0}), step("a", 2, 3.0, obs={"s": 2})]),
    ]


def test_gigpo_step_returns_are_discounted():
    # A^E: returns 1, 3 -> -1, +1 (no std). Turn-0 step returns with gamma 0.5: 0.5 and 1.5 -> A^S -0.5, +0.5
    # (gamma ignored: 1 and 3 -> -1, +1). The turn-2 steps are singletons.
    samples, _ = training_samples(two_games(), lambda e: ["a"], estimator="gigpo", gamma=0.5, std_normalize=False)
    assert [s.advantage for s in samples] == pytest.approx([-1.5, -1.0, 1.5, 1.0])


def test_gigpo_team_credit_puts_the_other_seats_rewards_on_the_last_step():
    # Team returns 1 + 1 = 2 and 3 -> A^E -0.5, +0.5. Game 0's step rewards become 0, 1 + 1 (b's reward on a's last
    # step), so the turn-0 step returns are 0.5 * 2 = 1 and 0.5 * 3 = 1.5 -> A^S -0.25, +0.25
    # (without b's reward on the last step: 0.5 and 1.5 -> -0.5, +0.5).
    samples, _ = training_samples(
        two_games(b_return=1.0), lambda e: ["a"], estimator="gigpo", gamma=0.5, credit="team", std_normalize=False
    )
    assert [s.ret for s in samples] == [2.0, 2.0, 3.0, 3.0]
    assert [s.advantage for s in samples] == pytest.approx([-0.75, -0.5, 0.75, 0.5])


def test_gigpo_invalid_action_penalty_lowers_the_reward_of_the_failed_step():
    # Game 0's first decision fell back: return 1 - 1 = 0 vs 3 -> A^E -1.5, +1.5. Its step rewards become -1, 1, so
    # the turn-0 step returns are -1 + 0.5 * 1 = -0.5 and 1.5 -> A^S -1, +1 (penalty only on the return: 0.5 and
    # 1.5 -> -0.5, +0.5).
    samples, _ = training_samples(
        two_games(fallback=True),
        lambda e: ["a"],
        estimator="gigpo",
        gamma=0.5,
        invalid_action_penalty=1.0,
        std_normalize=False,
    )
    assert [s.advantage for s in samples] == pytest.approx([-2.5, -1.5, 2.5, 1.5])
