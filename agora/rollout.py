"""The batched rollout engine: many episodes stepped together, one model call per policy per tick.

A tick first settles every turn that belongs to a cheap (scripted) policy, stepping those worlds
on, until each active episode waits on an expensive (model-backed) policy; then each expensive
policy gets one `act` call holding every pending turn across all episodes. Unparseable replies
are re-prompted with the parser's message in the next tick's call, together with the other
episodes' fresh turns (no small extra call for the retries), then replaced by the world's seeded
fallback action. Works for PettingZoo AEC worlds (one agent moves) and Parallel worlds (all
live agents move, the step happens when every one has chosen).

Every request carries its own seed (`decision_seed`: run seed, episode, policy seed, seat, the
seat's decision number, attempt), so what a policy draws never depends on how episodes were
batched: the transcripts are the same at any `concurrency`.
"""

from __future__ import annotations

import contextlib
import gc
import time
import zlib
from collections import defaultdict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from pettingzoo import ParallelEnv

from agora.policy import ActRequest, ActResponse, Policy
from agora.trajectory import Episode, Step, jsonable
from agora.world import ParseError, demonstration, episode_info, passive_action, reply_grammar

RETRY_MESSAGE = "Your reply could not be used: {error}\nReply again, exactly in the format asked for."


def episode_seed(root: int, index: int) -> int:
    """Seed of episode `index` in a run seeded `root` (independent streams, reproducible one by one)."""
    return int(np.random.SeedSequence([root, index]).generate_state(1)[0])


def policy_seed(root: int, key: str) -> int:
    return int(np.random.SeedSequence([root, zlib.crc32(key.encode())]).generate_state(1)[0])


MASK64 = 2**64 - 1


def splitmix64(x: int) -> int:
    """SplitMix64's step (Steele, Lea & Flood, "Fast splittable pseudorandom number generators"): a
    bijective 64-bit mix whose outputs for consecutive inputs are statistically independent."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def episode_root(run_seed: int, world_seed: int, index: int) -> int:
    """A 64-bit key of episode `index` (reset with `world_seed`) in a run seeded `run_seed`: the
    start of every decision seed in it. The world seed is part of it so that campaigns replaying
    indices 0... each iteration on new initial states also sample afresh."""
    words = np.random.SeedSequence([run_seed & MASK64, world_seed & MASK64, index]).generate_state(2)
    return int(words[0]) << 32 | int(words[1])


def seat_key(root: int, policy: int, agent: str) -> int:
    """A 64-bit key of seat `agent`, played by a policy seeded `policy`, in the episode keyed `root`."""
    return splitmix64(splitmix64(root ^ (policy & MASK64)) ^ zlib.crc32(agent.encode()))


def decision_seed(key: int, decision: int, attempt: int) -> int:
    """The seed of one request: the `decision`-th decision (from 0) of the seat keyed `key`
    (`seat_key`), its `attempt`-th reply (0, then retries). One integer mix (~1 us, no generator):
    the economy asks it for thousands of seats per step, at ~35 us per worker-step in all."""
    return splitmix64((key + (decision << 32) + attempt) & MASK64)


# Where rollouts started without their own `on_tick` report their ticks (`ticks_to`).
TICK_LISTENER: ContextVar[Callable[[int, int], None] | None] = ContextVar("tick_listener", default=None)


@contextlib.contextmanager
def ticks_to(on_tick: Callable[[int, int], None]):
    """Every `Rollout.run` inside (in this thread) reports its ticks to `on_tick(turns, tokens)`: the live display
    of `agora train`, whose rollouts are started deep inside each campaign kind."""
    token = TICK_LISTENER.set(on_tick)
    try:
        yield
    finally:
        TICK_LISTENER.reset(token)


@dataclass
class SeatCounters:
    decisions: int = 0  # turns taken
    text_attempts: int = 0  # replies that had to be parsed (retries included)
    parse_failures: int = 0  # replies the world could not parse
    retries: int = 0  # re-prompts after a parse failure
    fallbacks: int = 0  # turns where the fallback action was taken
    unanswered: int = 0  # requests the policy could not answer at all (`ActResponse.error`): fallback at once

    @property
    def parse_failure_rate(self) -> float:
        return self.parse_failures / self.text_attempts if self.text_attempts else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.decisions if self.decisions else 0.0

    @classmethod
    def total(cls, counters: Iterable[SeatCounters]) -> SeatCounters:
        """Several seats' counts added up: their rates are the pooled rates."""
        out = cls()
        for c in counters:
            for name in vars(out):
                setattr(out, name, getattr(out, name) + getattr(c, name))
        return out


