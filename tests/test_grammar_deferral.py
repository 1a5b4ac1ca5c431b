"""The deferral world's reply grammar against its parser and renderer (issue #15), on states from real
episodes: every seat kind (team in round 0 and later rounds, the expert), numeric and free-text answers."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from grammar_checks import check_world_grammar, embedded_tokenizer

from worlds.deferral import CREATE, DEFER, EVAL, EXPERT, raw_env
from worlds.deferral.rules import MAX_ANSWER_CHARS

DEFER_ACTION = {"type": DEFER, "target": 0, "answer": ""}


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


@pytest.fixture
def capitals(tmp_path):
    """A problem file whose answers are words, not numbers."""
    path = tmp_path / "capitals.jsonl"
    rows = [{"question": "Capital of France?", "answer": "Paris"}, {"question": "Capital of Peru?", "answer": "Lima"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def legal(world, agent: str, action) -> bool:
    """Whether the world takes `action` from `agent` now as a legal move (on a copy of the world)."""
    trial = copy.deepcopy(world)
    trial.step(action)
    return trial.illegal == 0 and not trial.infos.get(agent, {}).get("illegal_action")


def play(world, rng, visit) -> int:
    """One episode: seeded fallback actions, except agent_1 defers in later rounds (so the expert plays);
    `visit(world, agent, observation)` at every turn. Returns the number of turns."""
    turns = 0
    while not all(world.terminations.values()):
        agent = world.agent_selection
        visit(world, agent, world.observe(agent))
        later = agent == "agent_1" and world.round > 0
        world.step(DEFER_ACTION if later else world.fallback_action(agent, rng))
        turns += 1
    return turns


def test_every_grammar_reply_parses_to_a_legal_action_and_fallbacks_render_inside(capitals, tokenizer):
    rng = np.random.default_rng(0)
    seen: set[tuple[str, int, bool]] = set()

    def visit(world, agent, observation):
        kind = (EXPERT if agent == EXPERT else "team", min(world.round, 1), world.numeric())
        grammar = check_world_grammar(
            world, agent, observation, rng, samples=40, tokenizer=tokenizer if kind not in seen else None
        )
        seen.add(kind)
        for _ in range(15):
            action = world.parse(agent, grammar.sample(rng))
            assert agent == EXPERT or legal(world, agent, action), action

    worlds = [
        raw_env(team_size=3, rounds=3, kinds={"arithmetic": 1.0, "word": 1.0}),
        raw_env(team_size=4, rounds=2, kinds={"closed": 1.0}),
        raw_env(team_size=2, rounds=3, problems_file=capitals),
    ]
    for seed, world in enumerate(worlds):
        world.reset(seed=seed)
        assert play(world, rng, visit) > 0
    assert {(seat, r, n) for seat in ("team", EXPERT) for r in (0, 1) for n in (True, False)} - seen == {
        (EXPERT, 0, True),
        (EXPERT, 0, False),
    }  # every seat kind and phase (the expert plays only after round 0), numeric and free-text answers


def decision_world(team_size: int = 4, problems_file: str | None = None):
    """A world in round 1 (everyone answered with the fallback)."""
    world = raw_env(team_size=team_size, rounds=3, problems_file=problems_file, kinds={"arithmetic": 1.0})
    world.reset(seed=0)
    rng = np.random.default_rng(0)
    for agent in world.team:
        world.step(world.fallback_action(agent, rng))
    assert world.round == 1
    return world


def test_eval_names_only_the_other_agents_of_this_team():
    world = decision_world(team_size=4)
    grammar = world.reply_grammar("agent_1", world.observe("agent_1"))
    assert [n for n in range(-1, 12) if grammar.matches(f"EVAL {n}")] == [0, 2, 3]  # not itself, no agent 4
    assert not grammar.matches("EVAL 02") and not grammar.matches("EVAL agent 2")  # one canonical form
    assert grammar.matches("DEFER") and grammar.matches("CREATE 42") and not grammar.matches("DEFER now")
    pair = decision_world(team_size=2)
    assert [n for n in range(5) if pair.reply_grammar("agent_0", None).matches(f"EVAL {n}")] == [1]


def test_answers_are_numbers_exactly_when_the_problem_is_numeric(capitals):
    numeric = decision_world()
    grammar = numeric.reply_grammar("agent_0", None)
    for reply in ("CREATE 42", "CREATE -3.5", "CREATE 1/3", "CREATE 007"):
        assert grammar.matches(reply), reply
    for reply in ("CREATE forty", "CREATE 1/0", "CREATE 12 x 4 = 48", "CREATE 4.", "CREATE "):
        assert not grammar.matches(reply), reply
    words = decision_world(problems_file=capitals)
    grammar = words.reply_grammar("agent_0", None)
    assert grammar.matches("CREATE Paris") and grammar.matches("CREATE " + "a" * MAX_ANSWER_CHARS)
    assert not grammar.matches("CREATE " + "a" * (MAX_ANSWER_CHARS + 1)) and not grammar.matches("CREATE ...")
    zero = raw_env(team_size=3, problems_file=capitals)
    zero.reset(seed=0)
    first = zero.reply_grammar("agent_0", zero.observe("agent_0"))
    assert first.matches("ANSWER: Paris") and first.matches("ANSWER: ")  # the fallback's "no answer" too
    assert not first.matches("EVAL 1") and not first.matches("DEFER") and not first.matches("ANSWER: Paris\nDEFER")


def test_free_text_in_a_grammar_reply_is_never_read_as_a_command(capitals):
    zero = raw_env(team_size=3, problems_file=capitals)
    zero.reset(seed=0)
    reply = "ANSWER: I would DEFER, or EVAL 0"
    assert zero.reply_grammar("agent_0", None).matches(reply)
    assert zero.parse("agent_0", reply) == {"type": CREATE, "target": 0, "answer": "i would defer, or eval 0"}
    world = decision_world(problems_file=capitals)
    reply = "CREATE EVAL 2 then DEFER"
    assert world.reply_grammar("agent_0", None).matches(reply)
    assert world.parse("agent_0", reply) == {"type": CREATE, "target": 0, "answer": "eval 2 then defer"}
    assert world.parse("agent_0", "EVAL 2") == {"type": EVAL, "target": 2, "answer": ""}
    reply = "ANSWER: Lima\nEXPLANATION: DEFER; EVAL 0. ANSWER: Paris"
    assert world.reply_grammar(EXPERT, None).matches(reply)
    assert world.parse(EXPERT, reply) == {"answer": "lima", "explanation": "DEFER; EVAL 0. ANSWER: Paris"}


def test_prompts_demonstrations_and_renderings_are_in_the_grammar():
    world = decision_world(team_size=3)
    for agent in world.team:
        first, decide = (turn["content"] for turn in world.demonstration(agent) if turn["role"] == "assistant")
        me = world.team.index(agent)
        zero = raw_env(team_size=3)
        zero.reset(seed=0)
        assert zero.reply_grammar(agent, None).matches(first) and world.reply_grammar(agent, None).matches(decide)
        for action in (
            {"type": EVAL, "target": (me + 1) % 3, "answer": ""},
            {"type": CREATE, "target": 0, "answer": "7"},
        ):
            assert world.reply_grammar(agent, None).matches(world.render_action(agent, action))
    prompt = world.prompt(EXPERT, world.observe(EXPERT))
    example = prompt.split("Example reply:\n", 1)[1]
    assert world.reply_grammar(EXPERT, None).matches(example), example
    expert = {"answer": "417", "explanation": "412 + 5"}
    assert world.parse(EXPERT, world.render_action(EXPERT, expert)) == expert
    assert world.reply_grammar(EXPERT, None).matches(world.render_action(EXPERT, expert))
