"""Reply grammars of negotiation, matrix games and online learning (issue #15, part 1).

On the states of real episodes (seeded, played by grammar replies and fallback actions), every turn's
grammar passes `check_world_grammar` (its replies parse, the world's rendered actions are in it, llguidance
and GBNF take it), and replies decoded under it step the world legally. Beside that, tests that fail if a
grammar drifts from its world's rules: counts beyond the pool, ACCEPT with nothing to accept, an unknown
action, probabilities that do not sum to 1.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from grammar_checks import accepts_tokens, check_world_grammar, embedded_tokenizer

from agora.grammar import Grammar, GrammarTooLarge, alt, literal, seq
from worlds.matrix import parallel_env as matrix_env
from worlds.negotiation import ACCEPT, PROPOSE
from worlds.negotiation import raw_env as negotiation_env
from worlds.online_learning import play_grammar, to_hundredths
from worlds.online_learning import raw_env as online_learning_env


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


def play_aec(world, seed: int, tokenizer=None, token_turns: int = 0, samples: int = 30) -> int:
    """Play one episode of an AEC text world, checking the grammar at every turn; every third turn's action
    is a reply sampled from the grammar and parsed, the others the world's fallback (which keeps a negotiation
    going). Returns the turns checked."""
    rng = np.random.default_rng(seed)
    world.reset(seed=seed)
    turns = 0
    while world.agents:
        agent = world.agent_selection
        if world.terminations[agent] or world.truncations[agent]:
            world.step(None)
            continue
        observation = world.observe(agent)
        grammar = check_world_grammar(
            world, agent, observation, rng, samples=samples, tokenizer=tokenizer if turns < token_turns else None
        )
        if turns % 3 == 2:
            action = world.parse(agent, grammar.sample(rng))
        else:
            action = world.fallback_action(agent, rng)
        world.step(action)
        assert not world.infos[agent].get("illegal_action"), action
        turns += 1
    return turns


# --- negotiation ----------------------------------------------------------------------------------


def test_negotiation_grammar_holds_at_every_turn_of_real_episodes(tokenizer):
    turns = sum(play_aec(negotiation_env(), seed, tokenizer, token_turns=2 if seed == 0 else 0) for seed in range(5))
    assert turns >= 12


def test_negotiation_grammar_is_the_prompted_format_within_the_pool():
    world = negotiation_env(first_mover="first")
    world.reset(seed=1)
    alice, bob = world.possible_agents
    counts = [int(c) for c in world.counts]
    grammar = world.reply_grammar(alice, world.observe(alice))
    full = " ".join(f"{i}={c}" for i, c in zip(world.items, counts))
    assert grammar.matches(f"MESSAGE: All of it, please.\nACTION: PROPOSE {full}")
    assert grammar.matches(f"ACTION: PROPOSE {full}")  # the message line is optional (render_action omits it)
    assert grammar.matches("ACTION: WALK AWAY")
    too_many = " ".join(f"{i}={c + (k == 0)}" for k, (i, c) in enumerate(zip(world.items, counts)))
    assert not grammar.matches(f"ACTION: PROPOSE {too_many}")  # more books than the pool
    reordered = " ".join(f"{i}=0" for i in reversed(world.items))
    assert not grammar.matches(f"ACTION: PROPOSE {reordered}")  # one canonical order
    assert not grammar.matches(f"ACTION: PROPOSE {full.rsplit(' ', 1)[0]}")  # an item left out
    assert not grammar.matches("ACTION: ACCEPT")  # nothing to accept yet
    assert not grammar.matches("MESSAGE: hi\nACTION: WALK AWAY\nACTION: WALK AWAY")
    assert not grammar.matches(f"MESSAGE: {'x' * (world.config.max_message_chars + 1)}\nACTION: WALK AWAY")
    prompt_example = "\n".join(world.prompt(alice, world.observe(alice)).split("\n")[-2:])
    assert grammar.matches(prompt_example), prompt_example  # what the prompt shows is in the language

    world.step({"type": PROPOSE, "take": [0] * len(counts), "message": "all yours"})
    assert world.reply_grammar(bob, world.observe(bob)).matches("MESSAGE: deal\nACTION: ACCEPT")
    world.step({"type": PROPOSE, "take": counts, "message": ""})
    assert not world.reply_grammar(bob, world.observe(bob)).matches("ACTION: ACCEPT")  # bob's own offer stands
    assert world.reply_grammar(alice, world.observe(alice)).matches("ACTION: ACCEPT")


def test_negotiation_message_cannot_pass_for_an_action():
    world = negotiation_env(first_mover="first")
    world.reset(seed=2)
    alice = world.agent_selection
    grammar = world.reply_grammar(alice, world.observe(alice))
    take = " ".join(f"{i}=0" for i in world.items)
    reply = f"MESSAGE: ACTION: ACCEPT and ACTION: WALK AWAY\nACTION: PROPOSE {take}"
    assert grammar.matches(reply)
    action = world.parse(alice, reply)
    assert action["type"] == PROPOSE and action["take"] == [0] * len(world.items)
    assert action["type"] != ACCEPT


@pytest.mark.parametrize("chars", [0, 12])
def test_negotiation_messages_are_bounded_as_configured(chars):
    world = negotiation_env(max_message_chars=chars)
    world.reset(seed=0)
    agent = world.agent_selection
    grammar = check_world_grammar(world, agent, world.observe(agent), np.random.default_rng(0), samples=20)
    assert grammar.matches(f"MESSAGE: {'x' * 12}\nACTION: WALK AWAY") == (chars == 12)
    assert not grammar.matches(f"MESSAGE: {'x' * 13}\nACTION: WALK AWAY") and grammar.matches("ACTION: WALK AWAY")
    example = world.prompt(agent, world.observe(agent)).split("Example reply:\n")[1]
    assert grammar.matches(example), example  # the prompt's example is cut as messages are


# --- matrix games -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"game": "rock_paper_scissors"},
        {"game": "custom", "actions": ["stag", "hare_hunt"], "payoffs": [[[4, 4], [0, 3]], [[3, 0], [3, 3]]]},
    ],
)
def test_matrix_grammar_holds_at_every_round(settings, tokenizer):
    world = matrix_env(rounds=3, **settings)
    rng = np.random.default_rng(0)
    observations, _ = world.reset(seed=0)
    rounds = 0
    while world.agents:
        actions = {}
        for agent in world.agents:
            tok = tokenizer if rounds == 0 else None
            grammar = check_world_grammar(world, agent, observations[agent], rng, samples=20, tokenizer=tok)
            actions[agent] = world.parse(agent, grammar.sample(rng))
        observations, *_ = world.step(actions)
        rounds += 1
    assert rounds == 3
    names = world.action_names
    assert all(grammar.matches(f"ACTION: {name}") for name in names)
    assert not grammar.matches("ACTION: lizard") and not grammar.matches(f"ACTION: {names[0]} {names[1]}")
    assert not grammar.matches(f"ACTION: {names[0].upper()}")  # the canonical spelling only


# --- online learning --------------------------------------------------------------------------------


@pytest.mark.parametrize("n_actions", [2, 3])
def test_online_learning_grammar_holds_at_every_round(n_actions, tokenizer):
    world = online_learning_env(n_actions=n_actions, rounds=4)
    assert play_aec(world, seed=n_actions, tokenizer=tokenizer, token_turns=1, samples=50) == 4
    demonstration = world.demonstration("learner")[-1]["content"]
    prompt_example = world.prompt("learner", world.observe("learner")).split("\n")[-1]
    assert play_grammar(n_actions).matches(demonstration) and play_grammar(n_actions).matches(prompt_example)


def test_online_learning_grammar_is_exactly_the_hundredths_summing_to_one():
    two = play_grammar(2)
    written = [f"{h // 100}.{h % 100:02d}" for h in range(101)]
    for (i, a), (j, b) in itertools.product(enumerate(written), repeat=2):
        assert two.matches(f"PLAY {a} {b}") == (i + j == 100), (a, b)
    three, rng = play_grammar(3), np.random.default_rng(0)
    for triple in rng.integers(0, 101, size=(3000, 3)):
        assert three.matches("PLAY " + " ".join(written[h] for h in triple)) == (triple.sum() == 100)
    for reply in ("PLAY 0.5 0.5 0", "PLAY 0.50 0.50 0.0", "PLAY 0.50  0.50 0.00", "PLAY 0.50 0.50", "PLAY 1.000 0 0"):
        assert not three.matches(reply), reply  # two decimals, one space, n numbers: the prompted form only


def test_online_learning_grammar_scales_to_many_actions(tokenizer):
    """n = 6: the DAG stays small to build and decode (its regex is too large for `matches`), and every
    reply it holds sums to exactly 1.00 and parses."""
    world = online_learning_env(n_actions=6, rounds=2)
    world.reset(seed=0)
    grammar, rng = world.reply_grammar("learner", world.observe("learner")), np.random.default_rng(0)
    with pytest.raises(GrammarTooLarge):
        grammar.regex()
    for _ in range(200):
        reply = grammar.sample(rng)
        assert sum(int(x.replace(".", "")) for x in reply.split()[1:]) == 100, reply
        assert abs(world.parse("learner", reply).sum() - 1) < 1e-9
    assert accepts_tokens(grammar, world.render_action("learner", world.fallback_action("learner", rng)), tokenizer)
    assert not accepts_tokens(grammar, "PLAY " + " ".join(["0.20"] * 5 + ["0.01"]), tokenizer)


def test_rounding_to_hundredths_keeps_the_sum():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 20):
        for p in rng.dirichlet(np.full(n, 0.3), size=200):
            h = to_hundredths(p)
            assert h.sum() == 100 and np.all(np.abs(h / 100 - p) < 0.01 + 1e-12)


def test_grammar_dag_hashes_each_shared_node_once():
    """agora.grammar caches a composite node's hash: a DAG whose nodes are shared by 3^14 paths builds and
    renders at once (hashing every path, as a plain frozen dataclass does, takes seconds)."""
    start = time.perf_counter()
    node = literal("end")
    for depth in range(14):
        node = alt(seq("a", node), seq("b", node), seq(f"c{depth}", node))
    lark = Grammar(node).lark()
    assert lark.count("\n") < 200 and time.perf_counter() - start < 1.0