@dataclass
class _Turn:
    slot: _Slot
    agent: str
    observation: Any
    messages: list[dict[str, str]]
    decision: int  # how many decisions this seat took before this one in the episode
    failed: list[dict[str, str]] = field(default_factory=list)
    grammar: Any = None  # the world's `reply_grammar` for this turn (text seats)
    asked: float | None = None  # when the policy was first asked for this decision (epoch seconds)


class _Slot:
    """One episode in flight."""

    def __init__(self, world, index: int, seed: int, policy_ids: dict[str, str], text_seats: set[str], root: int = 0):
        self.world, self.text_seats = world, text_seats
        self.parallel = isinstance(world, ParallelEnv)
        self.episode = Episode(index=index, seed=seed, policies=dict(policy_ids))
        self.rng = np.random.default_rng(seed)  # fallback actions
        self.root = root  # `episode_root`: the requests' seeds derive from it
        self.decisions: dict[str, int] = defaultdict(int)  # decisions taken so far, per seat
        self.seat_keys: dict[str, int] = {}  # `seat_key` per seat, computed once
        self.last_step: dict[str, Step] = {}
        self.shared: dict = {}  # the episode's observation arrays, each recorded once (`jsonable`)
        self.waiting: list[_Turn] = []
        self.chosen: dict[str, Any] = {}
        if self.parallel:
            self.observations, _ = world.reset(seed=seed)
        else:
            world.reset(seed=seed)
        self.episode.returns = {agent: 0.0 for agent in world.possible_agents}

    def request_seed(self, turn: _Turn, policy_seed: int) -> int:
        """The seed of `turn`'s current attempt (`decision_seed`)."""
        key = self.seat_keys.get(turn.agent)
        if key is None:
            key = self.seat_keys[turn.agent] = seat_key(self.root, policy_seed, turn.agent)
        return decision_seed(key, turn.decision, len(turn.failed))

    @property
    def done(self) -> bool:
        return not self.world.agents

    def pending(self) -> list[_Turn]:
        """The turns this episode waits on (computed once per decision point)."""
        if self.waiting or self.done:
            return self.waiting
        world = self.world
        if self.parallel:
            agents: list[str] = []
            while world.agents and not agents:
                for agent in world.agents:
                    if agent not in self.chosen and (idle := passive_action(world, agent)) is not None:
                        self.chosen[agent] = idle  # acts on its own timescale: no decision this step
                agents = [a for a in world.agents if a not in self.chosen]
                if not agents:  # everyone is passive this step: the world steps on by itself
                    self._step_parallel()
            observations = {a: self.observations[a] for a in agents}
        else:
            while world.agents and (
                world.terminations[world.agent_selection] or world.truncations[world.agent_selection]
            ):
                world.step(None)  # PettingZoo: finished agents are stepped out with None
            if self.done:
                return []
            agents = [world.agent_selection]
            observations = {agents[0]: world.observe(agents[0])}
        for agent in agents:
            obs = observations[agent]
            text = agent in self.text_seats
            messages = [{"role": "user", "content": world.prompt(agent, obs)}] if text else []
            grammar = reply_grammar(world, agent, obs) if text else None
            self.waiting.append(_Turn(self, agent, obs, messages, self.decisions[agent], grammar=grammar))
        return self.waiting

    def apply(self, turn: _Turn, step: Step, action: Any) -> None:
        self.waiting.remove(turn)
        self.decisions[turn.agent] += 1
        step.turn = len(self.episode.steps)
        self.episode.steps.append(step)
        self.last_step[turn.agent] = step
        if not self.parallel:
            self.world.step(action)
            self._reward(self.world.rewards)
            return
        self.chosen[turn.agent] = action
        if len(self.chosen) == len(self.world.agents):  # chosen ⊆ live agents: O(1), not O(N) per turn (O(N²) per step)
            self._step_parallel()

    def _step_parallel(self) -> None:
        self.observations, rewards, _, _, _ = self.world.step(self.chosen)
        self.chosen = {}
        self._reward(rewards)

    def _reward(self, rewards: dict[str, float]) -> None:
        for agent, reward in rewards.items():
            if reward:
                self.episode.returns[agent] += float(reward)
                if agent in self.last_step:
                    self.last_step[agent].reward += float(reward)

    def finish(self) -> Episode:
        self.episode.metrics = {k: float(v) for k, v in self.world.episode_metrics().items()}
        self.episode.info = jsonable(episode_info(self.world))
        return self.episode


