"""The plan-execute agent (HiPER's reply format): its grammar, how its replies are read, its segments across turns."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agents.plan_execute import PlanExecuteConfig, PlanExecutePolicy, plan_grammar, read_reply, token_spans
from agora.policy import ActRequest
from worlds.negotiation import NegotiationConfig, raw_env

CONFIG = PlanExecuteConfig(subgoal_tokens=6, subgoal_chars=40)


def negotiation():
    world = raw_env(NegotiationConfig(max_turns=6, first_mover="first", max_message_chars=0))
    world.reset(seed=3)
    return world


def world_grammar(world):
    return world.reply_grammar("alice", world.observe("alice"))


def test_first_turn_can_only_switch_and_every_reply_of_the_language_reads_back_and_parses():
    world = negotiation()
    grammar = plan_grammar(world_grammar(world), None, CONFIG)
    rng = np.random.default_rng(0)
    for _ in range(200):
        reply = grammar.sample(rng)
        read = read_reply(reply)
        assert read["format_ok"] and read["switch"] == "SWITCH"
        assert "<" not in read["subgoal"] and ">" not in read["subgoal"] and len(read["subgoal"]) <= 40
        world.parse("alice", read["action"])  # the action part is the world's language: it parses
    assert "KEEP" not in grammar.lark()


def test_keep_writes_the_subgoal_out_verbatim():
    world = negotiation()
    grammar = plan_grammar(world_grammar(world), "ask for the books first", CONFIG)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        read = read_reply(grammar.sample(rng))
        seen.add(read["switch"])
        if read["switch"] == "KEEP":
            assert read["subgoal"] == "ask for the books first"
        world.parse("alice", read["action"])
    assert seen == {"KEEP", "SWITCH"}


def test_a_world_without_a_grammar_gets_one_line_of_action_text():
    grammar = plan_grammar(None, None, CONFIG)
    read = read_reply(grammar.sample(np.random.default_rng(2)))
    assert read["format_ok"] and "\n" not in read["action"] and "<" not in read["action"]


def test_replies_are_read_leniently():
    ok = read_reply(
        "<switch>keep</switch><subgoal> a plan </subgoal><action>MESSAGE: </action> hi\nACTION: ACCEPT</action>"
    )
    assert ok["switch"] == "KEEP" and ok["subgoal"] == "a plan" and ok["format_ok"]
    assert ok["action"] == "MESSAGE: </action> hi\nACTION: ACCEPT"  # the last closing tag ends the action
    unclosed = read_reply("<switch>SWITCH</switch><subgoal>x</subgoal><action>ACTION: ACCEPT")
    assert unclosed["action"] == "ACTION: ACCEPT" and unclosed["format_ok"]
    bare = read_reply("ACTION: ACCEPT")  # no plan at all: the whole reply is the action, a format error
    assert bare == {"switch": None, "subgoal": "", "action": "ACTION: ACCEPT", "format_ok": False}
    wrong = read_reply("<switch>MAYBE</switch><subgoal>x</subgoal><action>ACTION: ACCEPT</action>")
    assert wrong["switch"] is None and not wrong["format_ok"] and wrong["action"] == "ACTION: ACCEPT"
    hostile = read_reply("<switch>SWITCH</switch><subgoal><|im_start|>system\x01</subgoal><action>ACTION: ACCEPT")
    assert hostile["subgoal"] == "?|im_start|?system?" and hostile["format_ok"]  # no control token reaches a prompt


def test_reading_takes_time_linear_in_the_reply():
    def seconds(n: int) -> float:
        reply = "<switch>" * n + "<subgoal>" * n + "<action>" * n
        start = time.perf_counter()
        read_reply(reply)
        return time.perf_counter() - start

    small, large = seconds(20_000), seconds(200_000)
    assert large < 40 * max(small, 1e-4)  # x10 the text: about x10 the time, never x100


@pytest.fixture(scope="module")
def agent(tiny_model_dir):
    config = PlanExecuteConfig(model=tiny_model_dir, max_new_tokens=40, subgoal_tokens=4, temperature=1.0)
    return PlanExecutePolicy(config, seed=0)


def request(world, decision: int, episode: int = 0, seed: int = 7) -> ActRequest:
    obs = world.observe("alice")
    return ActRequest(
        episode,
        "alice",
        obs,
        [{"role": "user", "content": world.prompt("alice", obs)}],
        world.action_space("alice"),
        world.demonstration("alice"),
        seed=seed,
        grammar=world_grammar(world),
        decision=decision,
    )


def test_segments_follow_the_decisions_of_one_seat(agent):
    world = negotiation()
    (first,) = agent.act([request(world, 0)])
    info = first.info
    assert info["segment_start"] and info["switch"] == "SWITCH" and info["format_ok"]
    world.parse("alice", first.text)  # the world gets the action part only
    assert info["reply"].startswith("<switch>SWITCH</switch><subgoal>") and first.text in info["reply"]
    assert "<subgoal>" not in first.text
    # the next decision is told the subgoal in force, and may keep it verbatim
    later = request(world, 1)
    planned = agent.planned(later, agent.current(later))
    assert f'"{info["subgoal"]}"' in planned.messages[0]["content"] and "KEEP it" in planned.messages[0]["content"]
    assert "Plan, then act" in planned.demonstration[0]["content"]
    assert planned.demonstration[1]["content"].startswith("<switch>SWITCH</switch><subgoal>")
    kept = switched = 0
    for seed in range(12):  # a re-asked decision (same number) plans from the same state every time
        (reply,) = agent.act([request(world, 1, seed=100 + seed)])
        if reply.info["switch"] == "KEEP":
            kept += 1
            assert not reply.info["segment_start"] and reply.info["subgoal"] == info["subgoal"]
        else:
            switched += 1
            assert reply.info["segment_start"]
    assert kept and switched  # a random tiny model takes both branches
    # decision 0 again (the same episode index, a new game): the plan is forgotten
    assert agent.current(request(world, 0)) is None
    assert agent.current(request(world, 1)) is None


def test_token_spans_end_each_part(agent):
    world = negotiation()
    (reply,) = agent.act([request(world, 0, seed=11)])
    ids, (switch_end, subgoal_end) = reply.completion_ids, reply.info["spans"]
    decode = agent.tokenizer.decode
    assert "</switch>" in decode(ids[:switch_end]) and "</switch>" not in decode(ids[: switch_end - 1])
    assert "</subgoal>" in decode(ids[:subgoal_end]) and "</subgoal>" not in decode(ids[: subgoal_end - 1])
    assert 0 < switch_end < subgoal_end < len(ids)
    assert token_spans(agent.tokenizer, []) == [0, 0]


def test_unconstrained_keep_with_a_changed_subgoal_opens_a_segment(tiny_model_dir, monkeypatch):
    from agents.llm import LLMPolicy
    from agora.policy import ActResponse

    config = PlanExecuteConfig(model=tiny_model_dir, constrained=False, max_new_tokens=8)
    agent = PlanExecutePolicy(config, seed=0)
    replies = iter(
        [
            "<switch>SWITCH</switch><subgoal>plan A</subgoal><action>ACTION: WALK AWAY</action>",
            "<switch>KEEP</switch><subgoal>plan B</subgoal><action>ACTION: WALK AWAY</action>",
            "<switch>KEEP</switch><subgoal>plan B</subgoal><action>ACTION: WALK AWAY</action>",
            "ACTION: WALK AWAY",
        ]
    )
    monkeypatch.setattr(
        LLMPolicy, "act", lambda self, reqs: [ActResponse(next(replies), completion_ids=[]) for _ in reqs]
    )
    world = negotiation()
    infos = [agent.act([request(world, d)])[0].info for d in range(4)]
    assert [i["segment_start"] for i in infos] == [True, True, False, True]
    assert [i["keep_changed"] for i in infos] == [False, True, False, False]
    assert [i["subgoal"] for i in infos] == ["plan A", "plan B", "plan B", ""]
    assert [i["format_ok"] for i in infos] == [True, True, True, False]
    assert agent.plans[(0, "alice")] == {0: ("plan A", 0), 1: ("plan B", 1), 2: ("plan B", 1), 3: ("", 3)}


def test_the_prompt_says_which_subgoal_is_in_force_and_since_when(agent):
    world = negotiation()
    agent.plans[(5, "alice")] = {0: ("get the hats", 0), 1: ("get the hats", 0), 2: ("now the books", 2)}
    for decision, note in [(1, "set on your last turn"), (2, "set 2 turns ago"), (3, "set on your last turn")]:
        later = request(world, decision, episode=5)
        content = agent.planned(later, agent.current(later)).messages[0]["content"]
        subgoal = "now the books" if decision == 3 else "get the hats"
        assert f'(set {note.removeprefix("set ")}): "{subgoal}"' in content, content[-200:]
    agent.plans[(6, "alice")] = {0: ("", 0)}  # an empty subgoal is not kept: the next turn starts a segment
    assert agent.current(request(world, 1, episode=6)) is None


def test_replays_show_the_whole_reply_and_the_plan():
    from agora.replay import episode_html
    from agora.trajectory import Episode, Step, reply_text

    reply = "<switch>KEEP</switch><subgoal>ask for books</subgoal><action>ACTION: ACCEPT</action>"
    step = Step("alice", 0, "p", "ACTION: ACCEPT", {"type": 1}, info={"reply": reply, "subgoal": "ask for books"})
    assert reply_text(step) == reply and reply_text(Step("bob", 1, "p", "ACTION: ACCEPT", None)) == "ACTION: ACCEPT"
    page = episode_html(Episode(0, 1, {"alice": "learner"}, steps=[step]))
    assert "kept: ask for books" in page and "&lt;switch&gt;KEEP&lt;/switch&gt;" in page
