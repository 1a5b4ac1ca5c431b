"""Werewolf's rules as data and pure functions: roles, phases, the config, seats and legal targets.

The rules themselves are told in the package docstring (worlds/werewolf/__init__.py).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROLES = ("villager", "werewolf", "seer", "doctor")  # index = role id in observations
VILLAGER, WEREWOLF, SEER, DOCTOR = range(4)
NIGHT, DISCUSSION, VOTE = range(3)
PHASES = ("night", "discussion", "vote")
UNKNOWN, VILLAGE_TEAM, WEREWOLF_TEAM = -1, 0, 1  # what a player knows of another's team
NIGHT_VERBS = {WEREWOLF: "KILL", SEER: "INSPECT", DOCTOR: "PROTECT"}
NOBODY_WORDS = ("NOBODY", "NO ONE", "NOONE", "NONE", "ABSTAIN")
SEER_CLAIM = re.compile(r"\bI\s*(?:am|'m)\s+(?:the\s+|a\s+)?seer\b", re.IGNORECASE)
NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Oscar"]


class WerewolfConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    werewolves: int = Field(2, ge=1, le=10, description="number of werewolves (they know each other)")
    seers: int = Field(1, ge=0, le=5, description="number of seers (inspect one player per night)")
    doctors: int = Field(1, ge=0, le=5, description="number of doctors (protect one player per night)")
    villagers: int = Field(3, ge=0, le=30, description="number of plain villagers")
    names: list[str] = Field(
        NAMES, min_length=2, description="public names, one per seating position (at least one per player)"
    )
    discussion_rounds: int = Field(2, ge=0, le=10, description="statements per living player each day before the vote")
    max_days: int = Field(10, ge=1, le=100, description="days before the game ends as a draw")
    allow_abstain: bool = Field(False, description="players may vote NOBODY")
    doctor_self_protect: bool = Field(True, description="a doctor may protect itself")
    doctor_repeat_protect: bool = Field(False, description="a doctor may protect the same player two nights in a row")
    reveal_on_elimination: bool = Field(True, description="the role of a player voted out is announced")
    reveal_on_night_death: bool = Field(True, description="the role of a player killed at night is announced")
    max_statement_chars: int = Field(200, ge=0, le=2000, description="longer statements are cut")

    @property
    def players(self) -> int:
        return self.werewolves + self.seers + self.doctors + self.villagers

    @model_validator(mode="after")
    def _consistent(self) -> WerewolfConfig:
        if self.werewolves >= self.players - self.werewolves:
            raise ValueError(
                f"{self.werewolves} werewolves against {self.players - self.werewolves} others win before the "
                "game starts; "
                "the werewolves must be fewer than the other players"
            )
        if len(self.names) < self.players:
            raise ValueError(f"{self.players} players need at least {self.players} names, got {len(self.names)}")
        if not all(re.fullmatch(r"[A-Z][a-z]{1,11}", name) for name in self.names):
            raise ValueError("names must be capitalised words of 2-12 letters (e.g. Alice)")
        if len({name.upper() for name in self.names}) != len(self.names) or {n.upper() for n in self.names} & set(
            NOBODY_WORDS
        ):
            raise ValueError("names must be different from each other and from NOBODY/NONE/ABSTAIN")
        return self


def seat_names(config: WerewolfConfig) -> list[str]:
    """Seats by role, from the role counts: werewolf_0.., seer_0.., doctor_0.., villager_0.."""
    counts = (
        ("werewolf", config.werewolves),
        ("seer", config.seers),
        ("doctor", config.doctors),
        ("villager", config.villagers),
    )
    return [f"{role}_{i}" for role, count in counts for i in range(count)]


def role_of(seat: str) -> int:
    return ROLES.index(seat.rsplit("_", 1)[0])


def target_mask(
    config: WerewolfConfig,
    role: int,
    me: int,
    alive: np.ndarray,
    known: np.ndarray,
    phase: int,
    last_protected: int = -1,
) -> np.ndarray:
    """Legal targets of a player (index n = nobody): 1 = allowed.

    Night: werewolves kill a living non-werewolf; seers inspect a living other player; doctors
    protect a living player (themselves only if `doctor_self_protect`, not last night's choice
    unless `doctor_repeat_protect`); villagers have no night action. Discussion: accuse a living
    other player or nobody. Vote: a living other player, or nobody when `allow_abstain`.
    """
    n = len(alive)
    mask = np.zeros(n + 1, dtype=np.int8)
    others = alive.astype(bool).copy()
    others[me] = False
    if phase == DISCUSSION:
        mask[:n], mask[n] = others, 1
    elif phase == VOTE:
        mask[:n], mask[n] = others, int(config.allow_abstain)
    elif role == WEREWOLF:
        mask[:n] = others & (known != WEREWOLF_TEAM)
    elif role == SEER:
        mask[:n] = others
    elif role == DOCTOR:
        mask[:n] = alive
        mask[me] = int(bool(alive[me]) and config.doctor_self_protect)
        if last_protected >= 0 and not config.doctor_repeat_protect:
            mask[last_protected] = 0
    return mask


def plurality(votes: list[int]) -> list[int]:
    """The most frequent values (several on a tie), sorted; none for no votes."""
    counts = Counter(votes)
    top = max(counts.values(), default=0)
    return sorted(v for v, c in counts.items() if c == top)
