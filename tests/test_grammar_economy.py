"""The economy's reply grammars against its parsers and renderer (issue #15), on states from real
episodes: workers on work, stand and vote steps (with and without candidates), the LLM tax planner
with rates at and near the bounds."""

from __future__ import annotations

import numpy as np
import pytest
from grammar_checks import check_world_grammar, embedded_tokenizer

from worlds.economy import PLANNER, PLANNER_DELTAS, STAND, VOTE, parallel_env
from worlds.economy.text import HOURS_PLACES, planner_moves

WORK = 0


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


def asked(world, agent: str) -> bool:
    """Whether the engine asks `agent`'s policy this step (the planner only on its own decision steps)."""
    return agent != PLANNER or (not world.config.democratic and world.is_planning_step())


def legal(world, agent: str, action) -> bool:
    """Whether `action` is a legal move of `agent` now: in its space, and a planner's rates one legal change
    per bracket away, a vote for a standing candidate."""
    if not world.action_space(agent).contains(action if agent == PLANNER else as_space_value(action)):
        return False
    if agent == PLANNER:
        return all(
            any(np.isclose(np.clip(r + d, 0, 100), new) for d in planner_moves(r))
            for r, new in zip(world.rates, action)
        )
    if world.config.democratic and world.phase() == VOTE and world.candidates.any():
        return action["vote"] >= 0 and bool(world.candidates[action["vote"]])
    return True


def as_space_value(action):
    if isinstance(action, dict):
        return {**action, "labor": np.asarray(action["labor"], dtype=np.float64)}
    return np.asarray(action, dtype=np.float64)


def play(world, rng, visit) -> None:
    """One episode in which every asked seat replies with a sample of its grammar (so workers stand and
    vote), `visit(world, agent, observation)` first; the planner is passive between its decisions."""
    observations, _ = world.reset(seed=int(rng.integers(1000)))
    while world.agents:
        actions = {}
        for agent in world.agents:
            if not asked(world, agent):
                actions[agent] = world.passive_action(agent)
                continue
            visit(world, agent, observations[agent])
            actions[agent] = world.parse(agent, world.reply_grammar(agent, observations[agent]).sample(rng))
        observations, *_ = world.step(actions)


def test_every_grammar_reply_parses_to_a_legal_action_and_fallbacks_render_inside(tokenizer):
    rng = np.random.default_rng(0)
    seen: set = set()

    def visit(world, agent, observation):
        phase = world.phase() if agent != PLANNER else "plan"
        kind = (agent == PLANNER, phase, bool(world.candidates.any()) and phase == VOTE)
        if agent in (PLANNER, "worker_0", "worker_1"):
            grammar = check_world_grammar(
                world, agent, observation, rng, samples=30, tokenizer=tokenizer if kind not in seen else None
            )
            for _ in range(10):
                action = world.parse(agent, grammar.sample(rng))
                assert legal(world, agent, action), action
            seen.add(kind)

    play(parallel_env(num_workers=3, steps=10, tax_period=2, warmup=1, brackets="three", initial_rate=5.0), rng, visit)
    play(parallel_env(num_workers=4, steps=9, tax_period=3, warmup=2, brackets="flat", democratic=True), rng, visit)
    play(
        parallel_env(num_workers=3, steps=5, tax_period=3, warmup=2, democratic=True, persona_scaling=True), rng, visit
    )
    play(
        parallel_env(num_workers=3, steps=4, tax_period=2, warmup=1, brackets="flat", persona_scaling=True), rng, visit
    )
    assert seen >= {(True, "plan", False), (False, WORK, False), (False, STAND, False), (False, VOTE, True)}


def economy(**settings):
    world = parallel_env(num_workers=3, steps=6, tax_period=2, warmup=1, brackets="three", **settings)
    world.reset(seed=0)
    return world


def test_planner_rates_stay_within_bounds_with_one_change_per_actual_bracket():
    world = economy()
    world.rates = np.array([0.0, 5.0, 100.0])
    grammar = world.reply_grammar(PLANNER, None)
    assert grammar.matches("DELTAS: +20, -10, -20") and grammar.matches("DELTAS: 0, +20, 0")
    for reply in ("DELTAS: -10, 0, 0", "DELTAS: 0, -20, 0", "DELTAS: 0, 0, +10", "DELTAS: 0, 0", "DELTAS: 0, 0, 0, 0"):
        assert not grammar.matches(reply), reply  # below 0%, a second way to 0%, above 100%, bracket counts
    assert not grammar.matches("DELTAS: +15, 0, 0") and not grammar.matches("DELTAS: 10, 0, 0")
    assert world.parse(PLANNER, "DELTAS: +20, -10, -20").tolist() == [20.0, 0.0, 80.0]
    federal = parallel_env(num_workers=3, steps=6, tax_period=2, warmup=1)
    federal.reset(seed=0)
    assert federal.reply_grammar(PLANNER, None).matches("DELTAS: " + ", ".join(["0"] * 7))
    assert not federal.reply_grammar(PLANNER, None).matches("DELTAS: 0, 0, 0")
    assert planner_moves(50.0) == PLANNER_DELTAS and planner_moves(0.0) == (0, 10, 20)


