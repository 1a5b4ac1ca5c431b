"""Nash-MD and Nash Mirror Prox on LLM policies: the loss by hand and its gradient (TRL's former Nash-MD form); the
geometric-mixture decoder (logits, caches, end points); each update's direction on a 3-action table; Mirror Prox's
half / full steps and their state; the campaign checks; tiny-model campaigns end to end, one SIGKILLed and resumed."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from agora.trajectory import Episode
from tests.conftest import learner_step
from trainers.judges import OutcomeJudge
from trainers.nash import (
    MirrorProxConfig,
    MirrorProxTrainer,
    NashMDConfig,
    NashMDTrainer,
    nash_pg_loss,
    preference_items,
)

T = torch.tensor


def test_the_loss_by_hand():
    # r~ = (P - 0.5) - beta (log pi - log mu) - (1/eta)(log pi - log pi_k); rho = exp(log pi - log pi_old)
    loss, reward = nash_pg_loss(T([-1.0]), T([-1.0]), T([-1.5]), T([1.0]), beta=0.2)
    assert float(reward) == pytest.approx(0.5 - 0.2 * 0.5) and float(loss) == pytest.approx(-0.4)
    loss, reward = nash_pg_loss(T([-1.0]), T([-1.2]), T([-1.5]), T([0.0]), beta=0.2, inv_eta=2.0, anchor=T([-0.7]))
    assert float(reward) == pytest.approx(-0.5 - 0.1 - 2.0 * (-0.3))
    assert float(loss) == pytest.approx(-float(torch.exp(T(0.2))) * float(reward))
    # clipping: rho = e^0.2 = 1.22 > 1.1 with a positive reward keeps the clipped (smaller) surrogate
    loss, reward = nash_pg_loss(T([-1.0]), T([-1.2]), T([-1.0]), T([1.0]), beta=0.0, clip=0.1)
    assert float(loss) == pytest.approx(-1.1 * 0.5)
    # ... with a negative reward the unclipped one (the pessimistic bound)
    loss, _ = nash_pg_loss(T([-1.0]), T([-1.2]), T([-1.0]), T([0.0]), beta=0.0, clip=0.1)
    assert float(loss) == pytest.approx(float(torch.exp(T(0.2))) * 0.5)


def test_the_first_step_gradient_is_trls_nash_md_loss():
    """At rho = 1: grad of beta sg(log pi - log mu) log pi - (P - 0.5) log pi (TRL's former NashMDTrainer)."""
    logits = T([[0.3, -0.2, 0.1], [1.0, 0.0, -1.0]], requires_grad=True)
    ref = T([[0.0, 0.0, 0.0], [0.5, 0.5, -0.5]]).log_softmax(-1)
    actions, P, beta = [0, 2], T([1.0, 0.0]), 0.3
    rows = torch.arange(2)
    logp = logits.log_softmax(-1)[rows, actions]
    loss, _ = nash_pg_loss(logp, logp.detach(), ref[rows, actions], P, beta=beta)
    (ours,) = torch.autograd.grad(loss.sum(), logits)
    logp = logits.log_softmax(-1)[rows, actions]
    trl = beta * (logp.detach() - ref[rows, actions]) * logp - (P - 0.5) * logp
    (theirs,) = torch.autograd.grad(trl.sum(), logits)
    torch.testing.assert_close(ours, theirs)


def step(agent, prompt, completion, logprobs, temperature=1.0):
    return learner_step(prompt, completion, logprobs, agent=agent, temperature=temperature)


def test_each_decision_takes_its_episodes_preference_over_the_opponent():
    episodes = [
        Episode(0, 7, {}, [step("p0", [1], [5], [-1.0]), step("p1", [1], [6], [-1.0])], returns={"p0": 1, "p1": -1}),
        Episode(1, 7, {}, [step("p0", [1], [6], [-1.0]), step("p1", [1], [6], [-1.0])], returns={"p0": 0, "p1": 0}),
        Episode(2, 8, {}, [step("p0", [2], [7], [-1.0]), step("p0", [3], [8], None)], returns={"p0": -1, "p1": 1}),
    ]
    items, preferences = preference_items(episodes, ["p0"], OutcomeJudge())
    assert preferences == [1.0, 0.5, 0.0]
    # the opponent's decisions and unsampled ones (no recorded logprobs) are not trained on
    assert [(d.completion_ids, p) for d, p in items] == [([5], 1.0), ([6], 0.5), ([7], 0.0)]
    with pytest.raises(ValueError, match="need its opponent"):
        preference_items([Episode(0, 1, {}, [step("p0", [1], [5], [-1.0])], returns={"p0": 1})], ["p0"], OutcomeJudge())


def test_an_llm_judge_compares_the_learners_side_of_an_episode_with_the_opponents(tiny_model_dir):
    """The same transcript twice, the judged seats marked differently: P in both orders, symmetric in the sides."""
    from trainers.judges import JudgeConfig, build_judge

    judge = build_judge(JudgeConfig(id="llm", model=tiny_model_dir))
    episode = Episode(
        0, 7, {}, [step("p0", [1], [5], [-1.0]), step("p1", [1], [6], [-1.0])], returns={"p0": 1, "p1": -1}
    )
    episode.steps[0].text, episode.steps[1].text = "ACTION: paper", "ACTION: rock"
    items, (p,) = preference_items([episode], ["p0"], judge)
    assert 0.0 < p < 1.0 and p != 0.5 and items[0][1] == p  # a probability, not the outcome's 1
    _, (q,) = preference_items([episode], ["p1"], judge)  # the sides swapped
    assert q == pytest.approx(1.0 - p, abs=1e-6)
    assert judge.calls == 2


# --- the geometric mixture ----------------------------------------------------------------------------


@pytest.fixture
def learner(tiny_model_dir):
    """The tiny model with a LoRA adapter whose B is not zero: the policy differs from its reference."""
    from agora.lora import LoRAConfig, load_learner

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator))
    model.eval()
    return model, tokenizer


