"""One conformance test over every registered unit, Agora's own and installed plug-ins' (as PettingZoo tests every env).

- worlds (at their `small_config`): PettingZoo's `api_test` / `parallel_api_test` and `seed_test` /
  `parallel_seed_test`; the `TextWorld` contract: a prompt for every decision, `parse(render_action(a)) == a`
  and a legal `fallback_action` all through a game played with fallback actions;
- agents: the default `Config` validates, and the agent plays a whole episode of its world in every seat it
  plays (`seats`), the other seats taking fallback actions;
- trainers: the default `Config` validates, one `update` on a tiny LoRA model returns finite metrics, and
  `state_dict` / `load_state_dict` round-trip;
- campaign kinds: the `Config` validates every shipped file of that kind and the kind's `example`, which runs
  one iteration;
- every file in scenarios/ passes `agora validate`.

A new unit is checked the moment it is registered: nothing here names one (except the few that need a model,
a terminal or a file, which get them below).
"""

from __future__ import annotations

import fnmatch
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pettingzoo import ParallelEnv
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test
from typer.testing import CliRunner

from agora.campaign import CampaignKind, CampaignResult, load_campaign
from agora.errors import AgoraError
from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig
from agora.registry import AGENTS, CAMPAIGNS, TRAINERS, WORLDS, Entry
from agora.rollout import GroupRollout, Rollout
from agora.trainer import Trainer
from agora.world import ParseError, TextWorld
from mlflow import MlflowClient
from tests.conftest import SCENARIOS, SERIAL_GROUPS


def ids(entry: Entry) -> str:
    return f"{entry.name}@{entry.world}" if entry.world else entry.name


def small_world(entry: Entry):
    """(world class, its small Config): the world's `small_config` settings (optional), else its defaults."""
    cls = entry.load()
    return cls, cls.Config(**getattr(cls, "small_config", {}))


# --- worlds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", WORLDS.entries(), ids=ids)
def test_world_passes_the_pettingzoo_api_and_seed_tests(entry):
    cls, config = small_world(entry)
    world = cls(config)
    if isinstance(world, ParallelEnv):
        parallel_api_test(world, num_cycles=20)
        parallel_seed_test(lambda: cls(config), num_cycles=10)
    else:
        api_test(world, num_cycles=20)
        seed_test(lambda: cls(config), num_cycles=10)


class Fallback(Policy):
    """Answers every text turn with nothing, so the engine plays the world's fallback action (max_retries 0)."""

    uses_text = True

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        return [ActResponse("") for _ in requests]


class RoundTrip(Policy):
    """Plays the world's own fallback actions, checking on each that the world renders and parses it back."""

    uses_text = False

    def __init__(self, worlds: dict[int, object], seed: int = 0):
        super().__init__(self.Config(), seed=seed)
        self.worlds, self.rng, self.checked = worlds, np.random.default_rng(seed), 0

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            world = self.worlds[request.episode]
            prompt = world.prompt(request.agent, request.observation)
            assert isinstance(prompt, str) and prompt.strip(), "an empty prompt"
            action = world.fallback_action(request.agent, self.rng)
            text = world.render_action(request.agent, action)
            assert isinstance(text, str)
            parsed = world.parse(request.agent, text)
            assert_same_action(parsed, action)
            self.checked += 1
            out.append(ActResponse(text, action))
        return out


def assert_same_action(a, b) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_same_action(a[key], b[key])
    elif np.asarray(b).dtype.kind == "f":  # text carries floats to the precision the world writes them
        assert np.allclose(np.asarray(a, dtype=float), np.asarray(b), rtol=0, atol=1e-5), (
            f"parse(render_action(a)) gave {a!r}, a = {b!r}"
        )
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"parse(render_action(a)) gave {a!r}, a = {b!r}"


@pytest.mark.parametrize("entry", WORLDS.entries(), ids=ids)
def test_world_text_interface_round_trips_on_legal_actions(entry):
    cls, config = small_world(entry)
    fresh = cls(config)
    assert isinstance(fresh, TextWorld)
    fresh.reset(seed=0)
    with pytest.raises(ParseError):  # garbage is a ParseError (the agent is told why), never a crash
        fresh.parse(fresh.possible_agents[0], "\x00 not a reply \x00" * 3)
    worlds: dict[int, object] = {}

    def make():
        world = cls(config)
        worlds[len(worlds)] = world  # episode indices are given in order
        return world

    policy = RoundTrip(worlds)
    seats = cls(config).possible_agents
    episodes = Rollout(make, {s: policy for s in seats}, {s: "round-trip" for s in seats}, seed=3, concurrency=1).run(2)
    assert policy.checked == sum(len(e.steps) for e in episodes) > 0  # every decision was round-tripped
    assert all(isinstance(v, float) and math.isfinite(v) for e in episodes for v in e.metrics.values())