def test_a_clipped_planner_fallback_is_written_as_the_move_that_reaches_it():
    world = economy(initial_rate=5.0)
    rng = np.random.default_rng(1)
    rendered = set()
    for _ in range(40):
        action = world.fallback_action(PLANNER, rng)
        text = world.render_action(PLANNER, action)
        assert world.reply_grammar(PLANNER, None).matches(text), text
        assert world.parse(PLANNER, text).tolist() == action.tolist()
        rendered.add(text.split(", ")[0])
    assert "DELTAS: -10" in rendered  # -20 and -10 both reach 0% from 5%


def test_worker_hours_votes_and_stands_follow_the_step():
    world = economy()
    labor = world.reply_grammar("worker_0", None)
    for reply in ("LABOR: 0", "LABOR: 40", "LABOR: 37.25", "LABOR: 100", "LABOR: 100.00"):
        assert labor.matches(reply), reply
    for reply in ("LABOR: 100.5", "LABOR: 101", "LABOR: -1", "LABOR: 4e1", "LABOR: 40.", "LABOR: 40 hours"):
        assert not labor.matches(reply), reply
    for hours in (0.0, 12.34, 99.99, 100.0):  # hundredths: what the grammar writes and the fallback draws
        text = world.render_action("worker_0", np.array(hours))
        assert labor.matches(text) and world.parse("worker_0", text).tolist() == hours
    longest = "LABOR: 1." + "5" * HOURS_PLACES  # the most decimals the parser reads; the grammar writes 2
    assert world.parse("worker_0", longest) == float(longest[7:])
    assert labor.matches("LABOR: 1.55") and not labor.matches("LABOR: 1.555")
    # a worker's reply fits its tokens: a democratic second line still comes after the longest hours
    assert len(labor.sample(np.random.default_rng(0))) <= len("LABOR: 100.00")
    demo = world.demonstration("worker_0")[1]["content"]
    assert labor.matches(demo)

    voters = parallel_env(num_workers=4, steps=9, tax_period=3, warmup=2, brackets="three", democratic=True)
    voters.reset(seed=0)
    voters.step({a: np.array(40.0) for a in voters.workers} | {PLANNER: voters.rates.copy()})
    assert voters.phase() == STAND
    stand = voters.reply_grammar("worker_0", None)
    assert stand.matches("LABOR: 40\nSTAND: +10, 0, -20") and stand.matches("LABOR: 40\nSTAND: NO")
    assert not stand.matches("LABOR: 40\nSTAND: +10, 0") and not stand.matches("LABOR: 40")
    standing = {"labor": np.array(40.0), "stand": 1, "platform": np.array([0, 2, 4]), "vote": -1}
    declining = {**standing, "stand": 0}
    voters.step({"worker_1": standing, "worker_3": standing} | {a: declining for a in ("worker_0", "worker_2")})
    assert voters.phase() == VOTE and voters.candidates.sum() == 2
    vote = voters.reply_grammar("worker_0", None)
    assert [k for k in range(5) if vote.matches(f"LABOR: 40\nVOTE: {k}")] == [1, 2]
    assert voters.parse("worker_0", "LABOR: 40\nVOTE: 2")["vote"] == 3
    voters.candidates[:] = 0  # a vote step nobody stood for: labor only
    assert voters.reply_grammar("worker_0", None).matches("LABOR: 40")


def test_prompts_and_demonstrations_show_replies_of_the_grammar():
    world = economy(initial_rate=0.0)
    reply = world.demonstration(PLANNER)[1]["content"]
    assert world.reply_grammar(PLANNER, None).matches(reply), reply  # no cut below 0%
    middle = parallel_env(num_workers=3, steps=6, tax_period=2, warmup=1, brackets="three")
    observation = middle.reset(seed=0)[0][PLANNER]
    example = next(line for line in middle.prompt(PLANNER, observation).split("\n") if line.startswith("DELTAS:"))
    assert middle.reply_grammar(PLANNER, observation).matches(example), example
