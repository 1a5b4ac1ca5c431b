"""The `hila` campaign kind: HILA's decision groups and rewards by hand, the outer loop's SFT pairs and loss,
the baselines on a tiny problem set by hand, validation errors, and a tiny-model run interrupted and resumed."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from agora.campaign import load_campaign
from agora.cli import app
from agora.errors import ScenarioError
from agora.lora import LoRAConfig, load_learner
from agora.trajectory import Episode, Step
from campaigns.hila_eval import evaluation_metrics, team_worlds, verdict
from campaigns.hila_groups import decision_groups, decision_reward, group_samples
from campaigns.hila_outer import sft_pairs
from mlflow import MlflowClient
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.sft import SFTConfig, SFTPair, SFTTrainer, answer_nll
from worlds.deferral import CREATE, DEFER, EVAL, DeferralConfig, format_number, raw_env

runner = CliRunner()
CONFIG = DeferralConfig(rounds=2, kinds={"arithmetic": 1.0}, difficulties=[1])


def truth(seed: int) -> tuple[str, str]:
    """(the true answer of seed's problem, a wrong one)."""
    world = raw_env(CONFIG)
    world.reset(seed=seed)
    return world.problem.answer, format_number(Fraction(world.problem.answer) + 1)


def act(kind: int, target: int = 0, answer: str = "") -> dict:
    return {"type": kind, "target": target, "answer": answer}


def episode(seed: int, rounds: list[list[dict]], expert: dict | None = None, index: int = 0) -> Episode:
    """An episode of the team's actions per round (and the expert's reply after the last, if any)."""
    steps = [
        Step(agent=f"agent_{i}", turn=0, prompt="", text="", action=a, prompt_ids=[1, 2, 3 + r], temperature=1.0)
        for r, actions in enumerate(rounds)
        for i, a in enumerate(actions)
    ]
    if expert is not None:
        steps.append(Step(agent="expert", turn=0, prompt="", text="", action=expert))
    return Episode(index=index, seed=seed, policies={}, steps=steps)


def fixed_expert(answer: str):
    return lambda e: lambda observation, world: {"answer": answer, "explanation": ""}


def test_decision_reward_is_hilas_cost_aware_reward():
    assert decision_reward(True, EVAL, defer_cost=0.3, create_cost=0.1) == 1.0
    assert decision_reward(True, DEFER, defer_cost=0.3, create_cost=0.1) == pytest.approx(0.7)
    assert decision_reward(False, CREATE, defer_cost=0.3, create_cost=0.1) == pytest.approx(-0.1)
    assert decision_reward(False, DEFER, defer_cost=0.5, create_cost=0.1) == pytest.approx(-0.5)


def test_groups_replay_every_candidate_at_a_state_by_hand():
    t, w = truth(7)
    # round 0: [t, w, w]; round 1 as played: agent_0 EVAL 1, agent_1 EVAL 0, agent_2 EVAL 0; the expert would say t
    played = episode(
        7, [[act(CREATE, 0, t), act(CREATE, 0, w), act(CREATE, 0, w)], [act(EVAL, 1), act(EVAL, 0), act(EVAL, 0)]]
    )
    groups = decision_groups([played], CONFIG, ["agent_0", "agent_2"], fixed_expert(t))
    assert [(g.agent, g.round) for g in groups] == [("agent_0", 1), ("agent_2", 1)]
    first, last = groups
    # agent_0: EVAL 1 / EVAL 2 / CREATE t (its round-0 answer) / DEFER; the others end on t, t: always right
    assert first.replies == ["EVAL 1", "EVAL 2", f"CREATE {t}", "DEFER"]
    assert first.rewards == pytest.approx([1.0, 1.0, 0.9, 0.7]) and first.played == 0
    # agent_2: the others end on w (agent_0 adopts agent_1's w) and t (agent_1 adopts agent_0's t)
    assert last.replies == ["EVAL 0", "EVAL 1", f"CREATE {w}", "DEFER"]
    assert last.correct == [True, False, False, True]
    assert last.rewards == pytest.approx([1.0, 0.0, -0.1, 0.7]) and last.played == 0


def test_group_samples_carry_group_relative_advantages_and_the_learners_logprobs(tiny_model_dir):
    t, w = truth(7)
    played = episode(
        7, [[act(CREATE, 0, t), act(CREATE, 0, w), act(CREATE, 0, w)], [act(EVAL, 1), act(EVAL, 0), act(EVAL, 0)]]
    )
    groups = decision_groups([played], CONFIG, ["agent_2"], fixed_expert(t))
    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), device="cpu", dtype="float32", seed=0)
    trainer = GRPOTrainer(model, GRPOConfig(learning_rate=1e-3), pad_id=tokenizer.pad_token_id, seed=0)
    trainer.tokenizer = tokenizer
    samples = group_samples(groups, model, tokenizer, trainer.scoring_masks())
    r = np.array([1.0, 0.0, -0.1, 0.7])
    by_hand = (r - r.mean()) / (np.sqrt(((r - r.mean()) ** 2).sum() / 3) + 1e-6)
    assert [s.advantage for s in samples] == pytest.approx(list(by_hand))
    assert [tokenizer.decode(s.completion_ids) for s in samples] == [
        f"{x}{tokenizer.eos_token}" for x in ("EVAL 0", "EVAL 1", f"CREATE {w}", "DEFER")
    ]
    assert all(len(s.old_logprobs) == len(s.completion_ids) and s.group == samples[0].group for s in samples)
    metrics = trainer.step(samples)  # old logprobs are the current weights': the ratio starts at 1
    assert metrics["train/approx_kl"] == pytest.approx(0.0, abs=1e-5) and metrics["train/optimizer_steps"] == 1