def full_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=T([ids])).logits[0].float()


def test_the_mixture_is_the_weighted_sum_of_the_policy_and_reference_logits(learner):
    from agora.mixture import GeometricMixture

    model, tokenizer = learner
    ids = tokenizer("rock, paper or scissors?")["input_ids"]
    own = full_logits(model, ids)
    with model.disable_adapter():
        ref = full_logits(model, ids)
    assert (own - ref).abs().max() > 1e-2  # the adapter matters
    for a in (0.0, 0.125, 1.0):
        with torch.no_grad():
            mixed = GeometricMixture(model, a)(input_ids=T([ids])).logits[0]
        torch.testing.assert_close(mixed, (1 - a) * own + a * ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GeometricMixture(model, 1.5)


def test_sampling_from_the_mixture_records_its_log_probs_through_both_caches(learner):
    """A batch of prompts of different lengths (left padding, rows finishing at different steps): every recorded
    log-prob equals log_softmax(((1 - a) logits + a logits_ref) / T) of a full forward without any cache."""
    from agora.engine import sample, stop_token_ids
    from agora.mixture import GeometricMixture

    model, tokenizer = learner
    a, temperature = 0.4, 0.9
    prompts = [tokenizer(t)["input_ids"] for t in ("Pick one:", "Pick one: rock, paper or scissors. Go", "Hi")]
    mixture = GeometricMixture(model, a)
    outs = sample(
        mixture,
        prompts,
        max_new_tokens=7,
        temperature=temperature,
        top_p=1.0,
        stop_ids=stop_token_ids(model, tokenizer) | {tokenizer("!")["input_ids"][0]},
        pad_id=tokenizer.pad_token_id,
        generators=[torch.Generator().manual_seed(s) for s in (1, 2, 3)],
    )
    for prompt, (tokens, logps) in zip(prompts, outs):
        ids = prompt + tokens
        own = full_logits(model, ids)
        with model.disable_adapter():
            ref = full_logits(model, ids)
        expected = (((1 - a) * own + a * ref) / temperature).log_softmax(-1)
        for k, (t, lp) in enumerate(zip(tokens, logps)):
            assert lp == pytest.approx(float(expected[len(prompt) - 1 + k, t]), abs=1e-4)


def test_the_mixtures_end_points_are_the_policy_and_the_reference(learner):
    from agora.engine import sample, stop_token_ids
    from agora.mixture import GeometricMixture

    model, tokenizer = learner
    prompts = [tokenizer("Pick one:")["input_ids"]] * 2

    def draw(m):
        return sample(
            m,
            prompts,
            max_new_tokens=6,
            temperature=1.0,
            top_p=1.0,
            stop_ids=stop_token_ids(model, tokenizer),
            pad_id=tokenizer.pad_token_id,
            generators=[torch.Generator().manual_seed(s) for s in (5, 6)],
        )

    policy = draw(model)
    with model.disable_adapter():
        reference = draw(model)
    assert [t for t, _ in policy] != [t for t, _ in reference]
    assert [t for t, _ in draw(GeometricMixture(model, 0.0))] == [t for t, _ in policy]
    assert [t for t, _ in draw(GeometricMixture(model, 1.0))] == [t for t, _ in reference]


# --- each update's direction on a 3-action table ------------------------------------------------------


def table(model, tokenizer, preferences, temperature=1.0):
    """One prompt, three one-token actions, one episode each with the learner's preference P over its opponent
    (1 / 0 / 0.5 for rock / paper / scissors by default); the recorded log-probs are the model's own."""
    prompt = tokenizer("Choose:")["input_ids"]
    actions = [tokenizer(f" {w}", add_special_tokens=False)["input_ids"][:1] for w in ("rock", "paper", "scissors")]
    logps = action_logps(model, prompt, actions, temperature)
    episodes = [
        Episode(k, 7, {}, [step("p0", prompt, a, [float(logps[k])], temperature)], returns={"p0": p, "p1": 1 - p})
        for k, (a, p) in enumerate(zip(actions, preferences))
    ]
    return prompt, actions, episodes


def action_logps(model, prompt, actions, temperature=1.0):
    with torch.no_grad():
        logits = model(input_ids=T([prompt])).logits[0, -1].float() / temperature
    return logits.log_softmax(-1)[[a[0] for a in actions]]


@pytest.mark.parametrize("trainer_class", ["nash_md", "mirror_prox"])
def test_the_update_raises_the_preferred_action_and_lowers_the_dispreferred(learner, trainer_class):
    model, tokenizer = learner
    prompt, actions, episodes = table(model, tokenizer, [1.0, 0.0, 0.5])
    before = action_logps(model, prompt, actions)
    if trainer_class == "nash_md":
        trainer = NashMDTrainer(model, NashMDConfig(beta=0.0, learning_rate=1e-2), pad_id=tokenizer.pad_token_id)
        metrics = trainer.update(episodes, ["p0"])
        after = action_logps(model, prompt, actions)
    else:
        trainer = MirrorProxTrainer(
            model, MirrorProxConfig(beta=0.0, eta=100.0, learning_rate=1e-2), pad_id=tokenizer.pad_token_id
        )
        metrics = trainer.update(episodes, ["p0"])  # the half step: the opponent holds the result
        after = action_logps(trainer.frozen, prompt, actions)
        torch.testing.assert_close(action_logps(model, prompt, actions), before)  # the learner is back at pi_k
    assert metrics["train/decisions"] == 3 and metrics["train/preference"] == pytest.approx(0.5)
    # the log-odds of the preferred action over the dispreferred one grew (one Adam step moves all tokens alike)
    assert float(after[0] - after[1]) > float(before[0] - before[1]) + 1e-3


def test_the_kl_term_pulls_the_policy_back_to_the_reference(learner):
    """P = 0.5 everywhere: the only force is beta KL(pi || mu), and the adapter (far from mu here) moves towards it."""
    model, tokenizer = learner
    prompt, actions, episodes = table(model, tokenizer, [0.5, 0.5, 0.5])

    def kl():  # over the three actions, renormalised
        with torch.no_grad(), model.disable_adapter():
            ref = action_logps(model, prompt, actions).log_softmax(-1)
        own = action_logps(model, prompt, actions).log_softmax(-1)
        return float((own.exp() * (own - ref)).sum())

    before = kl()
    trainer = NashMDTrainer(model, NashMDConfig(beta=1.0, learning_rate=1e-2), pad_id=tokenizer.pad_token_id)
    metrics = trainer.update(episodes, ["p0"])
    assert metrics["train/kl_ref"] != 0.0 and kl() < before


def adapter_distance(a, b):
    return sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5


def test_the_prox_term_keeps_the_step_near_pi_k(tiny_model_dir):
    """Several passes on the same decisions: with a strong prox weight 1/eta the half step moves the adapter less."""
    from agora.lora import LoRAConfig, adapter_state, load_learner

    moved = {}
    for eta in (1e6, 0.05):
        model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
        _, _, episodes = table(model, tokenizer, [1.0, 0.0, 0.5])
        start = adapter_state(model)
        config = MirrorProxConfig(beta=0.0, eta=eta, epochs=6, clip=None, learning_rate=2e-2)
        trainer = MirrorProxTrainer(model, config, pad_id=tokenizer.pad_token_id)
        trainer.update(episodes, ["p0"])
        moved[eta] = adapter_distance(adapter_state(trainer.frozen), start)
    assert moved[0.05] < 0.9 * moved[1e6]


def test_mirror_prox_alternates_half_and_full_steps_and_its_state_round_trips(tiny_model_dir):
    from agora.lora import LoRAConfig, adapter_state, load_learner

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    _, _, episodes = table(model, tokenizer, [1.0, 0.0, 0.5])
    config = MirrorProxConfig(learning_rate=1e-2, epochs=2)
    trainer = MirrorProxTrainer(model, config, pad_id=tokenizer.pad_token_id)
    pi_k = adapter_state(model)
    half = trainer.update(episodes, ["p0"])
    assert half["train/full_step"] == 0.0 and trainer.phase == "full"
    assert adapter_distance(adapter_state(model), pi_k) == 0.0  # the learner samples the full step from pi_k
    half_step = adapter_state(trainer.frozen)
    assert adapter_distance(half_step, pi_k) > 0  # the opponent is pi_{k+1/2}
    state = trainer.state_dict()
    full = trainer.update(episodes, ["p0"])
    assert full["train/full_step"] == 1.0 and trainer.phase == "half"
    assert adapter_distance(adapter_state(trainer.frozen), adapter_state(model)) == 0.0  # the opponent: pi_{k+1}
    assert adapter_distance(adapter_state(model), pi_k) > 0
    # a restarted trainer continues from the saved phase and opponent
    other_model, _ = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    restored = MirrorProxTrainer(other_model, config, pad_id=tokenizer.pad_token_id)
    restored.load_state_dict(state)
    assert restored.phase == "full" and adapter_distance(adapter_state(restored.frozen), half_step) == 0.0


# --- in a campaign ------------------------------------------------------------------------------------

RPS = """\
name: {name}
world: {{id: matrix, game: rock_paper_scissors, rounds: 1}}
learner:
  seats: [player_0]
  model: {model}
  temperature: 1.0
  max_new_tokens: 6
  lora: {{r: 4, alpha: 8}}
trainer: {trainer}
iterations: {iterations}
groups_per_iteration: 2
group_size: 3
evaluation: {{every: 0, episodes: 2, opponents: {{uniform: {{policy: mixed}}}}}}
checkpoint: {{every: 1, dir: {dir}}}
"""
TRAINERS = {
    "nash_md": "{id: nash_md, mixture_coef: 0.5, learning_rate: 0.01}",
    "mirror_prox": "{id: mirror_prox, eta: 1.0, epochs: 2, learning_rate: 0.01}",
}


def rps_file(tmp_path, model, trainer, name="tiny-nash", iterations=2, folder="ck"):
    text = RPS.format(name=name, model=model, trainer=TRAINERS[trainer], iterations=iterations, dir=tmp_path / folder)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "change, key, message",
    [
        ("opponents: {player_1: {policy: mixed}}\n", "opponents", "plays every non-learner seat itself"),
        ("self_play: {seats: [player_1]}\n", "self_play", "not a snapshot"),
        ("execution: {backend: ray}\n", "execution.backend", "not on Ray"),
    ],
)
def test_a_trainer_that_makes_its_opponent_refuses_other_opponents(tmp_path, tiny_model_dir, change, key, message):
    from agora.cli import app

    path = rps_file(tmp_path, tiny_model_dir, "nash_md")
    path.write_text(path.read_text() + change)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and message in result.output and key in result.output, result.output
    # and without fixed evaluation opponents
    path = rps_file(tmp_path, tiny_model_dir, "mirror_prox")
    path.write_text(path.read_text().replace(", opponents: {uniform: {policy: mixed}}", ""))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "evaluation.opponents" in result.output, result.output


