"""DNO: the loss by hand; large-margin (best, worst) pairs from episodes; the moving reference (pi_t is the sampler:
h = 0 before the first step, no forward of the adapter-free model); the update's direction on a tiny model; a
SIGKILLed tiny campaign that resumes into the state of an uninterrupted run; a round scored by the llm judge."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from agora.trajectory import Episode
from tests.conftest import learner_step
from trainers.dno import DNOConfig, DNOTrainer, dno_loss, dno_pairs
from trainers.judges import OutcomeJudge
from trainers.preference import dpo_loss

T = torch.tensor


def test_dno_loss_by_hand():
    # h = (-1 - -1.5) - (-3 - -2) = 1.5; beta 0.2: -log sigma(0.3) = log(1 + e^-0.3) = 0.554355
    loss, h = dno_loss(T([-1.0]), T([-3.0]), T([-1.5]), T([-2.0]), beta=0.2)
    assert float(h) == pytest.approx(1.5) and float(loss) == pytest.approx(0.554355, abs=1e-6)
    # the winner and the loser swapped: h = -1.5, log(1 + e^0.3) = 0.854355
    loss, h = dno_loss(T([-3.0]), T([-1.0]), T([-2.0]), T([-1.5]), beta=0.2)
    assert float(h) == pytest.approx(-1.5) and float(loss) == pytest.approx(0.854355, abs=1e-6)
    # it is DPO's loss with pi_t in the place of the reference
    pi, old = T([-1.0, -4.0]), T([-2.0, -1.0])
    assert dno_loss(pi, old.flip(0), old, pi.flip(0), beta=0.3)[0] == pytest.approx(
        dpo_loss(pi, old.flip(0), old, pi.flip(0), beta=0.3)
    )
    # soft label q = 0.7: 0.7 * 0.554355 + 0.3 * 0.854355 = 0.644355
    loss, _ = dno_loss(T([-1.0]), T([-3.0]), T([-1.5]), T([-2.0]), beta=0.2, target=T([0.7]))
    assert float(loss) == pytest.approx(0.644355, abs=1e-6)
    # no movement away from pi_t: log 2 whatever the label
    assert float(dno_loss(T([-2.0]), T([-5.0]), T([-2.0]), T([-5.0]), beta=3.0, target=0.2)[0]) == pytest.approx(
        math.log(2)
    )


def test_the_soft_loss_sets_the_predicted_log_odds_to_the_score_gap():
    # q = sigma(d): the minimiser in h is beta h = d (the soft policy iteration's log-ratio, dno_step's docstring)
    beta, d = 0.5, 0.8
    for h0, zero in ((d / beta, True), (0.0, False), (2 * d / beta, False)):
        chosen = T([h0], requires_grad=True)
        loss, _ = dno_loss(chosen, T([0.0]), T([0.0]), T([0.0]), beta=beta, target=torch.sigmoid(T([d])))
        loss.sum().backward()
        assert (abs(float(chosen.grad)) < 1e-7) == zero, (h0, float(chosen.grad))


step = learner_step


def episodes_of_three_groups() -> list[Episode]:
    """seed 7: returns 1, 3, 3, 0, 2 (best: the first 3, index 1; worst: index 3; gap 3); seed 8: 2, 2 (gap 0);
    seed 9: 5, 1 on different prompts (gap 4, nothing in common). Seat b's steps are not the learner's."""
    out = []
    for i, r in enumerate([1.0, 3.0, 3.0, 0.0, 2.0]):
        steps = [step([1, 2], [10 + i], [-0.1 * i]), step([3], [20 + i], [-1.0], agent="b"), step([4], [30 + i], None)]
        out.append(Episode(i, 7, {}, steps, returns={"a": r, "b": -r}))
    out += [Episode(5 + i, 8, {}, [step([1, 2], [40 + i], [-1.0])], returns={"a": 2.0}) for i in range(2)]
    out += [Episode(7 + i, 9, {}, [step([5 + i], [50], [-1.0])], returns={"a": r}) for i, r in enumerate([5.0, 1.0])]
    return out


def test_pairs_are_each_groups_best_and_worst_by_return_with_a_large_margin():
    judge = OutcomeJudge()
    pairs, gaps, without = dno_pairs(episodes_of_three_groups(), ["a"], judge, by="value", min_margin=3.0)
    # seed 7 only: index 1 (the first of the two best) against index 3, on the prompt [1, 2] (not on [4]: the
    # step without recorded log-probs is not the sampler's)
    assert [(w.completion_ids, l.completion_ids, w.old_logprobs, l.old_logprobs, g) for w, l, g in pairs] == [
        ([11], [13], [-0.1], [-0.30000000000000004], 3.0)
    ]
    assert gaps == [3.0, 0.0, 4.0] and without == 2 and judge.calls == 0  # the return is read, not compared
    pairs, _, without = dno_pairs(episodes_of_three_groups(), ["a"], judge, by="value", min_margin=3.5)
    assert pairs == [] and without == 3
    # the seat's own steps only: seat b's group (returns -1, -3, -3, 0, -2) pairs index 3 over index 1 on [3]
    pairs, gaps, _ = dno_pairs(episodes_of_three_groups(), ["b"], judge, by="value", min_margin=0.0)
    assert [(w.completion_ids, l.completion_ids, g) for w, l, g in pairs] == [([23], [21], 3.0)]


def test_pairs_by_win_rate_within_the_group():
    # seed 7 scored by SPO win rates from the outcome judge's comparisons, by hand: index 0 beats 3: 1/4; 1 and 2
    # beat 0, 3, 4 and tie each other: 3.5/4; 3: 0; 4 beats 0 and 3: 2/4. Best 1 (the first of two), worst 3.
    judge = OutcomeJudge()
    pairs, gaps, without = dno_pairs(episodes_of_three_groups(), ["a"], judge, by="win_rate", min_margin=0.5)
    assert [(w.completion_ids, l.completion_ids) for w, l, _ in pairs] == [([11], [13])]
    # seed 8: a tie, 1/2 each, gap 0; seed 9: 1 and 0 (no prompt in common)
    assert gaps == pytest.approx([0.875, 0.0, 1.0]) and without == 2
    assert judge.calls == 10 + 1 + 1  # K(K-1)/2 comparisons per group
    pairs, _, without = dno_pairs(episodes_of_three_groups(), ["a"], judge, by="win_rate", min_margin=0.9)
    assert pairs == [] and without == 3


@pytest.mark.parametrize("labels, q", [("hard", 1.0), ("soft", 1 / (1 + math.exp(-3.0)))])
def test_items_carry_the_label(labels, q):
    trainer = DNOTrainer(torch.nn.Linear(1, 1), DNOConfig(labels=labels), pad_id=0)
    items = trainer.items(episodes_of_three_groups(), ["a"])
    assert [(w.completion_ids, l.completion_ids) for w, l, _ in items] == [([11], [13])]
    assert items[0][2] == pytest.approx(q)  # soft: sigma(s_w - s_l), the return gap 3
    assert trainer.groups_without_pair == 2 and trainer.gaps == [3.0, 0.0, 4.0]


# --- on a tiny model ---------------------------------------------------------------------------------


def no_reference_forward(monkeypatch):
    """DNO's reference is the sampler's record: scoring the adapter-free model fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail("DNO ran a forward of the adapter-free model")

    monkeypatch.setattr("trainers.preference.reference_logprobs", refuse)


