"""GiGPO's anchor states: an abstracted key (`anchor_fields`) lets states with different chat histories share a step
group; the share of steps alone in their group is reported."""

from __future__ import annotations

import pytest

from agora.trajectory import Episode, Step
from trainers.advantages import anchor_key, training_samples
from trainers.grpo import GRPOConfig

R2 = 1 / 2**0.5  # (x - mean) / std for a group of two


def step(turn, reward, observation):
    return Step(
        agent="a",
        turn=turn,
        prompt="p",
        text="t",
        action=None,
        reward=reward,
        prompt_ids=[1, turn],
        completion_ids=[5],
        logprobs=[-0.1],
        observation=observation,
    )


def episodes():
    # Same seed, same opening state; at turn 2 the same offer is on the table after different chat histories.
    out = []
    for index, (said, final) in enumerate([("hello", 1.0), ("hi there", 5.0)]):
        steps = [
            step(0, 0.0, {"offer": [-1], "history": ""}),
            step(2, final, {"offer": [2], "history": said}),
        ]
        out.append(Episode(index=index, seed=7, policies={"a": "llm"}, steps=steps, returns={"a": final}))
    return out


def test_anchor_fields_keep_only_the_named_keys():
    assert anchor_key({"offer": [2], "history": "x"}, ["offer"]) == anchor_key(
        {"offer": [2], "history": "y"}, ["offer"]
    )
    assert anchor_key({"offer": [2], "history": "x"}) != anchor_key({"offer": [2], "history": "y"})


def test_an_abstracted_anchor_groups_states_the_history_would_split():
    whole, stats = training_samples(episodes(), lambda e: ["a"], estimator="gigpo")
    # turn 0 is shared (one anchor group), turn 2 differs by history: two singletons of four steps
    assert stats["train/anchor_singletons"] == pytest.approx(0.5) and stats["train/anchor_groups"] == 3
    assert [s.advantage for s in whole] == pytest.approx([-2 * R2, -R2, 2 * R2, R2], abs=1e-5)
    abstracted, stats = training_samples(episodes(), lambda e: ["a"], estimator="gigpo", anchor_fields=["offer"])
    assert stats["train/anchor_singletons"] == 0.0 and stats["train/anchor_groups"] == 2
    assert [s.advantage for s in abstracted] == pytest.approx([-2 * R2, -2 * R2, 2 * R2, 2 * R2], abs=1e-5)
    _, stats = training_samples(episodes(), lambda e: ["a"])
    assert "train/anchor_singletons" not in stats  # GRPO has no step groups


def test_the_trainer_config_passes_anchor_fields():
    assert GRPOConfig(estimator="gigpo", anchor_fields=["offer", "turn"]).anchor_fields == ["offer", "turn"]
    with pytest.raises(ValueError):
        GRPOConfig(anchor_fields=[])


def test_the_trainer_groups_steps_by_its_anchor_fields(monkeypatch):
    import torch

    from trainers.grpo import GRPOTrainer

    trainer = GRPOTrainer(torch.nn.Linear(1, 1), GRPOConfig(estimator="gigpo", anchor_fields=["offer"]), pad_id=0)
    seen = []
    monkeypatch.setattr(trainer, "step", lambda samples: seen.extend(samples) or {})
    metrics = trainer.update(episodes(), ["a"])
    assert metrics["train/anchor_singletons"] == 0.0
    assert [s.advantage for s in seen] == pytest.approx([-2 * R2, -2 * R2, 2 * R2, 2 * R2], abs=1e-5)
