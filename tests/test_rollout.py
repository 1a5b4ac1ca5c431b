"""The batched rollout engine: batching, parse failures, retries, fallbacks, rewards, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from agents.scripted.matrix import MixedStrategy, TitForTat
from agora.policy import ActRequest, ActResponse, Policy
from agora.rollout import Rollout, episode_seed
from worlds.matrix import parallel_env


class Scripted(Policy):
    """An expensive text policy with canned replies; records the size of every call."""

    expensive = True
    uses_text = True

    def __init__(self, reply, seed: int = 0):
        super().__init__(Policy.Config(), seed=seed)
        self.reply = reply
        self.batches: list[int] = []
        self.seen: list[ActRequest] = []

    def act(self, requests):
        self.batches.append(len(requests))
        self.seen.extend(requests)
        return [ActResponse(self.reply(r)) for r in requests]


def make_rollout(seats, rounds=3, **kwargs):
    ids = {agent: type(policy).__name__ for agent, policy in seats.items()}
    return Rollout(lambda: parallel_env(rounds=rounds), seats, ids, **kwargs)


def test_one_batched_call_per_tick_across_episodes_and_seats():
    llm = Scripted(lambda r: "ACTION: rock")
    rollout = make_rollout({"player_0": llm, "player_1": llm}, rounds=3, concurrency=8)
    episodes = rollout.run(8)
    assert len(episodes) == 8
    assert llm.batches == [16, 16, 16]  # 8 episodes x 2 seats, once per round


def test_cheap_turns_are_settled_before_the_batched_call():
    llm = Scripted(lambda r: "ACTION: paper")
    rollout = make_rollout(
        {"player_0": llm, "player_1": MixedStrategy(MixedStrategy.Config(), seed=1)}, rounds=4, concurrency=5
    )
    rollout.run(10)
    assert llm.batches == [5] * 8  # two waves of 5 episodes x 4 rounds, never a partial batch


def test_garbage_text_ends_in_counted_fallbacks_never_an_exception():
    rng = np.random.default_rng(0)

    def garbage(r):
        return "".join(map(chr, rng.integers(0, 0x2FFF, size=int(rng.integers(0, 200)))))

    llm = Scripted(garbage)
    rollout = make_rollout(
        {"player_0": llm, "player_1": TitForTat(TitForTat.Config(), seed=0)}, rounds=5, max_retries=2
    )
    episodes = rollout.run(4)
    counters = rollout.counters["player_0"]
    assert counters.decisions == 20 and counters.fallbacks == 20
    assert counters.text_attempts == 60 and counters.parse_failures == 60 and counters.retries == 40
    assert counters.parse_failure_rate == 1.0 and counters.fallback_rate == 1.0
    steps = [s for e in episodes for s in e.steps if s.agent == "player_0"]
    assert all(s.fallback and len(s.failed_attempts) == 3 for s in steps)
    assert rollout.counters["player_1"].text_attempts == 0  # scripted seats are never parsed


def test_retry_shows_the_parser_error_and_can_succeed():
    def reply(request):
        return "ACTION: scissors" if len(request.messages) > 1 else "I pick rock!"

    llm = Scripted(reply)
    rollout = make_rollout({"player_0": llm, "player_1": llm}, rounds=2, concurrency=2)
    episodes = rollout.run(2)
    retry = next(r for r in llm.seen if len(r.messages) > 1)
    assert retry.messages[1] == {"role": "assistant", "content": "I pick rock!"}
    assert "no 'ACTION: <action>' line" in retry.messages[2]["content"]
    counters = rollout.counters["player_0"]
    assert counters.retries == 4 and counters.fallbacks == 0 and counters.parse_failure_rate == 0.5
    assert all(s.action == 2 and not s.fallback for e in episodes for s in e.steps)
    assert llm.batches == [4, 4, 4, 4]  # first tries batched, then the retries batched


def test_each_step_is_timed_from_its_first_call_to_its_reply_re_asks_included():
    import time

    def slow(request):
        time.sleep(0.03)  # per request: a call of 2 requests takes ~0.06 s
        return "ACTION: paper" if len(request.messages) > 1 else "no action here"

    llm = Scripted(slow)
    before = time.time()
    episodes = make_rollout({"player_0": llm, "player_1": llm}, rounds=2, concurrency=1).run(1)
    steps = episodes[0].steps
    assert len(steps) == 4 and all(s.failed_attempts for s in steps)  # every turn asked twice
    for step in steps:
        # two batched calls of 2 requests (the first try, the re-ask): about 0.12 s from the first call
        assert 0.11 <= step.seconds < 1.0 and before <= step.started
    rounds = [sorted(steps, key=lambda s: s.turn)[i : i + 2] for i in (0, 2)]
    assert rounds[0][0].started == rounds[0][1].started  # one batched call: one start
    assert rounds[1][0].started >= rounds[0][0].started + rounds[0][0].seconds
    assert steps[0] == type(steps[0])(**{**vars(steps[0]), "started": 0.0, "seconds": 0.0})  # wall clock: not compared


def test_rewards_and_returns_follow_the_payoff_table():
    llm_rock, llm_paper = Scripted(lambda r: "ACTION: rock"), Scripted(lambda r: "ACTION: paper")
    rollout = make_rollout({"player_0": llm_rock, "player_1": llm_paper}, rounds=3)
    (episode,) = rollout.run(1)
    assert episode.returns == {"player_0": -3.0, "player_1": 3.0}
    assert episode.metrics["score/player_1"] == 3.0 and episode.metrics["freq/rock"] == 0.5
    assert [s.reward for s in episode.steps if s.agent == "player_1"] == [1.0, 1.0, 1.0]
    assert [s.turn for s in episode.steps] == list(range(6))


def test_same_seed_same_episodes_and_seeds_are_independent_of_concurrency():
    def play(seed, concurrency):
        seats = {
            "player_0": MixedStrategy(MixedStrategy.Config(), seed=seed),
            "player_1": MixedStrategy(MixedStrategy.Config(), seed=seed + 1),
        }
        episodes = make_rollout(seats, rounds=6, seed=seed, concurrency=concurrency).run(5)
        return [(e.seed, [s.action for s in e.steps]) for e in episodes]

    assert play(3, 1) == play(3, 2) == play(3, 5)  # each request draws from its own seed, not in call order
    assert play(3, 2) != play(4, 2)
    assert [seed for seed, _ in play(3, 1)] == [episode_seed(3, i) for i in range(5)]


@pytest.mark.parametrize("text,expected", [("ACTION: paper", 1), ("**Action:** Scissors", 2), ("action:rock\n", 0)])
def test_matrix_parser_accepts_the_format(text, expected):
    assert parallel_env().parse("player_0", text) == expected


def test_text_policies_receive_the_worlds_demonstration():
    from worlds.negotiation import raw_env

    llm = Scripted(lambda r: "ACTION: WALK AWAY")
    seats = {"alice": llm, "bob": llm}
    Rollout(lambda: raw_env(), seats, {"alice": "x", "bob": "x"}, concurrency=2).run(2)
    first = llm.seen[0]
    assert first.demonstration == raw_env().demonstration(first.agent)
    assert first.messages[0]["role"] == "user" and "ACTION: WALK AWAY" in first.messages[0]["content"]


def test_group_rollouts_decode_each_groups_first_episode_greedily_for_anchor_seats():
    """ArenaRL's anchor: in episode 0 of every GRPO group the anchor seats' turns are flagged greedy,
    all other turns (other episodes, other seats) are sampled as usual; seeds follow the groups."""
    from agora.rollout import GroupRollout

    llm = Scripted(lambda r: "ACTION: rock")
    seats = {"player_0": llm, "player_1": llm}
    ids = {agent: "Scripted" for agent in seats}
    rollout = GroupRollout(
        lambda: parallel_env(rounds=2),
        seats,
        ids,
        concurrency=4,
        seeds=[11, 22, 33],
        group_size=3,
        anchor_seats=["player_0"],
    )
    episodes = rollout.run(9)
    assert [e.seed for e in episodes] == [11] * 3 + [22] * 3 + [33] * 3
    flagged = {(r.episode, r.agent) for r in llm.seen if r.greedy}
    assert flagged == {(0, "player_0"), (3, "player_0"), (6, "player_0")}
    assert len(llm.seen) == 9 * 2 * 2 and not Rollout(lambda: parallel_env(rounds=2), seats, ids).greedy(0, "player_0")


def test_seat_counters_pool_into_rates():
    from agora.rollout import SeatCounters

    a = SeatCounters(decisions=4, text_attempts=6, parse_failures=3, retries=2, fallbacks=1)
    b = SeatCounters(decisions=6, text_attempts=4, parse_failures=1, retries=1, fallbacks=0)
    pooled = SeatCounters.total([a, b])
    assert pooled == SeatCounters(decisions=10, text_attempts=10, parse_failures=4, retries=3, fallbacks=1)
    assert pooled.parse_failure_rate == 0.4 and pooled.fallback_rate == 0.1
    assert SeatCounters.total([]).parse_failure_rate == 0.0 and SeatCounters.total([]).fallback_rate == 0.0