def test_a_nash_md_campaign_plays_the_mixture_in_the_other_seat(tmp_path, tracking_uri, tiny_model_dir):
    from agora.campaign import load_campaign
    from agora.mixture import GeometricMixture
    from mlflow import MlflowClient

    campaign = load_campaign(rps_file(tmp_path, tiny_model_dir, "nash_md"))
    assert campaign.opponent_seats == ["player_1"]
    runner = campaign.start(track=False)
    opponent = runner.seats["player_1"]
    assert isinstance(opponent.model, GeometricMixture) and opponent.model.model is runner.model
    assert opponent.prefix_cache is None and opponent is not runner.learner
    runner.end()
    result = load_campaign(rps_file(tmp_path, tiny_model_dir, "nash_md", name="tiny-nash-2", folder="ck2")).run()
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    metric = lambda key: [m.value for m in client.get_metric_history(result.run_id, key)]  # noqa: E731
    assert metric("train/decisions") == [6.0, 6.0]  # 2 groups x 3 rollouts x 1 round
    assert all(0.0 <= p <= 1.0 for p in metric("train/preference"))
    assert len(metric("train/reward/opponent")) == 2  # the opponent's returns, under its own name


def test_a_sigkilled_mirror_prox_campaign_resumes_into_the_uninterrupted_state(tmp_path, tracking_uri, tiny_model_dir):
    """Killed after the half step's checkpoint, `--resume` runs the full step against the saved pi_{k+1/2}: the
    learner's and the opponent's weights end where an uninterrupted run's end."""
    from safetensors.torch import load_file

    from agora.cli import app
    from mlflow import MlflowClient
    from tests.conftest import train_killed_at

    runner = CliRunner()
    file = rps_file(tmp_path, tiny_model_dir, "mirror_prox", name="tiny-mp", folder="1")
    train_killed_at(file, tracking_uri, tmp_path / "1" / "iter-000000" / "state.json")
    result = runner.invoke(app, ["train", str(file), "--resume"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-mp").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/full_step")] == [0.0, 1.0]

    straight = rps_file(tmp_path, tiny_model_dir, "mirror_prox", name="tiny-mp-2", folder="2")
    assert runner.invoke(app, ["train", str(straight)]).exit_code == 0
    states = [torch.load(tmp_path / d / "iter-000001" / "trainer.pt", weights_only=False) for d in "12"]
    assert [s["full_step_next"] for s in states] == [0, 0]  # after the full step: a half step next
    torch.testing.assert_close(states[0], states[1])
    adapters = [load_file(str(tmp_path / d / "iter-000001" / "adapter" / "adapter_model.safetensors")) for d in "12"]
    torch.testing.assert_close(adapters[0], adapters[1])
    # after the full step the opponent holds pi_{k+1}, the learner's own weights
    torch.testing.assert_close(states[0]["opponent"], adapters[0])