def sequence_logps(model, tokenizer, prompt, completions, temperature):
    from agora.scoring import sequence_logprobs

    with torch.no_grad():
        logp, _, mask, _ = sequence_logprobs(
            model, [prompt] * len(completions), completions, temperature=temperature, pad_id=tokenizer.pad_token_id
        )
    return (logp * mask).sum(-1)


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_the_first_margin_is_against_the_recorded_pi_t(tiny_model_dir, monkeypatch, labels):
    from agora.lora import LoRAConfig, load_learner

    no_reference_forward(monkeypatch)
    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    prompt = tokenizer("Which colour is the sky?")["input_ids"]
    good, bad = tokenizer(" Blue.")["input_ids"], tokenizer(" Green cheese.")["input_ids"]
    old_good, old_bad = [-2.0] * len(good), [-1.0] * len(bad)  # pi_t as another sampler might have recorded it
    episodes = [
        Episode(0, 7, {}, [step(prompt, good, old_good)], returns={"a": 1.0}),
        Episode(1, 7, {}, [step(prompt, bad, old_bad)], returns={"a": 0.0}),
    ]
    beta = 0.5
    trainer = DNOTrainer(model, DNOConfig(beta=beta, labels=labels, learning_rate=1e-2), pad_id=tokenizer.pad_token_id)
    seq = sequence_logps(model, tokenizer, prompt, [good, bad], 0.7)  # at the sampler's temperature
    # LoRA B = 0 makes pi the adapter-free model: against it h would be 0; against pi_t it is not
    h = (float(seq[0]) - sum(old_good)) - (float(seq[1]) - sum(old_bad))
    q = 1.0 if labels == "hard" else 1 / (1 + math.exp(-1.0))  # the return gap 1
    expected = -(q * F.logsigmoid(T(beta * h)) + (1 - q) * F.logsigmoid(T(-beta * h)))
    first = trainer.update(episodes, ["a"])
    assert abs(h) > 1.0 and first["train/margin"] == pytest.approx(h, abs=1e-4)
    assert first["train/loss"] == pytest.approx(float(expected), abs=1e-4)
    assert first["train/pairs"] == 1 and first["train/accuracy"] == float(h > 0)
    assert first["train/groups_without_pair"] == 0 and first["train/score_gap"] == 1.0
    assert first["train/judge_calls"] == 0 and first["train/optimizer_steps"] == 1


