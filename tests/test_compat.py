"""agora.compat: the numeric views of the worlds pass PettingZoo's own tests, mask what each world's rules forbid,
and are stepped by TorchRL and SuperSuit (dev extras) with random legal actions drawn from the masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import supersuit
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test, seed_test
from pettingzoo.test.state_test import test_parallel_env as check_parallel_state
from pettingzoo.test.state_test import test_state as check_state
from pettingzoo.test.state_test import test_state_space as check_state_space
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec, turn_based_aec_to_parallel
from torchrl.envs.libs.pettingzoo import PettingZooWrapper
from torchrl.envs.utils import MarlGroupMapType, check_env_specs

from agora.compat import flat_view
from agora.registry import WORLDS
from tests.plugin_toy import Guess

# what PettingZoo's tests say of any Dict observation or non-numbered seat name, and TorchRL of any PettingZoo
# release but the one it was tested with
pytestmark = pytest.mark.filterwarnings(
    "ignore:Observation is not a NumPy array",
    "ignore:Observation space for each agent probably should be",
    "ignore:We recommend agents to be named",
    "ignore:PettingZoo in TorchRL is tested using version",
)

# world -> size of its action table at its small config (the docs list the same figures)
TABLE_SIZES = {
    "negotiation": 5**3 + 2,  # every take of 0-4 of 3 items, ACCEPT, WALK AWAY
    "werewolf": 7 + 1,  # 7 players, nobody
    "deferral": 3 + 3,  # EVAL each of 3 agents, CREATE, DEFER, the expert's ANSWER
    "economy": 11 + 1 + 7 * 4,  # 11 hours levels, KEEP, 7 brackets x 4 moves
    "matrix": 3,  # rock, paper, scissors
    "online_learning": math.comb(4 + 2, 2),  # the quarter grid of the 3-action simplex
}


def make_world(name: str, render_mode: str | None = None, **settings):
    """Agora's world `name` at its small config (+ `settings`), AEC worlds with PettingZoo's order enforcing."""
    cls = WORLDS.get(name).load()
    world = cls(cls.Config(**{**getattr(cls, "small_config", {}), **settings}), render_mode=render_mode)
    return world if isinstance(world, ParallelEnv) else wrappers.OrderEnforcingWrapper(world)


@pytest.mark.parametrize("name", TABLE_SIZES)
def test_view_passes_the_pettingzoo_api_and_state_tests(name):
    view = flat_view(make_world(name))
    if isinstance(view, ParallelEnv):
        parallel_api_test(view, num_cycles=20)
        check_parallel_state(view)
    else:
        api_test(view, num_cycles=20)
        check_state_space(view)
        check_state(view, 20)
    agents = view.possible_agents
    assert all(view.action_space(a) is view.action_space(agents[0]) for a in agents)  # one space for every seat
    assert all(view.observation_space(a) is view.observation_space(agents[0]) for a in agents)
    assert view.action_space(agents[0]) == spaces.Discrete(TABLE_SIZES[name])
    assert len(view.unwrapped.action_table()) == TABLE_SIZES[name]


@pytest.mark.parametrize("name", TABLE_SIZES)
def test_view_is_deterministic_under_a_seed(name):
    def view_fn():
        return flat_view(make_world(name))

    if isinstance(view_fn(), ParallelEnv):
        parallel_seed_test(view_fn, num_cycles=20)
    else:
        seed_test(view_fn, num_cycles=20)


@pytest.mark.parametrize("name", TABLE_SIZES)
def test_worlds_render_as_text_from_the_reset_on(name):
    def env_fn(render_mode=None):
        world = make_world(name, render_mode=render_mode)
        return parallel_to_aec(world) if isinstance(world, ParallelEnv) else world

    render_test(env_fn)


def test_werewolf_renders_the_table_right_after_reset():
    world = make_world("werewolf", render_mode="ansi")
    world.reset(seed=1)
    assert world.render().startswith("players: ")


def test_negotiation_masks_follow_the_pool_and_the_standing_offer():
    view = flat_view(make_world("negotiation"))
    view.reset(seed=3)
    world, table = view.unwrapped, view.unwrapped.action_table()
    mover = view.agent_selection
    mask = view.observe(mover)["action_mask"]
    accept, walk = len(table) - 2, len(table) - 1
    assert (mask[accept], mask[walk]) == (0, 1)  # no offer to accept yet
    assert mask[:accept].sum() == np.prod(world.counts + 1)  # the takes within this pool
    keep_all = table.index("PROPOSE " + " ".join(f"{i}={int(c)}" for i, c in zip(world.items, world.counts)))
    view.step(keep_all)
    other = view.agent_selection
    assert other != mover and view.observe(other)["action_mask"][accept] == 1
    assert not view.observe(mover)["action_mask"].any()  # the proposer waits
    view.step(accept)
    assert world.outcome == "deal"
    assert view.agents and not any(view.observe(a)["action_mask"].any() for a in view.agents)  # both have finished
    assert (world.scores[mover], world.scores[other]) == (10.0, 0.0)  # the pool is worth 10 to each agent
    state = view.state()
    assert view.state_space.contains(state) and state[-2:].sum() <= 1


def test_werewolf_masks_and_state_hold_the_rules_and_the_hidden_roles():
    view = flat_view(make_world("werewolf"))
    view.reset(seed=0)
    world = view.unwrapped
    wolf = view.agent_selection  # werewolves act first at night
    assert wolf.startswith("werewolf")
    mask = view.observe(wolf)["action_mask"]
    wolves = [world.position[s] for s in world.possible_agents if s.startswith("werewolf")]
    assert mask[wolves].sum() == 0 and mask[world.n] == 0  # no wolf kills a wolf; the kill is not optional
    assert mask.sum() == world.n - len(wolves)
    assert view.observe("villager_0")["action_mask"].sum() == 0  # villagers sleep
    n = world.n
    roles = view.state()[n : 2 * n]  # seat order of possible_agents
    assert [int(r) for r in roles] == [int(world.roles[world.position[s]]) for s in world.possible_agents]


def test_deferral_masks_follow_the_rounds_and_the_expert_answers():
    view = flat_view(make_world("deferral", kinds={"arithmetic": 1.0}))
    view.reset(seed=2)
    world, n = view.unwrapped, 3
    create, defer, answer = n, n + 1, n + 2
    assert view.observe("agent_0")["action_mask"].tolist() == [0, 0, 0, 1, 0, 0]  # round 0: answer on your own
    for _ in range(n):
        view.step(create)  # arithmetic: the formula computed exactly is right
    assert world.answers == [world.problem.answer] * n
    assert view.agent_selection == "agent_0"
    assert view.observe("agent_0")["action_mask"].tolist() == [0, 1, 1, 1, 1, 0]  # EVAL another, CREATE, DEFER
    assert not view.observe("agent_1")["action_mask"].any()  # waits for its turn
    right = view.state()[-(3 * n + 1) : -(2 * n + 1)]
    assert right.tolist() == [1.0] * n
    for _ in range(n):
        view.step(defer)
    assert view.agent_selection == "expert"
    assert view.observe("expert")["action_mask"].tolist() == [0, 0, 0, 0, 0, 1]
    view.step(answer)
    assert world.from_expert == [1] * n and world.answers == [world.problem.answer] * n


def test_economy_planner_moves_one_bracket_on_its_steps_only():
    view = flat_view(make_world("economy"))
    observations, _ = view.reset(seed=0)
    world, keep = view.unwrapped, 11
    assert observations["planner"]["action_mask"].nonzero()[0].tolist() == [keep]  # warmup: keep
    assert observations["worker_0"]["action_mask"][:11].all() and not observations["worker_0"]["action_mask"][11:].any()
    actions = {a: 4 for a in view.agents} | {"planner": keep}  # 40 hours each
    while not world.is_planning_step():
        observations, *_ = view.step(actions)
    first_raise = keep + 1 + world.action_table()[keep + 1 :].index("bracket 0 +10")
    before = world.rates.copy()
    assert observations["planner"]["action_mask"][first_raise] == 1
    view.step(actions | {"planner": first_raise})
    assert world.rates[0] == before[0] + 10 and np.array_equal(world.rates[1:], before[1:])
    assert np.all(world.labor == 40.0)
    with pytest.raises(ValueError, match="democratic"):
        flat_view(make_world("economy", democratic=True))


def test_online_learning_plays_the_quarter_grid_of_the_simplex():
    view = flat_view(make_world("online_learning"))
    view.reset(seed=0)
    world = view.unwrapped
    grid = [world.table_action("learner", i) for i in range(TABLE_SIZES["online_learning"])]
    assert all(np.isclose(p.sum(), 1.0) and np.all(p * 4 == np.round(p * 4)) for p in grid)
    half = next(i for i, p in enumerate(grid) if np.allclose(p, [0.5, 0.5, 0.0]))
    view.step(half)
    assert view.rewards["learner"] == pytest.approx(-(world.losses[0] @ [0.5, 0.5, 0.0]))


def test_the_mask_can_travel_in_the_infos_for_box_only_wrappers():
    view = flat_view(make_world("matrix"), mask_in_observation=False)
    parallel_api_test(view, num_cycles=5)
    observations, infos = view.reset(seed=0)
    assert isinstance(view.observation_space("player_0"), spaces.Box)
    assert infos["player_0"]["action_mask"].tolist() == [1, 1, 1]
    aec = flat_view(make_world("werewolf"), mask_in_observation=False)
    api_test(aec, num_cycles=10)
    aec.reset(seed=0)
    observation, _, _, _, info = aec.last()
    assert observation.dtype == np.float32 and info["action_mask"].sum() > 0


def legal_choice(mask: np.ndarray, rng: np.random.Generator) -> int:
    """A uniform draw among the legal entries (0 for a seat with none: its action is not used)."""
    legal = np.flatnonzero(mask)
    return int(rng.choice(legal)) if len(legal) else 0


def accepted(view, agent: str) -> bool:
    """Whether the world took `agent`'s last action as legal (no `illegal_action` flag, no episode lost to it)."""
    lost = view.unwrapped.metadata["name"].startswith("negotiation") and view.unwrapped.outcome == "illegal"
    return not view.infos.get(agent, {}).get("illegal_action") and not lost


