"""Werewolf's reply grammar: on every turn of real episodes it is exactly the parser's legal language
(grammar_checks.check_world_grammar), it names exactly the legal targets (dead players, fellow
werewolves, oneself, last night's protection and NOBODY only where the rules allow), its canonical
form is what the demonstration shows, and a statement that quotes a label stays text."""

from __future__ import annotations

import numpy as np
import pytest

from agora.grammar import Grammar
from agora.world import ParseError
from tests.grammar_checks import check_world_grammar, embedded_tokenizer
from worlds.werewolf.rules import DISCUSSION, DOCTOR, NIGHT, SEER, UNKNOWN, VILLAGER, VOTE, WEREWOLF, target_mask
from worlds.werewolf.text import reply_language
from worlds.werewolf.world import raw_env

# Position -> seat: Alice and Dave are the werewolves, Carol the seer, Erin the doctor.
TABLE = ["werewolf_0", "villager_0", "seer_0", "werewolf_1", "doctor_0", "villager_1", "villager_2"]
ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE = range(7)
NOBODY = 7


def dealt(**config) -> raw_env:
    world = raw_env(**config)
    world.reset(seed=0, options={"seating": TABLE})
    return world


def act(world, target: int, statement: str = "") -> None:
    world.step({"target": target, "statement": statement})


def grammar_of(world) -> Grammar:
    agent = world.agent_selection
    return world.reply_grammar(agent, world.observe(agent))


def names_exactly_the_legal_targets(world, agent: str, grammar: Grammar) -> None:
    """Each target's canonical reply is in the grammar iff the rules' mask allows it."""
    mask = world.observe(agent)["target_mask"]
    for target in range(world.n + 1):
        reply = world.render_action(agent, {"target": target, "statement": "I suspect someone."})
        assert grammar.matches(reply) == bool(mask[target]), (reply, mask)


EPISODES = [  # (config, seed, actions from parsed grammar samples rather than fallback draws)
    ({}, 1, False),
    ({"allow_abstain": True, "doctor_self_protect": False, "discussion_rounds": 1, "max_statement_chars": 40}, 2, True),
    ({"werewolves": 1, "villagers": 2, "max_statement_chars": 0, "doctor_repeat_protect": True}, 3, False),
]


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


@pytest.mark.parametrize(("config", "seed", "sampled"), EPISODES, ids=["default", "abstain", "no-statements"])
def test_grammar_is_the_parsers_language_at_every_turn_of_an_episode(config, seed, sampled, tokenizer):
    world = raw_env(**config)
    world.reset(seed=seed)
    rng = np.random.default_rng(seed)
    tokenized: set[tuple[int, int]] = set()  # (phase, role) checked with the embedded tokenizer
    turns = 0
    while world.winner is None:
        agent = world.agent_selection
        role, phase = int(world.roles[world.position[agent]]), world.phase
        first = (phase, role if phase == NIGHT else -1) not in tokenized and seed == 1
        tokenized.add((phase, role if phase == NIGHT else -1))
        grammar = check_world_grammar(
            world, agent, world.observe(agent), rng, samples=30, tokenizer=tokenizer if first else None
        )
        names_exactly_the_legal_targets(world, agent, grammar)
        for seat in world.agents:  # the dead have no reply language
            if not world.alive[world.position[seat]]:
                assert world.reply_grammar(seat, world.observe(seat)) is None
        action = world.parse(agent, grammar.sample(rng)) if sampled else world.fallback_action(agent, rng)
        world.step(action)
        assert not world.infos[agent].get("illegal_action")
        turns += 1
    assert turns > 10 and world.reply_grammar(world.possible_agents[0], None) is None  # nobody acts after the end
    if seed == 1:
        assert {p for p, _ in tokenized} == {NIGHT, DISCUSSION, VOTE}


