"""A run's logged episodes read back (`agora.listing.run_episodes`) are what the trainers take."""

from __future__ import annotations

import pytest
import torch

from agora.errors import AgoraError
from agora.listing import run_episodes
from agora.lora import LoRAConfig, adapter_state, load_learner
from agora.run import run_scenario
from agora.scenario import resolve_scenario
from trainers.grpo import GRPOConfig, GRPOTrainer


def test_a_trainer_updates_from_the_episodes_a_run_logged(tracking_uri, tiny_model_dir):
    llm = {"policy": "llm", "model": tiny_model_dir, "device": "cpu", "max_new_tokens": 8, "constrained": False}
    scenario = resolve_scenario(
        {
            "name": "offline-data",
            "world": {"id": "negotiation", "max_turns": 2},
            "agents": {"alice": llm, "bob": {"policy": "fair"}},
            "episodes": 4,
            "seed": 2,
        }
    )
    result = run_scenario(scenario, tracking_uri=tracking_uri)
    episodes = run_episodes(result.run_id, tracking_uri)
    assert episodes == result.episodes  # token ids and log-probabilities included
    assert all(s.completion_ids and s.logprobs for e in episodes for s in e.steps if s.agent == "alice")
    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(), device="cpu")
    trainer = GRPOTrainer(
        model, GRPOConfig(learning_rate=1e-2, statistics="batch", std_normalize=False), pad_id=tokenizer.pad_token_id
    )
    before = adapter_state(model)
    metrics = trainer.update(episodes, ["alice"])
    assert metrics["train/samples"] > 0
    assert any(not torch.equal(before[k], v) for k, v in adapter_state(model).items())


def test_unknown_runs_and_runs_without_episodes_are_told(tracking_uri):
    with pytest.raises(AgoraError, match="no MLflow store"):
        run_episodes("0" * 32, tracking_uri)
    result = run_scenario(
        resolve_scenario(
            {
                "name": "scripted",
                "world": {"id": "negotiation"},
                "agents": {"alice": {"policy": "greedy"}, "bob": {"policy": "fair"}},
                "episodes": 1,
            }
        ),
        tracking_uri=tracking_uri,
    )
    with pytest.raises(AgoraError, match="no run '0{32}'"):
        run_episodes("0" * 32, tracking_uri)
    assert len(run_episodes(result.run_id, tracking_uri)) == 1
