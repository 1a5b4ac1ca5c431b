"""The HiPER trainer: value features, token masks per level, shaped rewards, the value heads' targets and fit, the
per-token policy loss, and a tiny-model campaign through `agora train`, SIGKILLed and resumed into the same run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agora.campaign import load_campaign
from agora.cli import app
from agora.errors import ScenarioError
from agora.scoring import hidden_states_at
from agora.trajectory import Step
from mlflow import MlflowClient
from tests.conftest import train_killed_at
from trainers.advantages import Sample
from trainers.grpo import advantage_tensor, clipped_pg_loss
from trainers.hae import hierarchical_advantages, normalized
from trainers.hiper import HiPERConfig, HiPERTrainer, level_masks, shaped_reward

runner = CliRunner()


def test_hidden_states_at_are_the_decoders_states_before_each_token(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [[1, 5, 6, 7, 8], [1, 5, 6, 9], [1, 5, 6, 7, 8]]  # a shared prefix [1, 5, 6] (run once, repeated)
    completions = [[10, 11, 12], [13], [14, 15]]
    offsets = [[0, 3], [0, 1], [1, 2]]
    got = hidden_states_at(model, prompts, completions, offsets, pad_id=0)
    assert got.shape == (3, 2, 32)
    for row, (p, c, js) in enumerate(zip(prompts, completions, offsets)):
        with torch.no_grad():
            states = model(torch.tensor([p + c]), output_hidden_states=True).hidden_states[-1][0]
        for k, j in enumerate(js):
            torch.testing.assert_close(got[row, k], states[len(p) + j - 1], atol=1e-5, rtol=1e-4)


def test_each_level_credits_its_own_tokens():
    masks = level_masks(8, [2, 5], boundary=True)
    assert masks["termination"] == [True, True] + [False] * 6
    assert masks["high"] == [False, False, True, True, True, False, False, False]
    assert masks["low"] == [False] * 5 + [True] * 3
    assert level_masks(8, [2, 5], boundary=False)["high"] == [False] * 8  # a KEEP's verbatim subgoal: no credit
    cut = level_masks(4, [2, 9], boundary=True)  # a reply cut before </subgoal>: no action tokens
    assert cut["low"] == [False] * 4 and cut["high"] == [False, False, True, True]
    garbled = level_masks(4, [2, 3], boundary=True, format_ok=False)  # not in the plan format: all action
    assert garbled["low"] == [True] * 4 and not any(garbled["high"] + garbled["termination"])


def test_shaped_rewards_subtract_hipers_penalties():
    config = HiPERConfig(invalid_action_penalty=0.1, keep_change_penalty=0.3)
    step = Step("a", 0, "", "", None, reward=2.0, info={"keep_changed": True})
    assert shaped_reward(step, config) == pytest.approx(1.7)
    step.fallback = True
    assert shaped_reward(step, config) == pytest.approx(1.6)
    assert shaped_reward(Step("a", 0, "", "", None, reward=2.0), config) == 2.0


def test_per_token_advantages_reach_the_clipped_loss():
    samples = [
        Sample([1], [2, 3, 4], [-1.0] * 3, 0.5, "g", 0, "a", 0, 0.0, token_advantages=[1.0, -2.0, 0.0]),
        Sample([1], [5], [-1.0], 0.25, "g", 0, "a", 1, 0.0),
    ]
    adv = advantage_tensor(samples, 3, "cpu")
    assert adv.tolist() == [[1.0, -2.0, 0.0], [0.0, 0.0, 0.25]]  # right-aligned, as the logprobs are
    logp = torch.zeros(2, 3)
    loss, _ = clipped_pg_loss(logp, logp, adv, torch.ones(2, 3), epsilon=0.2)
    assert loss.tolist() == [[-1.0, 2.0, 0.0], [0.0, 0.0, -0.25]]  # rho = 1: -A per token
    assert samples[0].credited() and not Sample([1], [2], [0.0], 0.0, "g", 0, "a", 0, 0.0).credited()
    assert not Sample([1], [2], [0.0], 1.0, "g", 0, "a", 0, 0.0, token_advantages=[0.0]).credited()


@pytest.fixture(scope="module")
def played(tiny_model_dir):
    """Four games of 5 rounds of rock-paper-scissors of a tiny plan-execute learner (player_0) against a mixed
    player, with its peft model: every game has 5 decisions (a negotiation ends whenever the random model walks)."""
    from agents.plan_execute import PlanExecuteConfig, PlanExecutePolicy
    from agora.lora import LoRAConfig, load_learner
    from agora.registry import AGENTS
    from agora.rollout import Rollout
    from worlds.matrix import MatrixConfig, parallel_env

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    config = PlanExecuteConfig(model=tiny_model_dir, temperature=1.0, max_new_tokens=40, subgoal_tokens=4)
    learner = PlanExecutePolicy(config, seed=0, model=model, tokenizer=tokenizer)
    random = AGENTS.get("mixed", world="matrix")
    seats = {"player_0": learner, "player_1": random.load()(random.config(), seed=0)}
    world = MatrixConfig(rounds=5)
    ids = {"player_0": "learner", "player_1": "mixed"}
    episodes = Rollout(lambda: parallel_env(world), seats, ids, seed=3, max_retries=0).run(4)
    steps = [s for e in episodes for s in e.steps if s.agent == "player_0"]
    assert len(steps) == 20 and {s.info["segment_start"] for s in steps} == {True, False}  # several segments
    assert {s.reward for s in steps} != {0.0}  # rewards every round
    return model, tokenizer, episodes


def test_value_features_are_read_with_the_adapter_before_the_reply_and_after_the_subgoal(played):
    model, tokenizer, episodes = played
    trainer = HiPERTrainer(model, HiPERConfig(feature_batch_size=3), pad_id=tokenizer.pad_token_id, seed=0)
    steps = [s for e in episodes for s in e.steps if s.agent == "player_0"]
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    try:
        with torch.no_grad():  # a trained adapter (B = 0 at the start would hide whether it is on)
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        got = trainer.features(steps)
        for i, step in enumerate(steps):
            offsets = [[0, step.info["spans"][1]]]
            one = hidden_states_at(model, [step.prompt_ids], [step.completion_ids], offsets, pad_id=0)
            torch.testing.assert_close(got[i], one[0], atol=1e-4, rtol=1e-3)
        with model.disable_adapter():
            plain = hidden_states_at(model, [steps[0].prompt_ids], [steps[0].completion_ids], [[0, 1]], pad_id=0)
        assert not torch.allclose(plain[0, 0], got[0, 0], atol=1e-3)
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in lora:
                    p.copy_(lora[n])


@pytest.mark.parametrize("normalize", [True, False])
def test_update_puts_each_levels_advantage_on_its_tokens(played, monkeypatch, normalize):
    model, tokenizer, episodes = played
    config = HiPERConfig(gamma=0.9, lambda_turn=0.8, lambda_segment=0.5, value_epochs=1, normalize_advantages=normalize)
    trainer = HiPERTrainer(model, config, pad_id=tokenizer.pad_token_id, seed=0)
    trainer.tokenizer = tokenizer
    with torch.no_grad():  # non-zero values, so that the value terms count
        for head in trainer.values.heads:
            head[-1].bias.fill_(0.5)
            head[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    caught = []
    monkeypatch.setattr(trainer, "step", lambda samples: caught.extend(samples) or {})
    trajectories = [[s for s in e.steps if s.agent == "player_0"] for e in episodes]
    flat = [s for t in trajectories for s in t]
    features = trainer.features(flat)
    with torch.no_grad():
        v = {
            "high": trainer.values(features[:, 0], "high").numpy(),
            "termination": trainer.values(features[:, 0], "termination").numpy(),
            "low": trainer.values(features[:, 1], "low").numpy(),
        }
    metrics = trainer.update(episodes, ["player_0"])  # values as above: the heads are fitted after the advantages
    results, lo = [], 0
    for steps in trajectories:
        hi = lo + len(steps)
        rewards = [s.reward - 0.1 * s.fallback for s in steps]
        starts = [s.info["segment_start"] for s in steps]
        results.append(
            hierarchical_advantages(
                rewards,
                starts,
                v["high"][lo:hi],
                v["low"][lo:hi],
                v["termination"][lo:hi],
                gamma=0.9,
                lambda_turn=0.8,
                lambda_segment=0.5,
            )
        )
        lo = hi
    boundary = np.concatenate([r.boundary for r in results])
    high, low, term = (np.concatenate([getattr(r, level) for r in results]) for level in ("high", "low", "termination"))
    if normalize:
        high, low, term = normalized(high, boundary), normalized(low), normalized(term)
    assert len(caught) == len(flat)
    for k, (sample, step) in enumerate(zip(caught, flat)):
        switch_end, subgoal_end = step.info["spans"]
        tokens = sample.token_advantages
        assert sample.completion_ids == step.completion_ids and len(tokens) == len(step.completion_ids)
        assert tokens[:switch_end] == pytest.approx([term[k]] * switch_end)
        expected_high = high[k] if boundary[k] else 0.0
        assert tokens[switch_end:subgoal_end] == pytest.approx([expected_high] * (subgoal_end - switch_end))
        assert tokens[subgoal_end:] == pytest.approx([low[k]] * (len(tokens) - subgoal_end))
    assert metrics["plan/segments_per_trajectory"] == pytest.approx(boundary.sum() / len(trajectories))
    assert metrics["plan/switch_rate"] == pytest.approx(boundary.mean())
    assert metrics["plan/segment_length"] == pytest.approx(len(boundary) / boundary.sum())
    assert metrics["plan/format_ok_rate"] == 1.0 and metrics["plan/keep_changed_rate"] == 0.0
    for level in ("high", "low", "termination"):
        assert np.isfinite(metrics[f"train/value_loss/{level}"])


def test_value_heads_regress_on_their_targets_and_their_state_is_saved(played):
    model, tokenizer, _ = played
    trainer = HiPERTrainer(model, HiPERConfig(value_epochs=300, value_hidden=16), pad_id=0, seed=0)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(40, 2, 32, generator=gen)
    w = torch.randn(32, generator=gen)
    boundary = np.arange(40) % 3 == 0
    high = (features[:, 0] @ w).numpy().astype(float)
    high[~boundary] = np.nan  # only segment starts have a high-level target
    targets = {"high": high, "low": (features[:, 1] @ w).numpy() * 0.5, "termination": (features[:, 0] @ w).numpy()}
    before = trainer.fit_values(features, targets, boundary)
    after = trainer.fit_values(features, targets, boundary)
    for level in ("high", "low", "termination"):
        assert np.isfinite(before[f"train/value_loss/{level}"])
        assert after[f"train/value_loss/{level}"] < 0.2 * before[f"train/value_loss/{level}"], level
        assert after[f"train/explained_variance/{level}"] > 0.8, level
    with torch.no_grad():  # V_H reads the first feature, V_L the second
        err_high = trainer.values(features[boundary, 0], "high") - torch.tensor(high[boundary], dtype=torch.float32)
        assert float(err_high.abs().mean()) < 0.5 * float(torch.tensor(high[boundary]).abs().mean())
    again = HiPERTrainer(model, HiPERConfig(value_epochs=300, value_hidden=16), pad_id=0, seed=5)
    again.load_state_dict(trainer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.values(features[:, 1], "low"), trainer.values(features[:, 1], "low"))
    assert again.value_optimizer.state_dict()["state"]  # Adam's moments came back too


def test_values_are_normalised_by_the_running_statistics_of_their_targets(played):
    model, _, _ = played
    trainer = HiPERTrainer(model, HiPERConfig(), pad_id=0, seed=0)
    heads = trainer.values
    seen = np.array([1.0, 2.0, 6.0, -3.0, 0.5, 4.0, 4.0])
    heads.observe("low", torch.tensor(seen[:3]))
    heads.observe("low", torch.tensor(seen[3:]))
    mean, std = heads.scale("low")
    assert mean == pytest.approx(seen.mean()) and std == pytest.approx(seen.std())
    assert heads.scale("high") == (0.0, 1.0)  # each level its own
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(heads(x, "low"), mean + std * heads.normalised(x, "low"))
    # a fit starts from the running mean: one step already predicts about the mean of constant targets
    fresh = HiPERTrainer(model, HiPERConfig(value_epochs=1), pad_id=0, seed=0)
    feats = torch.randn(6, 2, 32, generator=torch.Generator().manual_seed(1))
    constant = {level: np.full(6, 5.0) for level in ("high", "low", "termination")}
    first = fresh.fit_values(feats, constant, np.ones(6, dtype=bool))
    assert first["train/value_loss/low"] == pytest.approx(25.0)  # V = 0 before any target
    assert first["train/value_loss_after/low"] < 0.1


def test_value_heads_start_at_zero_deterministically(played):
    model, _, _ = played
    one, two = (HiPERTrainer(model, HiPERConfig(), pad_id=0, seed=3) for _ in range(2))
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(one.values(x, "high").abs().max()) == 0.0
    torch.testing.assert_close(one.values.state_dict(), two.values.state_dict())


def test_a_plain_llm_learner_is_refused_with_the_key_to_add(tmp_path, tiny_model_dir):
    text = (
        campaign_text(tmp_path, tiny_model_dir)
        .replace("  policy: plan_execute\n", "")
        .replace("  subgoal_tokens: 4\n", "")
    )
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_campaign(tmp_path / "bad.yaml")
    assert info.value.path == "learner.policy" and "policy: plan_execute" in info.value.hint
    (tmp_path / "bad.yaml").write_text(text.replace("  seats: [alice]\n", "  seats: [alice]\n  policy: planner\n"))
    with pytest.raises(ScenarioError) as info:
        load_campaign(tmp_path / "bad.yaml")
    assert info.value.path == "learner.policy" and "llm, plan_execute" in info.value.hint


def test_other_kinds_refuse_a_plan_execute_learner(tmp_path):
    from tests.test_stackelberg_campaign import campaign_file

    text = campaign_file(tmp_path).read_text().replace("temperature: 1.0", "policy: plan_execute")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_campaign(tmp_path / "s.yaml")
    assert info.value.path == "learner.policy" and "cannot be 'plan_execute'" in str(info.value)


TINY = """
name: tiny-hiper
world: {{id: negotiation, max_turns: 6, first_mover: first, max_message_chars: 0}}
learner:
  seats: [alice]
  policy: plan_execute
  model: {model}
  temperature: 1.0
  max_new_tokens: 40
  subgoal_tokens: 4
  lora: {{r: 4, alpha: 8}}
