"""Multi-issue bargaining in the Deal-or-No-Deal style (Lewis et al., 2017), as a PettingZoo AECEnv.

Two agents split a pool of items (e.g. 2 books, 1 hat, 3 balls). Each has private integer values
per item type, with the whole pool worth `total_value` to each of them. They alternate turns;
a turn is a free-text message plus an action:

- PROPOSE take: the mover would keep `take`, the other would get `counts - take`;
- ACCEPT: accept the other agent's standing offer: the deal is made and the episode ends;
- WALK AWAY: the episode ends with no deal.

Without an accepted offer within `max_turns` turns, there is no deal. With a deal each agent scores
the value of its share, Σ_i values_i · share_i; without one, both get `disagreement_value`.
An illegal action (ACCEPT with no offer standing, a take out of range) also ends the episode with
no deal, flagged `info["illegal_action"]` (the PettingZoo classic convention); the text interface
never produces one.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.world import ParseError

PROPOSE, ACCEPT, WALK_AWAY = 0, 1, 2
PRINTABLE = "".join(chr(c) for c in range(32, 127))  # the message charset: printable ASCII


class NegotiationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(["book", "hat", "ball"], min_length=1, max_length=6, description="item types in the pool (lowercase words)")
    min_count: int = Field(1, ge=0, le=10, description="fewest items of one type")
    max_count: int = Field(4, ge=1, le=10, description="most items of one type")
    min_total_items: int = Field(5, ge=1, le=60, description="fewest items in the pool")
    max_total_items: int = Field(7, ge=1, le=60, description="most items in the pool")
    total_value: int = Field(10, ge=1, le=1000, description="what the whole pool is worth to each agent")
    max_turns: int = Field(10, ge=1, le=100, description="turns of both agents together; no accept by then = no deal")
    disagreement_value: float = Field(0.0, description="each agent's score without a deal")
    first_mover: Literal["first", "random"] = Field("random", description="who opens: the first agent, or drawn from the seed")
    max_message_chars: int = Field(300, ge=0, le=4000, description="longer messages are cut")
    agent_names: list[str] = Field(["alice", "bob"], min_length=2, max_length=2, description="the two seats")

    @model_validator(mode="after")
    def _consistent(self) -> NegotiationConfig:
        if len(set(self.items)) != len(self.items) or not all(re.fullmatch(r"[a-z]+", i) for i in self.items):
            raise ValueError("items must be unique lowercase words (letters only)")
        if len(set(self.agent_names)) != 2 or not all(n.isidentifier() for n in self.agent_names):
            raise ValueError("agent_names must be two different identifiers")
        if self.min_count > self.max_count or self.min_total_items > self.max_total_items:
            raise ValueError("min_count must be <= max_count and min_total_items <= max_total_items")
        n = len(self.items)
        if n * self.min_count > self.max_total_items or n * self.max_count < self.min_total_items:
            raise ValueError(
                f"no pool of {n} item types with {self.min_count}-{self.max_count} each has "
                f"{self.min_total_items}-{self.max_total_items} items in all"
            )
        return self


# --- rules as pure functions ------------------------------------------------------------


def all_splits(counts) -> list[tuple[int, ...]]:
    """Every `take` vector: 0 <= take_i <= counts_i."""
    return list(itertools.product(*(range(int(c) + 1) for c in counts)))


def split_value(values, take) -> int:
    """Σ_i values_i · take_i."""
    return int(sum(int(v) * int(t) for v, t in zip(values, take)))


def value_vectors(counts, total_value: int) -> list[tuple[int, ...]]:
    """Every non-negative integer value vector v with Σ_i counts_i · v_i = total_value."""

    def rest(i: int, left: int) -> list[tuple[int, ...]]:
        if i == len(counts):
            return [()] if left == 0 else []
        c = int(counts[i])
        if c == 0:
            return [(0, *tail) for tail in rest(i + 1, left)]
        return [(v, *tail) for v in range(left // c + 1) for tail in rest(i + 1, left - c * v)]

    return rest(0, total_value)


def is_pareto_optimal(counts, values_a, values_b, take_a) -> bool:
    """No other split gives both agents at least as much and one of them more."""
    rest_a = [int(c) - int(t) for c, t in zip(counts, take_a)]
    ua, ub = split_value(values_a, take_a), split_value(values_b, rest_a)
    for take in all_splits(counts):
        va = split_value(values_a, take)
        vb = split_value(values_b, [int(c) - t for c, t in zip(counts, take)])
        if va >= ua and vb >= ub and (va > ua or vb > ub):
            return False
    return True


def draw_pool(rng: np.random.Generator, config: NegotiationConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item counts and both agents' private values, uniformly among valid draws.

    Valid: counts in range with a total in range; every item type valued > 0 by someone; the two
    agents' value vectors differ.
    """
    n = len(config.items)
    while True:
        counts = rng.integers(config.min_count, config.max_count + 1, size=n)
        if config.min_total_items <= counts.sum() <= config.max_total_items:
            vectors = value_vectors(counts, config.total_value)
            if vectors:
                break
    while True:
        a, b = (np.array(vectors[rng.integers(len(vectors))], dtype=np.int64) for _ in range(2))
        if not np.array_equal(a, b) and np.all((a > 0) | (b > 0) | (counts == 0)):
            return counts.astype(np.int64), a, b
        if len(vectors) < 2:  # e.g. one item type: any two draws are equal; accept it
            return counts.astype(np.int64), a, b