def test_the_moving_reference_is_the_sampler_and_the_update_raises_the_winner(tiny_model_dir, monkeypatch):
    from agora.engine import sample, stop_token_ids
    from agora.lora import LoRAConfig, load_learner

    no_reference_forward(monkeypatch)
    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    prompt = tokenizer("Which colour is the sky?")["input_ids"]
    temperature = 0.7
    with torch.no_grad():
        (w, lw), (l, ll) = sample(
            model,
            [prompt, prompt],
            max_new_tokens=6,
            temperature=temperature,
            top_p=1.0,
            stop_ids=stop_token_ids(model, tokenizer),
            pad_id=tokenizer.pad_token_id,
            generators=[torch.Generator().manual_seed(s) for s in (1, 2)],
        )
    assert w != l
    episodes = [
        Episode(0, 7, {}, [step(prompt, w, lw, temperature=temperature)], returns={"a": 1.0}),
        Episode(1, 7, {}, [step(prompt, l, ll, temperature=temperature)], returns={"a": 0.0}),
    ]
    trainer = DNOTrainer(model, DNOConfig(beta=0.5, learning_rate=1e-2), pad_id=tokenizer.pad_token_id)
    first = trainer.update(episodes, ["a"])
    # pi_t is the policy that sampled: before the first step pi / pi_t = 1 on both, so h = 0 and L = log 2
    assert first["train/margin"] == pytest.approx(0.0, abs=1e-4)
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-4)
    # the step raised log pi(y_w) - log pi(y_l) relative to pi_t
    seq = sequence_logps(model, tokenizer, prompt, [w, l], temperature)
    h = (float(seq[0]) - sum(lw)) - (float(seq[1]) - sum(ll))
    assert h > 1e-3
    second = trainer.update(episodes, ["a"])  # the same round again: pi_t is still the sampler's record
    assert second["train/margin"] == pytest.approx(h, abs=1e-4) and second["train/accuracy"] == 1.0
    assert second["train/loss"] < math.log(2)


# --- in a campaign ------------------------------------------------------------------------------------


def campaign_text(tmp_path, model, name: str, folder: str) -> str:
    from tests.test_campaign import TINY

    text = TINY.format(model=model, iterations=2, dir=tmp_path / folder).replace("tiny-campaign", name)
    evaluation = "evaluation: {every: 2, episodes: 3, opponents: {fair: {policy: fair}, random: {policy: random}}}"
    assert evaluation in text
    text = text.replace(evaluation, "evaluation: {every: 0, episodes: 1, opponents: {random: {policy: random}}}")
    world = "world: {id: negotiation, max_turns: 4}"  # the learner opens: a group's rollouts share its first prompt
    assert world in text
    text = text.replace(world, "world: {id: negotiation, max_turns: 4, first_mover: first}")
    text = text.replace(
        "trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16}",
        "trainer: {id: dno, beta: 0.5, min_margin: 0.5, learning_rate: 0.01, micro_batch_size: 16}",
    )
    return text + "max_retries: 0\n"  # a re-prompt quotes the failed reply: pairs need the same prompt in both