# --- agents ----------------------------------------------------------------------------------------


def agent_world(entry: Entry) -> Entry:
    """The world an agent is checked in: its own, else negotiation (any text world would do)."""
    return WORLDS.get(entry.world or "negotiation")


@pytest.fixture
def agent_overrides(tiny_model_dir, monkeypatch, request):
    """What the few agents that need a resource get: a tiny model, a terminal, a latent space, a server."""
    monkeypatch.setattr("sys.stdin", io.StringIO("ACCEPT\n" * 200))
    server = {}
    if "server" in request.node.name:  # llama.cpp's server on the embedded model (started once per session)
        llama = request.getfixturevalue("llama_server")
        server = {
            "base_url": llama.url,
            "api_key_env": "AGORA_TEST_SERVER_KEY",
            "max_tokens": 4,
            "logprobs": False,
            "demonstrations": False,
        }
    return {  # agent -> (its settings, its world's settings)
        "llm": ({"model": tiny_model_dir, "max_new_tokens": 4}, {}),
        "plan_execute": ({"model": tiny_model_dir, "max_new_tokens": 48, "subgoal_tokens": 4}, {}),
        "server": ({**server, "api": "llama.cpp"}, {}),
        "latent": ({"space": str(SCENARIOS / "latent" / "werewolf_lspo_space.json")}, {}),
        "oracle": ({}, {"oracle_observations": True}),
    }


def agents():
    """Every agent; one whose test id names a server gets `llama_server` at run time (`agent_overrides`), so its
    test joins that fixture's xdist group (tests/conftest.py) by a mark of its own."""
    group = pytest.mark.xdist_group(SERIAL_GROUPS["llama_server"])
    return [pytest.param(entry, marks=group) if "server" in ids(entry) else entry for entry in AGENTS.entries()]


@pytest.mark.parametrize("entry", agents(), ids=ids)
def test_agent_defaults_validate_and_it_plays_its_seats(entry, agent_overrides):
    cls = entry.load()
    assert issubclass(cls, Policy) and isinstance(cls.Config(), PolicyConfig)  # the defaults validate
    settings, world_settings = agent_overrides.get(entry.name, ({}, {}))
    config = cls.Config(**settings)
    world_cls, world_config = small_world(agent_world(entry))
    world_config = world_config.model_copy(update=world_settings)
    seats = world_cls(world_config).possible_agents
    mine = [s for s in seats if fnmatch.fnmatch(s, cls.seats)]
    assert mine, f"{entry.name} plays seats '{cls.seats}', none of {seats}"
    agent, filler = cls(config, seed=0), Fallback(Fallback.Config(), seed=0)
    players = {s: agent if s in mine else filler for s in seats}
    rollout = Rollout(
        lambda: world_cls(world_config), players, {s: s for s in seats}, seed=1, concurrency=2, max_retries=0
    )
    (episode,) = rollout.run(1)  # a whole game, whether or not the others' fallbacks ever turn to its seats
    world = world_cls(world_config)
    if isinstance(world, ParallelEnv):
        observation = world.reset(seed=0)[0][mine[0]]
    else:
        world.reset(seed=0)
        observation = world.observe(mine[0])
    messages = [{"role": "user", "content": world.prompt(mine[0], observation)}]
    (response,) = agent.act([ActRequest(0, mine[0], observation, messages, world.action_space(mine[0]))])
    assert isinstance(response, ActResponse) and isinstance(response.text, str)
    if response.action is not None:  # a structured action: the world can write it in its reply format
        assert isinstance(world.render_action(mine[0], response.action), str)