@pytest.mark.parametrize("name", TABLE_SIZES)
def test_only_the_seats_that_move_have_legal_actions(name):
    """PettingZoo's classic masks: in an AEC world only `agent_selection` has legal entries, a waiting or finished
    seat none; in a Parallel world every live seat has some and a finished one none. Every entry the mask lets
    through is an action the world accepts."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        view = flat_view(make_world(name))
        if isinstance(view, ParallelEnv):
            observations, _ = view.reset(seed=seed)
            while True:
                masks = {agent: obs["action_mask"] for agent, obs in observations.items()}
                for agent, mask in masks.items():
                    assert mask.any() if agent in view.agents else not mask.any(), (agent, mask)
                if not view.agents:
                    break
                observations, _, _, _, infos = view.step({a: legal_choice(masks[a], rng) for a in view.agents})
                assert not any(info.get("illegal_action") for info in infos.values())
            continue
        view.reset(seed=seed)
        for mover in view.agent_iter():
            finished = view.terminations[mover] or view.truncations[mover]
            for agent in view.agents:
                mask = view.observe(agent)["action_mask"]
                if agent == mover and not finished:
                    assert mask.any(), (agent, mask)
                else:
                    assert not mask.any(), (agent, agent == mover, mask)
            if finished:
                view.step(None)
                continue
            view.step(legal_choice(view.observe(mover)["action_mask"], rng))
            assert accepted(view, mover), (mover, view.infos.get(mover))


@pytest.mark.parametrize("name", TABLE_SIZES)
def test_torchrl_steps_the_view(name):
    env = PettingZooWrapper(
        flat_view(make_world(name)),
        use_mask=True,
        return_state=True,
        group_map=MarlGroupMapType.ALL_IN_ONE_GROUP,
        seed=0,
    )
    check_env_specs(env, seed=0)
    rollout = env.rollout(60, break_when_any_done=False)  # TorchRL draws random actions within the masks
    acting, actions, masks = rollout["agents", "mask"], rollout["agents", "action"], rollout["agents", "action_mask"]
    chosen = masks.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    assert bool(chosen[acting].all())  # every acting seat's action was legal
    assert rollout["state"].shape[0] == 60


@pytest.mark.parametrize("name", TABLE_SIZES)
def test_supersuit_vector_env_steps_the_view(name):
    view = flat_view(make_world(name))
    parallel = view if isinstance(view, ParallelEnv) else turn_based_aec_to_parallel(view)
    vec = supersuit.pettingzoo_env_to_vec_env_v1(parallel)
    vec = supersuit.concat_vec_envs_v1(vec, 2, num_cpus=0, base_class="gymnasium")
    observations, _ = vec.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(100):
        actions = np.array([legal_choice(mask, rng) for mask in observations["action_mask"]])
        observations, rewards, terminations, truncations, infos = vec.step(actions)
        assert vec.observation_space.contains({k: v[0] for k, v in observations.items()})
        assert np.isfinite(rewards).all()
        assert not any(info.get("illegal_action") for info in infos)


def test_supersuit_observation_wrappers_take_the_box_form():
    view = flat_view(make_world("negotiation"), mask_in_observation=False)
    stacked = supersuit.frame_stack_v1(view, 3)
    api_test(stacked, num_cycles=10)
    assert stacked.observation_space("alice").shape == (3 * view.observation_space("alice").shape[0],)


def test_a_world_without_a_table_is_refused_with_the_contract_to_follow():
    with pytest.raises(TypeError, match="Guess declares no action table.*subclasses agora.compat.NumericWorld"):
        flat_view(Guess())
