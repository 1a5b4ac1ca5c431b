"""The negotiation world: PettingZoo contract, each rule on hand-checked cases, the strict parser, baselines."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, seed_test
from pydantic import ValidationError

from agents.scripted.negotiation import FairNegotiator, GreedyNegotiator, RandomNegotiator
from agora.policy import ActRequest
from agora.world import ParseError, TextWorld
from worlds.negotiation import (
    ACCEPT,
    PROPOSE,
    WALK_AWAY,
    all_splits,
    env,
    is_pareto_optimal,
    raw_env,
    split_value,
    value_vectors,
)


def set_state(world, counts, values_a, values_b, first="alice"):
    """A world in a hand-chosen state (counts and private values)."""
    world.reset(seed=0)
    world.counts = np.array(counts)
    world.values = {"alice": np.array(values_a), "bob": np.array(values_b)}
    world.agent_selection = first
    return world


def prop(*take, message=""):
    return {"type": PROPOSE, "take": list(take), "message": message}


ACC = {"type": ACCEPT, "take": [0, 0, 0], "message": ""}
WALK = {"type": WALK_AWAY, "take": [0, 0, 0], "message": ""}


def test_pettingzoo_api_and_seed():
    api_test(raw_env(), num_cycles=100)
    api_test(env(max_turns=4), num_cycles=100)
    seed_test(lambda: raw_env(), num_cycles=50)
    assert isinstance(raw_env(), TextWorld)


@pytest.mark.parametrize("seed", range(40))
def test_draws_respect_the_rules(seed):
    world = raw_env()
    world.reset(seed=seed)
    counts = world.counts
    assert np.all((1 <= counts) & (counts <= 4)) and 5 <= counts.sum() <= 7
    a, b = world.values["alice"], world.values["bob"]
    assert split_value(a, counts) == split_value(b, counts) == 10
    assert np.all((a > 0) | (b > 0)) and not np.array_equal(a, b)
    again = raw_env()
    again.reset(seed=seed)
    assert np.array_equal(again.counts, counts) and np.array_equal(again.values["bob"], b)


def test_value_vectors_and_splits_by_hand():
    assert sorted(value_vectors([2, 3], 6)) == [(0, 2), (3, 0)]
    assert sorted(value_vectors([1, 2], 3)) == [(1, 1), (3, 0)]
    assert len(all_splits([1, 2, 3])) == 2 * 3 * 4
    assert split_value([4, 0, 2], [1, 2, 1]) == 6


def test_propose_then_accept_scores_each_share():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(prop(1, 0, 2, message="I take the book and two balls"))  # alice keeps book + 2 balls
    assert world.observe("bob")["offer"].tolist() == [0, 2, 1]
    world.step(ACC)
    assert world.outcome == "deal" and all(world.terminations.values())
    assert world.scores == {"alice": 8.0, "bob": 6.0}  # 4 + 2*2 ; 2*2 + 2
    m = world.episode_metrics()
    assert m["agreement"] == 1 and m["joint_welfare"] == 14 and m["nash_product"] == 48
    assert m["pareto_optimal"] == 1 and m["score/bob"] == 6
    assert world.history[0] == 'alice: "I take the book and two balls" -> PROPOSE book=1 hat=0 ball=2'


def test_pareto_optimality_by_hand():
    counts, a, b = [1, 2, 3], [4, 0, 2], [0, 2, 2]
    assert is_pareto_optimal(counts, a, b, [1, 0, 3])  # alice 10, bob 4: bob cannot gain without alice losing
    assert is_pareto_optimal(counts, a, b, [1, 0, 0])  # alice 4, bob 10
    assert not is_pareto_optimal(counts, a, b, [1, 1, 2])  # giving bob the hat costs alice nothing
    assert not is_pareto_optimal(counts, a, b, [0, 0, 3])  # the book is worth 4 to alice, 0 to bob


def test_walk_away_gives_the_disagreement_value():
    world = set_state(raw_env(disagreement_value=1.5), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(prop(1, 2, 3))
    world.step(WALK)
    assert world.outcome == "walk_away" and world.scores == {"alice": 1.5, "bob": 1.5}
    assert world.episode_metrics()["nash_product"] == 0 and world.episode_metrics()["walk_away"] == 1


def test_turn_limit_truncates_with_no_deal():
    world = set_state(raw_env(max_turns=3), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    for take in ([1, 2, 3], [0, 2, 3], [1, 1, 1]):
        world.step(prop(*take))
    assert world.outcome == "timeout" and all(world.truncations.values()) and not any(world.terminations.values())
    assert world.episode_metrics()["agreement"] == 0 and world.episode_metrics()["turns"] == 3


def test_illegal_actions_end_the_game_flagged():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(ACC)  # nothing to accept
    assert world.outcome == "illegal" and world.infos["alice"]["illegal_action"]
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(prop(2, 0, 0))  # only one book in the pool
    assert world.outcome == "illegal"


def test_own_offer_cannot_be_accepted():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(prop(1, 0, 0))
    world.step(prop(0, 2, 3))  # bob counter-proposes; alice's offer is replaced
    assert world.observe("alice")["offer"].tolist() == [1, 0, 0]
    world.step(ACC)
    assert world.scores == {"alice": 4.0, "bob": 10.0}


def test_observation_hides_the_other_agents_values():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    obs = world.observe("alice")
    assert obs["values"].tolist() == [4, 0, 2]
    prompt = world.prompt("alice", obs)
    assert "book=4, hat=0, ball=2" in prompt and "book=0, hat=2, ball=2" not in prompt
    assert "ACCEPT" not in prompt.split("Reply with")[1]  # nothing to accept yet
    world.step(prop(1, 0, 2))
    prompt = world.prompt("bob", world.observe("bob"))
    assert "gives you book=0 hat=2 ball=1, worth 6 to you" in prompt and "ACTION: ACCEPT" in prompt


@pytest.mark.parametrize(
    "text,expected",
    [
        ("MESSAGE: hi\nACTION: PROPOSE book=1 hat=0 ball=2", prop(1, 0, 2, message="hi")),
        ("  message:  deal?  \n action: propose BOOK=1, HAT=0, BALL=2.", prop(1, 0, 2, message="deal?")),
        ("**MESSAGE:** ok\n**ACTION:** WALK AWAY", {**WALK, "message": "ok"}),
        ("Sure!\nACTION: walk_away", WALK),
        ("ACTION: PROPOSE ball=2 book=1 hat=0", prop(1, 0, 2)),
    ],
)
def test_parser_accepts_the_format(text, expected):
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    assert world.parse("alice", text) == expected


@pytest.mark.parametrize(
    "text,error",
    [
        ("I propose I take the book.", "no 'ACTION:' line"),
        ("ACTION: ACCEPT", "no offer from bob to accept"),
        ("ACTION: PROPOSE book=1 hat=0", "missing: ball"),
        ("ACTION: PROPOSE book=1 hat=0 ball=2 car=1", "unknown item 'car'"),
        ("ACTION: PROPOSE book=2 hat=0 ball=2", "book=2 is impossible"),
        ("ACTION: PROPOSE book=1 book=1 hat=0 ball=2", "appears twice"),
        ("ACTION: PROPOSE I take the book", "item=count pairs"),
        ("ACTION: PROPOSE book=1 hat=0 ball=2\nACTION: ACCEPT", "more than one"),
        ("ACTION: DANCE", "unknown action 'DANCE'"),
    ],
)
def test_parser_explains_what_is_wrong(text, error):
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    with pytest.raises(ParseError, match=error):
        world.parse("alice", text)


def test_parser_survives_garbage_and_round_trips():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    rng = np.random.default_rng(0)
    alphabet = list("ACTION:PROPSEbokhatl=0123456789 \n*_-WALKY") + ["é", "\x00", "💥", "\u202e"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 80))))
        try:
            action = world.parse("alice", text)
            assert world.action_space("alice")["take"].contains(np.array(action["take"]))
        except ParseError:
            pass
    for take in all_splits(world.counts):
        action = prop(*take, message="a note")
        assert world.parse("alice", world.render_action("alice", action)) == action


def test_messages_are_sanitized_and_cut():
    world = set_state(raw_env(max_message_chars=10), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(prop(1, 0, 0, message="héllo\nthere, my friend"))
    assert world.history[0].startswith('alice: "h?llo ther"')
    assert world.observation_space("bob").contains(world.observe("bob"))


def test_fallback_actions_are_legal_and_seeded():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    world.step(prop(1, 0, 0))
    draws = [world.fallback_action("bob", np.random.default_rng(s)) for s in range(50)]
    assert {d["type"] for d in draws} == {PROPOSE, ACCEPT}
    assert all(d["type"] != PROPOSE or all(0 <= t <= c for t, c in zip(d["take"], world.counts)) for d in draws)
    assert world.fallback_action("bob", np.random.default_rng(3)) == world.fallback_action("bob", np.random.default_rng(3))


def test_config_rejects_impossible_pools():
    with pytest.raises(ValidationError, match="no pool of 3 item types"):
        raw_env(min_count=3, max_total_items=7)
    with pytest.raises(ValidationError, match="unique lowercase words"):
        raw_env(items=["book", "Book"])


def play(world, policies, seed):
    world.reset(seed=seed)
    for agent in world.agent_iter():
        obs, _, term, trunc, _ = world.last()
        if term or trunc:
            world.step(None)
            continue
        world.step(policies[agent].act([ActRequest(0, agent, obs, [], world.action_space(agent))])[0].action)
    return world.episode_metrics()


def test_fair_negotiators_usually_agree():
    fair = FairNegotiator(FairNegotiator.Params(), seed=0)
    results = [play(raw_env(), {"alice": fair, "bob": fair}, s) for s in range(50)]
    assert np.mean([r["agreement"] for r in results]) > 0.8
    assert all(r["illegal"] == 0 for r in results)


def test_greedy_accepts_only_above_its_threshold():
    greedy = GreedyNegotiator(GreedyNegotiator.Params(accept_ratio=0.8), seed=0)
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2], first="bob")
    world.step(prop(0, 2, 1))  # bob keeps hats + 1 ball: alice would get book + 2 balls = 8 of 10
    obs = world.observe("alice")
    assert greedy.act([ActRequest(0, "alice", obs, [])])[0].action["type"] == ACCEPT
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2], first="bob")
    world.step(prop(0, 2, 2))  # alice would get 6 of 10 < 8
    action = greedy.act([ActRequest(0, "alice", world.observe("alice"), [])])[0].action
    assert action["type"] == PROPOSE and action["take"] == [1, 0, 3]  # every item it values


def test_random_negotiator_is_seeded():
    def actions(seed):
        policy = RandomNegotiator(RandomNegotiator.Params(walk_prob=0.1), seed=seed)
        return [play(raw_env(), {"alice": policy, "bob": policy}, s)["turns"] for s in range(20)]

    assert actions(1) == actions(1) and actions(1) != actions(2)


def test_trailing_comment_after_the_action_is_tolerated():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    assert world.parse("alice", "ACTION: WALK AWAY   (end with no deal)")["type"] == WALK_AWAY


def test_demonstration_is_a_worked_example_on_another_pool():
    world = set_state(raw_env(), [1, 2, 3], [4, 0, 2], [0, 2, 2])
    user, reply = world.demonstration("alice")
    assert user["role"] == "user" and reply["role"] == "assistant"
    assert "You are alice, negotiating with bob" in user["content"] and "Pool: 1 book, 2 hat, 3 ball" not in user["content"]
    assert reply["content"].startswith("MESSAGE: ") and "\nACTION: PROPOSE book=" in reply["content"]