def test_a_sigkilled_dno_campaign_resumes_into_the_uninterrupted_state(tmp_path, tracking_uri, tiny_model_dir):
    """`agora train` killed after its first round's checkpoint, `--resume` finishes the same MLflow run, and the
    optimizer state and LoRA weights end where an uninterrupted run of the same file ends."""
    from safetensors.torch import load_file

    from agora.cli import app
    from mlflow import MlflowClient
    from tests.conftest import train_killed_at

    runner = CliRunner()
    file = tmp_path / "c.yaml"
    file.write_text(campaign_text(tmp_path, tiny_model_dir, "tiny-dno", "1"))
    train_killed_at(file, tracking_uri, tmp_path / "1" / "iter-000000" / "state.json")
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny-dno").experiment_id
    (killed,) = client.search_runs([experiment])
    assert killed.info.status == "RUNNING"

    result = runner.invoke(app, ["train", str(file), "--resume"])
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    history = {
        key: client.get_metric_history(run.info.run_id, key)
        for key in ("train/pairs", "train/loss", "train/margin", "train/optimizer_steps", "train/groups_without_pair")
    }
    for key, values in history.items():
        assert sorted(m.step for m in values) == [0, 1], key
    # the seeded rollouts give large-margin pairs in both rounds, one micro-batch each
    assert all(m.value > 0 for m in history["train/pairs"])
    assert all(m.value == 1 for m in history["train/optimizer_steps"])
    # the moving reference: each round's one step is taken with the weights that sampled it (pi = pi_t: h = 0 and
    # L = log 2 up to the float noise of batching), round 1's after round 0 moved them away from the initial model
    assert all(abs(m.value) < 1e-3 for m in history["train/margin"])
    assert all(m.value == pytest.approx(math.log(2), abs=1e-3) for m in history["train/loss"])

    straight = tmp_path / "s.yaml"
    straight.write_text(campaign_text(tmp_path, tiny_model_dir, "tiny-dno-2", "2"))
    assert runner.invoke(app, ["train", str(straight)]).exit_code == 0
    resumed = torch.load(tmp_path / "1" / "iter-000001" / "trainer.pt", weights_only=False)
    uninterrupted = torch.load(tmp_path / "2" / "iter-000001" / "trainer.pt", weights_only=False)
    assert resumed["optimizer"]["state"]  # the rounds made optimizer steps
    torch.testing.assert_close(resumed, uninterrupted)
    adapters = [load_file(str(tmp_path / d / "iter-000001" / "adapter" / "adapter_model.safetensors")) for d in "12"]
    torch.testing.assert_close(adapters[0], adapters[1])
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapters[0].items())


def test_a_dno_campaign_with_the_llm_judge_scores_by_win_rate(tmp_path, tracking_uri, tiny_model_dir):
    """The llm judge (the tiny model reading both transcripts) scores each group of 3 by win rate: 3 comparisons per
    group; soft labels; one round end to end."""
    from agora.campaign import load_campaign
    from mlflow import MlflowClient

    text = campaign_text(tmp_path, tiny_model_dir, "tiny-dno-llm", "ck").replace("iterations: 2", "iterations: 1")
    text = text.replace(
        "min_margin: 0.5,", f"min_margin: 0.0, labels: soft, judge: {{id: llm, model: {tiny_model_dir}}},"
    )
    (tmp_path / "c.yaml").write_text(text)
    campaign = load_campaign(tmp_path / "c.yaml")
    assert campaign.trainer_config.judge.id == "llm" and campaign.trainer_config.labels == "soft"
    result = campaign.run()
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    metric = lambda key: [m.value for m in client.get_metric_history(result.run_id, key)]  # noqa: E731
    assert metric("train/judge_calls") == [2 * 3]  # 2 groups x K(K-1)/2
    assert metric("train/judge_model_calls_total")[0] > 0
    (gap,) = metric("train/score_gap")
    assert 0.0 <= gap <= 1.0  # win rates