def test_sft_pairs_are_round_zero_prompts_with_the_experts_answer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    t, w = truth(7)
    rounds = [[act(CREATE, 0, w)] * 3, [act(DEFER), act(EVAL, 0), act(EVAL, 0)]]
    deferred = episode(7, rounds, expert={"answer": t, "explanation": "because"})
    alone = episode(8, [[act(CREATE, 0, w)] * 3, [act(EVAL, 1), act(EVAL, 0), act(EVAL, 0)]])
    pairs = sft_pairs([deferred, alone], CONFIG, ["agent_0", "agent_1"], tokenizer)
    assert [p.prompt_ids for p in pairs] == [[1, 2, 3], [1, 2, 3]]  # round 0's prompts, of the learner's seats
    assert {tokenizer.decode(p.answer_ids) for p in pairs} == {f"ANSWER: {t}{tokenizer.eos_token}"}


def test_sft_loss_is_cross_entropy_on_the_answer_tokens_only(tiny_model_dir):
    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), device="cpu", dtype="float32", seed=0)
    pairs = [SFTPair([5, 6, 7, 8], [9, 10]), SFTPair([11, 12], [13, 14, 15])]
    nll, tokens = answer_nll(model, pairs, pad_id=tokenizer.pad_token_id)
    by_hand = 0.0
    with torch.no_grad():
        for p in pairs:
            ids = torch.tensor([p.prompt_ids + p.answer_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            start = len(p.prompt_ids)
            by_hand -= sum(float(logp[start - 1 + k, a]) for k, a in enumerate(p.answer_ids))
    assert tokens == 5 and float(nll.detach()) == pytest.approx(by_hand, rel=1e-4)
    trainer = SFTTrainer(model, SFTConfig(learning_rate=5e-2, epochs=4), pad_id=tokenizer.pad_token_id, seed=0)
    metrics = trainer.step(pairs)
    assert metrics["sft/steps"] == 4 and metrics["sft/loss"] < metrics["sft/loss_first_epoch"]


def test_baselines_on_a_tiny_problem_set_by_hand():
    (t1, w1), (t2, w2) = truth(1), truth(2)
    w2b = format_number(Fraction(t2) + 2)
    trained = [  # problem 1: [t, t, w], all EVAL a right agent; problem 2: [w, w, w'], two defer, one EVALs agent 0
        episode(
            1,
            [[act(CREATE, 0, t1), act(CREATE, 0, t1), act(CREATE, 0, w1)], [act(EVAL, 1), act(EVAL, 0), act(EVAL, 1)]],
        ),
        episode(
            2,
            [[act(CREATE, 0, w2), act(CREATE, 0, w2), act(CREATE, 0, w2b)], [act(DEFER), act(DEFER), act(EVAL, 0)]],
            index=1,
        ),
    ]
    answers = {1: t1, 2: t2}
    worlds = team_worlds(trained, CONFIG, lambda e: lambda obs, world: {"answer": answers[e.seed], "explanation": ""})
    m = evaluation_metrics(worlds)
    expected = {  # reward per problem by hand: 1[correct] - mean cost per agent
        "trained": ([1.0, 0.8], 1.0, 2 / 6),
        "never_defer": ([1.0, 0.0], 0.5, 0.0),
        "always_defer": ([0.7, 0.7], 1.0, 1.0),
        "defer_when_disagree": ([0.7, 0.7], 1.0, 1.0),
        "oracle": ([1.0, 0.7], 1.0, 0.5),
    }
    for team, (rewards, accuracy, deferral) in expected.items():
        assert m[f"eval/{team}/reward"] == pytest.approx(np.mean(rewards)), team
        assert m[f"eval/{team}/accuracy"] == accuracy and m[f"eval/{team}/deferral_rate"] == pytest.approx(deferral)
        assert m[f"eval/{team}/cost"] == pytest.approx(accuracy - np.mean(rewards)), team
    assert (m["eval/never_defer/accuracy_ci_low"], m["eval/never_defer/accuracy_ci_high"]) == pytest.approx(
        (0.0945, 0.9055), abs=1e-3
    )  # Wilson, 1 of 2
    # paired: trained - always_defer = [0.3, 0.1]: mean 0.2 +- 1.96 * 0.1414 / sqrt(2)
    assert m["eval/trained_minus_always_defer/reward_ci_low"] == pytest.approx(0.2 - 0.196, abs=1e-3)
    assert verdict(m, "always_defer") == "trained above" and verdict(m, "never_defer") == "not distinguishable"
    assert m["eval/oracle/p_defer_given_team_wrong"] == 1.0 and m["eval/oracle/p_defer_given_team_right"] == 0.0


def write(tmp_path, model: str, **changes) -> str:
    from campaigns.hila import HILACampaign

    data = {"kind": "hila", **HILACampaign.example(model), "checkpoint": {"dir": str(tmp_path / "ck")}, **changes}
    (tmp_path / "hila.yaml").write_text(yaml.safe_dump(data))
    return str(tmp_path / "hila.yaml")


@pytest.mark.parametrize(
    "changes, path, fragment",
    [
        ({"world": {"id": "matrix"}}, "world.id", "deferral world"),
        ({"world": {"id": "deferral", "rounds": 1}}, "world.rounds", "round 1"),
        ({"expert": {"policy": "never_defer"}}, "expert", "expert"),
        ({"learner": {"policy": "server", "base_url": "http://x"}}, "learner.policy", "server"),
        ({"loops": 0}, "loops", "loops"),
    ],
)
def test_bad_campaign_files_say_which_key(tmp_path, changes, path, fragment):
    file = write(tmp_path, "smollm2-135m-instruct", **changes)
    with pytest.raises(ScenarioError) as info:
        load_campaign(file)
    assert info.value.path.startswith(path) and fragment in str(info.value)
    result = runner.invoke(app, ["validate", file])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_tiny_campaign_interrupted_then_resumed_into_the_same_run(tmp_path, tracking_uri, tiny_model_dir):
    file = write(tmp_path, tiny_model_dir, tracking={"uri": tracking_uri}, iterations=2)

    def stop(step, metrics):
        raise KeyboardInterrupt  # after step 0 (loop 0: an inner update) and its checkpoint

    with pytest.raises(KeyboardInterrupt):
        load_campaign(file).run(on_iteration=stop)
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("example-hila").experiment_id])
    assert run.info.status == "KILLED"
    result = runner.invoke(app, ["train", file, "--resume"])
    assert result.exit_code == 0, result.output
    runs = client.search_runs([client.get_experiment_by_name("example-hila").experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id] and runs[0].info.status == "FINISHED"
    steps = {
        k: sorted(m.step for m in client.get_metric_history(run.info.run_id, k)) for k in ("inner/loss", "outer/loss")
    }
    assert steps == {"inner/loss": [0, 1], "outer/loss": [1]}  # nothing lost or logged twice
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval/trained/reward")) == [0, 2]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
        f"figures/{n}.png" for n in ("inner", "outer", "evaluations", "accuracy_vs_cost")
    }
    assert {a.path for a in client.list_artifacts(run.info.run_id, "hila")} == {
        "hila/evaluations.json",
        "hila/verdict.json",
    }