opponents:
  bob: {{policy: greedy}}
trainer: {{id: hiper, value_epochs: 3, micro_batch_size: 4}}
iterations: {iterations}
groups_per_iteration: 1
group_size: 2
evaluation: {{episodes: 2, every: 0}}
checkpoint: {{dir: {dir}}}
seed: 0
max_retries: 0
tracking: {{experiment: tiny-hiper}}
"""


def campaign_text(tmp_path, model, iterations=2, folder="ck") -> str:
    return TINY.format(model=model, iterations=iterations, dir=tmp_path / folder)


def test_a_sigkilled_tiny_campaign_resumes_into_the_same_run_with_its_value_heads(
    tmp_path, tracking_uri, tiny_model_dir
):
    """`agora train` killed after its first checkpoint, `--resume` finishes the same MLflow run; the value heads and
    the policy end exactly where an uninterrupted run of the same file ends."""
    file = tmp_path / "c.yaml"
    file.write_text(campaign_text(tmp_path, tiny_model_dir))
    train_killed_at(file, tracking_uri, tmp_path / "ck" / "iter-000000" / "state.json")
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny-hiper").experiment_id
    (killed,) = client.search_runs([experiment])
    assert killed.info.status == "RUNNING"
    saved = torch.load(tmp_path / "ck" / "iter-000000" / "trainer.pt", weights_only=False)
    assert set(saved) >= {"values", "value_optimizer", "optimizer", "generator"}

    result = runner.invoke(app, ["train", str(file), "--resume"])
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    for key in ("train/value_loss/high", "train/explained_variance/low", "plan/switch_rate", "train/loss"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [0, 1], key

    straight = tmp_path / "s.yaml"
    straight.write_text(campaign_text(tmp_path, tiny_model_dir, folder="ck2").replace("tiny-hiper", "tiny-hiper-2"))
    assert runner.invoke(app, ["train", str(straight)]).exit_code == 0
    resumed = torch.load(tmp_path / "ck" / "iter-000001" / "trainer.pt", weights_only=False)
    uninterrupted = torch.load(tmp_path / "ck2" / "iter-000001" / "trainer.pt", weights_only=False)
    torch.testing.assert_close(resumed["values"], uninterrupted["values"])
    torch.testing.assert_close(resumed["optimizer"]["state"], uninterrupted["optimizer"]["state"])