def sanitize(message: Any, limit: int) -> str:
    """A message on one line of printable ASCII, at most `limit` characters."""
    text = " ".join(str(message).split())
    return "".join(ch if ch in PRINTABLE else "?" for ch in text)[:limit]


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(AECEnv):
    metadata = {"name": "negotiation_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    Config = NegotiationConfig

    def __init__(self, config: NegotiationConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__()
        self.config = config or NegotiationConfig(**kwargs)
        self.items = list(self.config.items)
        self.possible_agents = list(self.config.agent_names)
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.agents = []
        self.history: list[str] = []

    # --- spaces (the same object on every call, as PettingZoo's tests require) ----------

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Space:
        n, c = len(self.items), self.config
        return spaces.Dict(
            {
                "counts": spaces.Box(0, c.max_count, (n,), dtype=np.int64),
                "values": spaces.Box(0, c.total_value, (n,), dtype=np.int64),
                "offer": spaces.Box(-1, c.max_count, (n,), dtype=np.int64),  # what I'd get; -1 = no offer
                "turn": spaces.Discrete(c.max_turns + 1),
                "history": spaces.Text(max_length=c.max_turns * self._line_chars(), min_length=0, charset=PRINTABLE + "\n"),
            }
        )

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        c = self.config
        return spaces.Dict(
            {
                "type": spaces.Discrete(3),
                "take": spaces.MultiDiscrete([c.max_count + 1] * len(self.items)),
                "message": spaces.Text(max_length=max(c.max_message_chars, 1), min_length=0, charset=PRINTABLE),
            }
        )

    def _line_chars(self) -> int:
        names = max(len(a) for a in self.possible_agents)
        return names + self.config.max_message_chars + 24 + sum(len(i) + 5 for i in self.items)

    # --- AEC API ------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        self.counts, value_a, value_b = draw_pool(self.np_random, self.config)
        self.values = dict(zip(self.possible_agents, (value_a, value_b)))
        self.agents = list(self.possible_agents)
        self.offer: tuple[str, np.ndarray] | None = None  # (proposer, what the proposer keeps)
        self.turn = 0
        self.history = []
        self.outcome: str | None = None  # deal | walk_away | illegal | timeout
        self.deal: dict[str, np.ndarray] | None = None
        self.scores = {a: 0.0 for a in self.agents}
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        first = 0 if self.config.first_mover == "first" else int(self.np_random.integers(2))
        self.agent_selection = self.agents[first]

    def other(self, agent: str) -> str:
        return self.possible_agents[1 - self.possible_agents.index(agent)]

    def observe(self, agent: str) -> dict[str, Any]:
        offer = np.full(len(self.items), -1, dtype=np.int64)
        if self.offer is not None and self.offer[0] != agent:
            offer = self.counts - self.offer[1]
        return {
            "counts": self.counts.copy(),
            "values": self.values[agent].copy(),
            "offer": offer,
            "turn": self.turn,
            "history": "\n".join(self.history),
        }

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        kind, take, message = self._decode(action)
        self.turn += 1
        self.history.append(f'{agent}: "{message}" -> {self._describe(kind, take)}')
        other = self.other(agent)
        if kind == PROPOSE and take is not None:
            self.offer = (agent, take)
        elif kind == ACCEPT and self.offer is not None and self.offer[0] == other:
            kept = self.offer[1]
            self.deal = {other: kept, agent: self.counts - kept}
            self._end("deal")
        elif kind == WALK_AWAY:
            self._end("walk_away")
        else:
            self.infos[agent]["illegal_action"] = True
            self._end("illegal")
        if self.outcome is None and self.turn >= self.config.max_turns:
            self._end("timeout")
        self.agent_selection = other
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def _end(self, outcome: str) -> None:
        self.outcome = outcome
        if outcome == "deal":
            self.scores = {a: float(split_value(self.values[a], self.deal[a])) for a in self.agents}
        else:
            self.scores = {a: float(self.config.disagreement_value) for a in self.agents}
        self.rewards = dict(self.scores)
        done = {a: True for a in self.agents}
        if outcome == "timeout":
            self.truncations = done
        else:
            self.terminations = done

    def _decode(self, action: Any) -> tuple[int | None, np.ndarray | None, str]:
        """(kind, take or None if out of range, sanitized message) of an action dict."""
        if not isinstance(action, dict):
            return None, None, ""
        message = sanitize(action.get("message", ""), self.config.max_message_chars)
        try:
            kind = int(action.get("type"))
            take = np.asarray(action.get("take", np.zeros(len(self.items))), dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            return None, None, message
        if take.shape != (len(self.items),) or np.any(take < 0) or np.any(take > self.counts):
            take = None
        return kind, take, message

    def _describe(self, kind: int | None, take: np.ndarray | None) -> str:
        if kind == PROPOSE and take is not None:
            return "PROPOSE " + " ".join(f"{item}={int(t)}" for item, t in zip(self.items, take))
        return {ACCEPT: "ACCEPT", WALK_AWAY: "WALK AWAY"}.get(kind, "ILLEGAL")

    def render(self) -> str | None:
        if self.render_mode is None or not self.agents and not self.history:
            return None
        pool = ", ".join(f"{int(c)} {i}" for i, c in zip(self.items, self.counts))
        lines = [f"pool: {pool}"] + [f"values {a}: {self.values[a].tolist()}" for a in self.possible_agents] + self.history
        if self.outcome:
            lines.append(f"outcome: {self.outcome}, scores {self.scores}")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass

    # --- text interface -----------------------------------------------------------------

    def prompt(self, agent: str, observation: dict[str, Any]) -> str:
        other = self.other(agent)
        counts, values = observation["counts"], observation["values"]
        pool = ", ".join(f"{int(c)} {i}" for i, c in zip(self.items, counts))
        mine = ", ".join(f"{i}={int(v)}" for i, v in zip(self.items, values))
        example = " ".join(f"{i}={int(c) // 2}" for i, c in zip(self.items, counts))
        lines = [
            f"You are {agent}, negotiating with {other} over how to split a pool of items.",
            f"Pool: {pool}.",
            f"Your private value of each item: {mine}. The whole pool is worth {split_value(values, counts)} to you.",
            f"{other} values the items differently, and you cannot see their values.",
            f"If a deal is made, your score is the total value of the items you get; "
            f"with no deal, both of you get {self.config.disagreement_value:g}.",
            "",
        ]
        history = observation["history"]
        lines += ["Conversation so far:", *(f"  {line}" for line in history.split("\n"))] if history else ["No one has spoken yet."]
        offer = observation["offer"]
        can_accept = bool(offer[0] >= 0)
        if can_accept:
            gets = " ".join(f"{i}={int(g)}" for i, g in zip(self.items, offer))
            lines.append(f"{other}'s offer on the table gives you {gets}, worth {split_value(values, offer)} to you.")
        else:
            lines.append(f"There is no offer from {other} on the table.")
        left = self.config.max_turns - int(observation["turn"])
        actions = [f"ACTION: PROPOSE {' '.join(f'{i}=<n>' for i in self.items)}"]
        actions += ["ACTION: ACCEPT"] if can_accept else []
        lines += [
            f"Turns left, this one included: {left}.",
            "",
            "Reply with exactly two lines: a MESSAGE line, then one ACTION line of these forms:",
            f"MESSAGE: <one short sentence to {other}>",
            *actions,
            "ACTION: WALK AWAY",
            f"In PROPOSE, <n> is how many of each item YOU keep; {other} gets the rest."
            + (f" ACCEPT takes {other}'s offer." if can_accept else "")
            + " WALK AWAY ends the game with no deal.",
            "",
            "Example:",
            "MESSAGE: I would like half of everything.",
            f"ACTION: PROPOSE {example}",
        ]
        return "\n".join(lines)

    @functools.lru_cache(maxsize=None)
    def demonstration(self, agent: str) -> list[dict[str, str]]:
        """A worked first turn on a fixed example pool (nothing about the real episode)."""
        counts, values, _ = draw_pool(np.random.default_rng(2017), self.config)
        observation = {
            "counts": counts,
            "values": values,
            "offer": np.full(len(self.items), -1, dtype=np.int64),
            "turn": 0,
            "history": "",
        }
        keep = {"type": PROPOSE, "take": [int(c) if v > 0 else 0 for c, v in zip(counts, values)], "message": "I need the items I value most; you can have the rest."}
        return [
            {"role": "user", "content": self.prompt(agent, observation)},
            {"role": "assistant", "content": self.render_action(agent, keep)},
        ]

    def parse(self, agent: str, text: str) -> dict[str, Any]:
        if not isinstance(text, str):
            raise ParseError("the reply must be text")
        found = [m.group(1) for m in re.finditer(r"(?im)^[\s*_#>`-]*action[\s*_`]*:[\s*_`]*(.*)$", text)]
        if not found:
            raise ParseError(f"no 'ACTION:' line; end with e.g. 'ACTION: PROPOSE {self._example_take()}'")
        # markdown emphasis and a trailing "(comment)" are tolerated; the action itself is not guessed
        bodies = {" ".join(re.sub(r"[*_`]|\(.*\)\s*$", " ", body).upper().split()).rstrip(" .!") for body in found}
        if len(bodies) > 1:
            raise ParseError("more than one different ACTION line; give exactly one")
        body = bodies.pop()
        message = next((m.group(1) for m in re.finditer(r"(?im)^[\s*_#>`-]*message[\s*_`]*:[\s*_`]*(.*)$", text)), "")
        action: dict[str, Any] = {"type": None, "take": [0] * len(self.items), "message": sanitize(message.strip(" *_`"), self.config.max_message_chars)}
        if body in ("ACCEPT", "ACCEPT OFFER", "ACCEPT THE OFFER"):
            if self.offer is None or self.offer[0] == agent:
                raise ParseError(f"there is no offer from {self.other(agent)} to accept; PROPOSE a split or WALK AWAY")
            action["type"] = ACCEPT
        elif body in ("WALK AWAY", "WALK_AWAY", "WALKAWAY"):
            action["type"] = WALK_AWAY
        elif body.startswith("PROPOSE"):
            action["type"], action["take"] = PROPOSE, self._parse_take(body.removeprefix("PROPOSE"))
        else:
            raise ParseError(f"unknown action '{body[:40]}'; use PROPOSE {self._example_take()}, ACCEPT or WALK AWAY")
        return action

    def _parse_take(self, body: str) -> list[int]:
        pairs = re.findall(r"([A-Z]+)\s*[=:]\s*(-?\d+)", body)
        leftover = re.sub(r"([A-Z]+)\s*[=:]\s*(-?\d+)", "", body)
        if not pairs or re.sub(r"[\s,;]", "", leftover):
            raise ParseError(f"write the split as item=count pairs, e.g. 'PROPOSE {self._example_take()}'")
        take: dict[str, int] = {}
        for name, count in pairs:
            item = name.lower()
            if item not in self.items:
                raise ParseError(f"unknown item '{item}'; the items are: {', '.join(self.items)}")
            if item in take:
                raise ParseError(f"'{item}' appears twice; name each item once")
            take[item] = int(count)
        missing = [i for i in self.items if i not in take]
        if missing:
            raise ParseError(f"the proposal must name every item; missing: {', '.join(missing)}")
        for item, count in zip(self.items, self.counts):
            if not 0 <= take[item] <= count:
                raise ParseError(f"{item}={take[item]} is impossible: the pool has {int(count)} {item}")
        return [take[i] for i in self.items]

    def _example_take(self) -> str:
        return " ".join(f"{i}={int(c) // 2}" for i, c in zip(self.items, self.counts))

    def render_action(self, agent: str, action: dict[str, Any]) -> str:
        kind = int(action["type"])
        if kind == PROPOSE:
            line = "ACTION: PROPOSE " + " ".join(f"{i}={int(t)}" for i, t in zip(self.items, action["take"]))
        else:
            line = "ACTION: ACCEPT" if kind == ACCEPT else "ACTION: WALK AWAY"
        message = action.get("message", "")
        return f"MESSAGE: {message}\n{line}" if message else line

    def fallback_action(self, agent: str, rng: np.random.Generator) -> dict[str, Any]:
        """ACCEPT a standing offer with probability 1/2, else PROPOSE a uniformly random split; never walk away."""
        if self.offer is not None and self.offer[0] != agent and rng.random() < 0.5:
            return {"type": ACCEPT, "take": [0] * len(self.items), "message": ""}
        take = [int(rng.integers(int(c) + 1)) for c in self.counts]
        return {"type": PROPOSE, "take": take, "message": ""}

    def episode_metrics(self) -> dict[str, float]:
        a, b = self.possible_agents
        deal = self.outcome == "deal"
        d = self.config.disagreement_value
        metrics = {
            "agreement": float(deal),
            "joint_welfare": sum(self.scores.values()),
            "pareto_optimal": float(deal and is_pareto_optimal(self.counts, self.values[a], self.values[b], self.deal[a])),
            "nash_product": (self.scores[a] - d) * (self.scores[b] - d) if deal else 0.0,
            "turns": float(self.turn),
            "walk_away": float(self.outcome == "walk_away"),
            "illegal": float(self.outcome == "illegal"),
        }
        metrics.update({f"score/{agent}": self.scores[agent] for agent in self.possible_agents})
        return metrics
