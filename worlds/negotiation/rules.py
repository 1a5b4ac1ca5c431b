"""Negotiation's rules as pure functions: the config, pools and private values, splits, the reply format's pieces."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.grammar import integer, seq

PROPOSE, ACCEPT, WALK_AWAY = 0, 1, 2
POOL_DRAWS = 10_000  # count vectors tried before a config is declared impossible
MAX_VALUE_VECTORS = 100_000  # larger pools would take seconds to enumerate on every reset


class NegotiationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(
        ["book", "hat", "ball"], min_length=1, max_length=6, description="item types in the pool (lowercase words)"
    )
    min_count: int = Field(1, ge=1, le=10, description="fewest items of one type")
    max_count: int = Field(4, ge=1, le=10, description="most items of one type")
    min_total_items: int = Field(5, ge=1, le=60, description="fewest items in the pool")
    max_total_items: int = Field(7, ge=1, le=60, description="most items in the pool")
    total_value: int = Field(10, ge=1, le=100, description="what the whole pool is worth to each agent")
    max_turns: int = Field(10, ge=1, le=100, description="turns of both agents together; no accept by then = no deal")
    disagreement_value: float = Field(0.0, ge=-1000, le=1000, description="each agent's score without a deal")
    first_mover: Literal["first", "random"] = Field(
        "random", description="who opens: the first agent, or drawn from the seed"
    )
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
        draw_pool(np.random.default_rng(0), self)  # raises when no pool admits valid private values
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


def count_value_vectors(counts, total_value: int) -> int:
    """len(value_vectors(counts, total_value)) without listing them: coin change, ways[t] += ways[t - c]."""
    ways = [1] + [0] * total_value
    for c in (int(c) for c in counts if c > 0):
        for t in range(c, total_value + 1):
            ways[t] += ways[t - c]
    return ways[total_value]


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


def valid_values(counts, values_a, values_b) -> bool:
    """Every item type in the pool is valued > 0 by someone, and the agents' values differ
    (unavoidable with one item type: the only vector is total_value / count)."""
    valued = all(c == 0 or a > 0 or b > 0 for c, a, b in zip(counts, values_a, values_b))
    return valued and (tuple(values_a) != tuple(values_b) or len(counts) == 1)


def admits_valid_values(counts, vectors) -> bool:
    """Some pair of `vectors` is `valid_values`, decided on their supports (at most 2^n of them):
    two vectors with different supports differ."""
    supports = Counter(tuple(v > 0 for v in vector) for vector in vectors)
    return any(
        all(c == 0 or x or y for c, x, y in zip(counts, s, t)) and (s != t or supports[s] > 1 or len(counts) == 1)
        for s in supports
        for t in supports
    )


def draw_pool(rng: np.random.Generator, config: NegotiationConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item counts and both agents' private values.

    Counts: uniform per type in [min_count, max_count], redrawn until the total is in range and some
    pair of value vectors is `valid_values`. Values: each agent's vector uniform among
    `value_vectors(counts, total_value)`, the pair redrawn until `valid_values`.
    """
    n = len(config.items)
    for _ in range(POOL_DRAWS):
        counts = rng.integers(config.min_count, config.max_count + 1, size=n)
        if not config.min_total_items <= counts.sum() <= config.max_total_items:
            continue
        if count_value_vectors(counts, config.total_value) > MAX_VALUE_VECTORS:
            raise ValueError(
                f"a pool of {counts.tolist()} has over {MAX_VALUE_VECTORS} value vectors summing to "
                f"{config.total_value}; lower total_value or use fewer item types"
            )
        vectors = value_vectors(counts, config.total_value)
        if not admits_valid_values(counts, vectors):
            continue
        while True:
            a, b = (vectors[rng.integers(len(vectors))] for _ in range(2))
            if valid_values(counts, a, b):
                return counts.astype(np.int64), np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)
    raise ValueError(
        f"no pool found in {POOL_DRAWS} draws where {config.total_value} can be split into integer item values "
        "that differ between the agents and leave no item type worthless to both; raise total_value or change the "
        "counts"
    )


MESSAGE_LABEL, ACTION_LABEL = "MESSAGE: ", "ACTION: "  # how replies write the two lines
PROPOSE_WORD = "PROPOSE"
ACCEPT_WORDS = ("ACCEPT", "ACCEPT OFFER", "ACCEPT THE OFFER")  # parse takes each; replies write the first
WALK_AWAY_WORDS = ("WALK AWAY", "WALKAWAY")
MESSAGE_TOKENS = 60  # the reply grammar's bound on a message, in tokens ("one short line")
ACTION_LINE = re.compile(r"^[ \t>#*_`-]*action[ \t*_`]*:(.*)", re.IGNORECASE | re.MULTILINE)
MESSAGE_LINE = re.compile(r"^[ \t>#-]*([*_`]*)message([*_`]*)[ \t]*:([*_`]*)[ \t]*(.*)", re.IGNORECASE | re.MULTILINE)
TAKE_PAIR = re.compile(r"([A-Z]+)[=:](-?[0-9]+)")


def take_text(items, take) -> str:
    """'book=1 hat=0 ball=2': a take as replies, the transcript and the prompt's example write it."""
    return " ".join(f"{item}={int(t)}" for item, t in zip(items, take))


def take_grammar(items, counts):
    """The take of a PROPOSE as `take_text` writes it: every item once, in order, each from 0 to its count."""
    pairs = [seq(f"{item}=", integer(0, int(count))) for item, count in zip(items, counts)]
    return seq(*(part for k, pair in enumerate(pairs) for part in ([" ", pair] if k else [pair])))


def action_body(line: str) -> str:
    """What follows 'ACTION:', normalized: '**Propose  book=1** (my offer).' -> 'PROPOSE BOOK=1'."""
    body = re.sub(r"[*_`]", " ", line).strip()
    if body.endswith(")") and "(" in body:
        body = body[: body.index("(")]
    return " ".join(body.upper().split()).rstrip(" .!")


def message_body(match: re.Match) -> str:
    """What follows 'MESSAGE:', without the markdown emphasis around the label ('**MESSAGE:** hi')."""
    opened, closed_before_colon, after_colon, body = match.groups()
    if not opened:
        return after_colon + body  # emphasis that starts the message belongs to it: 'MESSAGE: *wink*'
    if closed_before_colon or after_colon:
        return body
    return body.rstrip().removesuffix(opened)  # '**MESSAGE: hi**'