def test_each_role_targets_only_its_legal_players_and_the_dead_are_not_votable():
    world = dealt(doctor_self_protect=True)
    kill = grammar_of(world)  # Alice (werewolf_0), night 1
    assert kill.matches("KILL: Bob") and kill.matches("KILL: Carol")
    assert not kill.matches("KILL: Dave") and not kill.matches("KILL: Alice")  # a fellow werewolf, oneself
    assert not kill.matches("KILL: NOBODY") and not kill.matches("VOTE: Bob") and not kill.matches("KILL: bob")
    act(world, BOB)
    act(world, BOB)
    inspect = grammar_of(world)  # Carol, the seer
    assert inspect.matches("INSPECT: Alice") and not inspect.matches("INSPECT: Carol")
    act(world, ALICE)
    protect = grammar_of(world)  # Erin, the doctor: herself allowed, Bob not yet dead
    assert protect.matches("PROTECT: Erin") and protect.matches("PROTECT: Frank") and protect.matches("PROTECT: Bob")
    act(world, FRANK)  # Bob dies
    assert world.phase == DISCUSSION and not world.alive[BOB]
    say = grammar_of(world)
    speaker = world.names[world.position[world.agent_selection]]
    assert say.matches("SAY: Frank was lucky.\nACCUSE: NOBODY") and say.matches("SAY: \nACCUSE: Grace")
    assert not say.matches("SAY: Bob knew.\nACCUSE: Bob") and not say.matches(f"SAY: me\nACCUSE: {speaker}")
    assert world.reply_grammar("villager_0", None) is None  # Bob is dead
    while world.phase == DISCUSSION:
        act(world, NOBODY, "Hm.")
    vote = grammar_of(world)
    voter = world.names[world.position[world.agent_selection]]
    assert vote.matches("VOTE: Dave") and not vote.matches("VOTE: Bob") and not vote.matches(f"VOTE: {voter}")
    assert not vote.matches("VOTE: NOBODY")  # no abstaining by default
    with pytest.raises(ParseError, match="Bob is dead"):
        world.parse(world.agent_selection, "VOTE: Bob")
    while world.phase == VOTE:
        act(world, GRACE)
    assert world.phase == NIGHT and world.day == 2
    while world.agent_selection != "doctor_0":
        act(world, CAROL if world.agent_selection.startswith("werewolf") else DAVE)
    protect = grammar_of(world)  # last night's choice is barred (doctor_repeat_protect is off), the dead too
    assert not protect.matches("PROTECT: Frank") and not protect.matches("PROTECT: Grace")
    assert protect.matches("PROTECT: Erin") and protect.matches("PROTECT: Carol")


def test_abstaining_and_self_protection_follow_the_config():
    world = dealt(allow_abstain=True, doctor_self_protect=False)
    act(world, BOB)
    act(world, BOB)
    act(world, ALICE)
    assert not grammar_of(world).matches("PROTECT: Erin") and grammar_of(world).matches("PROTECT: Bob")
    act(world, FRANK)
    while world.phase == DISCUSSION:
        act(world, NOBODY)
    assert grammar_of(world).matches("VOTE: NOBODY")


def test_a_statement_quoting_labels_is_text_and_the_statement_is_bounded():
    world = dealt(max_statement_chars=60)
    for target in (BOB, BOB, ALICE, FRANK):
        act(world, target)
    agent = world.agent_selection
    grammar = grammar_of(world)
    reply = "SAY: ACCUSE: Alice. VOTE: nobody. SAY: KILL: Carol\nACCUSE: NOBODY"
    assert grammar.matches(reply)
    assert world.parse(agent, reply) == {"target": NOBODY, "statement": "ACCUSE: Alice. VOTE: nobody. SAY: KILL: Carol"}
    assert not grammar.matches("SAY: " + "x" * 61 + "\nACCUSE: NOBODY")  # longer than the world keeps
    assert not grammar.matches("SAY: one\nACCUSE: Alice\nACCUSE: Carol")  # a second line is no reply format
    assert not grammar.matches("SAY: one\ntwo\nACCUSE: Alice")
    assert not grammar.matches("ACCUSE: Alice")  # the statement line is required, even if empty
    long = world.render_action(agent, {"target": CAROL, "statement": "word " * 30 + "\nsecond line"})
    assert grammar.matches(long) and world.parse(agent, long)["target"] == CAROL  # rendered as the world keeps it


@pytest.mark.parametrize("role", [WEREWOLF, SEER, DOCTOR, VILLAGER])
def test_the_demonstration_shows_the_grammars_canonical_form(role):
    world = raw_env()
    world.reset(seed=0)
    n, config = world.n, world.config
    names = [config.names[(n + i) % len(config.names)] for i in range(n)]  # the demonstration's table
    known = np.full(n, UNKNOWN, dtype=np.int64)
    known[: config.werewolves if role == WEREWOLF else 0] = 1
    for phase in (NIGHT, DISCUSSION, VOTE) if role != VILLAGER else (DISCUSSION, VOTE):
        mask = target_mask(config, role, 0, np.ones(n, dtype=np.int8), known, phase)
        grammar = reply_language(phase, role, names, mask, config.max_statement_chars)
        shown = dict(world._demonstration(role, phase))["assistant"]
        assert grammar.matches(shown), (phase, shown)
    assert reply_language(NIGHT, VILLAGER, names, np.zeros(n + 1, dtype=np.int8), 200) is None