class Rollout:
    """Plays episodes of one world with one policy per seat (policies may be shared between seats)."""

    def __init__(
        self,
        make_world: Callable[[], Any],
        seats: dict[str, Policy],
        policy_ids: dict[str, str],
        *,
        seed: int = 0,
        concurrency: int = 8,
        max_retries: int = 1,
        record_observations: bool = True,
    ):
        self.make_world, self.seats, self.policy_ids = make_world, seats, policy_ids
        self.seed, self.concurrency, self.max_retries = seed, concurrency, max_retries
        self.record_observations = record_observations
        self.text_seats = {agent for agent, policy in seats.items() if policy.uses_text}
        self.counters: dict[str, SeatCounters] = defaultdict(SeatCounters)
        self.episodes: list[Episode] = []  # finished episodes, in the order they finished
        self.seconds = 0.0
        self.version: int | None = None  # a learner's weight version, recorded on every episode (`Episode.version`)

    def run(
        self,
        episodes: int,
        *,
        first_index: int = 0,
        on_episode: Callable[[Episode], None] | None = None,
        on_tick: Callable[[int, int], None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> list[Episode]:
        """Play `episodes` episodes (indices first_index...; or exactly `indices`, in that order, which the
        workers of `agora.execution` play as their shards), return them sorted by index. After every tick,
        `on_tick(turns, tokens)` (default: the `ticks_to` listener) gets the turns taken and the tokens the
        policies generated so far in this call (a live progress display)."""
        start, done = time.perf_counter(), len(self.episodes)
        on_tick = on_tick or TICK_LISTENER.get()
        if on_tick:
            policies = list({id(p): p for p in self.seats.values()}.values())
            turns0 = sum(c.decisions for c in self.counters.values())
            tokens0 = sum(p.stats.generated_tokens for p in policies)
        todo = iter(range(first_index, first_index + episodes) if indices is None else indices)
        active: list[_Slot] = []
        # The cyclic GC runs between ticks on young objects only. Left automatic, its full collections
        # re-scan the records piling up in memory, several times within one tick of a 10,000-agent
        # Parallel world: the cost per agent-step grew x1.6 from 100 to 10,000 agents (x0.8-1.0 with
        # it off; bench/economy.py). Cyclic garbage that outlives a tick is collected after the run.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while True:
                while len(active) < self.concurrency and (index := next(todo, None)) is not None:
                    seed = self.episode_seed(index)
                    root = episode_root(self.seed, seed, index)
                    active.append(_Slot(self.make_world(), index, seed, self.policy_ids, self.text_seats, root))
                    active[-1].episode.version = self.version
                if not active:
                    break
                self._tick(active)
                gc.collect(1)  # the tick's young objects, once (see above)
                if on_tick:
                    turns = sum(c.decisions for c in self.counters.values()) - turns0
                    on_tick(turns, sum(p.stats.generated_tokens for p in policies) - tokens0)
                for slot in [s for s in active if s.done]:
                    active.remove(slot)
                    episode = slot.finish()
                    self.episodes.append(episode)
                    if on_episode:
                        on_episode(episode)
        finally:
            if collecting:
                gc.enable()
            self.seconds += time.perf_counter() - start
        return sorted(self.episodes[done:], key=lambda e: e.index)

    def episode_seed(self, index: int) -> int:
        """The seed episode `index` is reset with."""
        return episode_seed(self.seed, index)

    def greedy(self, index: int, agent: str) -> bool:
        """Whether `agent`'s turns in episode `index` are decoded greedily (none by default)."""
        return False

    def _tick(self, active: list[_Slot]) -> None:
        while True:  # settle cheap turns first so that expensive calls see every episode waiting
            cheap = [t for s in active for t in s.pending() if not self.seats[t.agent].expensive]
            if not cheap:
                break
            self._resolve(cheap)
        self._resolve([t for s in active for t in s.pending()])

    def _resolve(self, turns: list[_Turn]) -> None:
        by_policy: dict[int, list[_Turn]] = defaultdict(list)
        for turn in turns:
            by_policy[id(self.seats[turn.agent])].append(turn)
        for group in by_policy.values():
            policy = self.seats[group[0].agent]
            requests = [
                ActRequest(
                    t.slot.episode.index,
                    t.agent,
                    t.observation,
                    t.messages,
                    t.slot.world.action_space(t.agent),
                    demonstration(t.slot.world, t.agent) if t.messages else [],
                    greedy=self.greedy(t.slot.episode.index, t.agent),
                    seed=t.slot.request_seed(t, getattr(policy, "seed", 0)),
                    grammar=t.grammar,
                    decision=t.decision,
                )
                for t in group
            ]
            asked = time.time()
            for turn in group:
                turn.asked = turn.asked or asked  # a re-asked turn keeps its first call's start
            responses = policy.act(requests)
            answered = time.time()
            for turn, response in zip(group, responses):
                self._settle(turn, response, answered)  # a turn to re-ask stays pending: it joins the next call

    def _settle(self, turn: _Turn, response: ActResponse, answered: float) -> bool:
        """Apply the response's action to the world (answered at `answered`, epoch seconds); False when
        the turn must be asked again."""
        world, counters = turn.slot.world, self.counters[turn.agent]
        fallback = False
        if response.error is not None:  # no reply at all (e.g. a server down after its retries)
            counters.unanswered += 1
            counters.fallbacks += 1
            turn.failed.append({"text": "", "error": response.error})
            action, fallback, text = world.fallback_action(turn.agent, turn.slot.rng), True, ""
        elif response.action is not None:
            action, text = response.action, response.text or world.render_action(turn.agent, response.action)
        else:
            text = response.text
            counters.text_attempts += 1
            try:
                action = world.parse(turn.agent, text)
            except ParseError as error:
                counters.parse_failures += 1
                said = (response.info or {}).get("reply", text)  # all the policy wrote (a plan-execute agent's plan)
                turn.failed.append({"text": said, "error": str(error)})
                if len(turn.failed) <= self.max_retries:
                    counters.retries += 1
                    turn.messages = [
                        *turn.messages,
                        {"role": "assistant", "content": said},
                        {"role": "user", "content": RETRY_MESSAGE.format(error=error)},
                    ]
                    return False
                action, fallback = world.fallback_action(turn.agent, turn.slot.rng), True
                counters.fallbacks += 1
        counters.decisions += 1
        step = Step(
            agent=turn.agent,
            turn=0,
            prompt=response.prompt_text or (turn.messages[0]["content"] if turn.messages else ""),
            text=text,
            action=jsonable(action),
            prompt_ids=response.prompt_ids,
            completion_ids=response.completion_ids,
            logprobs=response.logprobs,
            temperature=response.temperature,
            grammar=response.grammar,
            failed_attempts=turn.failed,
            messages=turn.messages or None,
            preamble=response.preamble,
            info=response.info,
            fallback=fallback,
            observation=jsonable(turn.observation, turn.slot.shared) if self.record_observations else None,
            started=turn.asked,
            seconds=answered - turn.asked,
        )
        turn.slot.apply(turn, step, action)
        return True


class GroupRollout(Rollout):
    """A Rollout whose episode `index` is played from initial state `seeds[index // group_size]`:
    `group_size` consecutive episodes share a seed (a GRPO group), and differ by sampling (their
    requests' seeds differ by episode index). The
    turns of `anchor_seats` in each group's first episode are decoded greedily (ArenaRL's anchor)."""

    def __init__(self, *args, seeds: list[int], group_size: int, anchor_seats=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.seeds, self.group_size, self.anchor_seats = seeds, group_size, frozenset(anchor_seats)

    def episode_seed(self, index: int) -> int:
        return self.seeds[index // self.group_size]

    def greedy(self, index: int, agent: str) -> bool:
        return index % self.group_size == 0 and agent in self.anchor_seats