# --- trainers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learner_batch(tiny_model_dir):
    """batch(policy, world): two groups of three negotiation games in which a tiny LLM plays alice (with tokens and
    log-probs), as a plain `llm` policy or as a plan-execute agent (what `Trainer.learner_policy` says a trainer
    trains); with world "online_learning" (a trainer's `Trainer.worlds`), three-round online-learning episodes of
    the plain `llm` in the seat alice on a reply grid of tenths; built once per kind."""
    from agents.llm import LLMConfig, LLMPolicy
    from agents.plan_execute import PlanExecuteConfig, PlanExecutePolicy
    from agora.lora import LoRAConfig, load_learner

    built = {}

    def batch(policy: str, world: str = "negotiation"):
        if world == "online_learning":
            return online_learning_batch()
        if policy not in built:
            model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
            if policy == "plan_execute":
                config = PlanExecuteConfig(model=tiny_model_dir, temperature=1.0, max_new_tokens=40, subgoal_tokens=4)
                llm = PlanExecutePolicy(config, seed=0, model=model, tokenizer=tokenizer)
            else:
                config = LLMConfig(model=tiny_model_dir, temperature=1.0, max_new_tokens=6)
                llm = LLMPolicy(config, seed=0, model=model, tokenizer=tokenizer)
            world = WORLDS.get("negotiation")
            fair = AGENTS.get("random", world="negotiation")
            seats = {"alice": llm, "bob": fair.load()(fair.config(), seed=0)}
            rollout = GroupRollout(
                lambda: world.load()(world.config(max_turns=4)),
                seats,
                {"alice": "learner", "bob": "random"},
                seed=0,
                seeds=[11, 12],
                group_size=3,
                max_retries=0,
            )
            built[policy] = model, tokenizer, rollout.run(6)
        return built[policy]

    def online_learning_batch():
        if "online_learning" not in built:
            model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
            llm = LLMPolicy(
                LLMConfig(model=tiny_model_dir, temperature=1.0, max_new_tokens=16),
                seed=0,
                model=model,
                tokenizer=tokenizer,
            )
            world = WORLDS.get("online_learning")
            config = world.config(n_actions=2, rounds=3, grid=10, sequence="gaussian", agent_name="alice")
            rollout = GroupRollout(
                lambda: world.load()(config),
                {"alice": llm},
                {"alice": "learner"},
                seed=0,
                seeds=[11, 12],
                group_size=3,
                max_retries=0,
            )
            built["online_learning"] = model, tokenizer, rollout.run(6)
        return built["online_learning"]

    return batch


@pytest.mark.parametrize("entry", TRAINERS.entries(), ids=ids)
def test_trainer_defaults_validate_and_it_updates(entry, learner_batch):
    import torch

    cls = entry.load()
    assert issubclass(cls, Trainer)
    model, tokenizer, episodes = learner_batch(cls.learner_policy, (cls.worlds or ("negotiation",))[0])
    trainer = cls(model, cls.Config(), pad_id=tokenizer.pad_token_id, seed=0)
    trainer.tokenizer = tokenizer  # as campaigns set it: the learner's replies were decoded under the world's grammar
    assert any(s.grammar for e in episodes for s in e.steps if s.agent == "alice")
    metrics = trainer.update(episodes, ["alice"])
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    state = trainer.state_dict()
    again = cls(model, cls.Config(), pad_id=tokenizer.pad_token_id, seed=1)
    again.load_state_dict(state)
    torch.testing.assert_close(again.state_dict(), state)


# --- campaign kinds ----------------------------------------------------------------------------------


def shipped_campaigns() -> list[Path]:
    return sorted((SCENARIOS / "campaigns").glob("*.yaml"))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the campaign kinds (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.mark.parametrize("entry", CAMPAIGNS.entries(), ids=ids)
def test_campaign_kind_validates_its_files_and_runs_its_example(entry, tmp_path, tiny_model_dir, store):
    cls = entry.load()
    assert issubclass(cls, CampaignKind)
    for file in shipped_campaigns():
        campaign = load_campaign(file)
        if isinstance(campaign, cls):
            assert campaign.describe() and campaign.resolved_config()
    data = cls.example(model=tiny_model_dir)
    data["checkpoint"] = {**data.get("checkpoint", {}), "dir": str(tmp_path / "ck")}
    campaign = cls.resolve(data)
    assert campaign.iterations == 1
    result = campaign.run(tracking_uri=store, track=True)
    assert isinstance(result, CampaignResult) and result.iterations_done == 1 and result.checkpoint is not None
    assert result.history and all(math.isfinite(v) for v in result.last_metrics.values())
    run = MlflowClient(store).get_run(result.run_id)  # described: kind, iterations, checkpoints
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**{run.data.tags['agora.kind']}** campaign · 1 of 1 iterations") and "iter-000000" in note
    with pytest.raises(AgoraError, match="already finished"):  # its end-of-campaign outputs are written
        campaign.start(resume=True, track=False)
    record = tmp_path / "ck" / "run.json"  # as a process killed while writing those outputs leaves it:
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "finished"}))
    runner = campaign.start(resume=True, track=False)
    assert runner.resumed_from == result.checkpoint  # the one checkpoint format: found, restored, completed
    again = runner.run(on_iteration=lambda i, metrics: pytest.fail(f"iteration {i} ran again"))
    assert again.iterations_done == 1


# --- files -----------------------------------------------------------------------------------------


def test_every_shipped_file_validates():
    from agora.cli import app

    files = sorted(str(p) for p in SCENARIOS.rglob("*.yaml"))
    result = CliRunner().invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") == len(files)
