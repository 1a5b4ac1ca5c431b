"""A latent-strategy werewolf player (LSPO: "Learning Strategic Language Agents in the Werewolf Game with Iterative
Latent Space Policy Optimization", arXiv 2502.04686): it speaks by latent strategy, acts by rule.

A latent space (written by `agora train` on a `kind: lspo` campaign, campaigns/lspo.py) holds, per
role, k clusters of candidate day statements that an LLM produced in real game states, and the
equilibrium policy of the latent game over them. In play:

- at the start of a game each team draws its latent profile, one cluster per role, from the policy:
  the team's roles choose in a fixed order (village: seer, doctor, villager; werewolves: werewolf)
  and each choice is drawn from sigma(team:role | the team's earlier choices), the same information
  sets CFR solved. The draw is keyed by (policy seed, episode, team), so every seat of a team played
  by this policy (one `agents:` key) draws the same profile: the team's play stays correlated;
- in each day statement it speaks a member of its role's cluster (drawn per statement): the member's
  text, and an accusation of the same kind as the member's in the state it was generated in: `rule`
  (the player the rule-based line accuses now), `nobody`, or `other` (a drawn legal player that is not
  the rule-based target). A name the member accused is replaced in its text by the new target's name
  (names are the world's default ones: observations carry positions, not names);
- night actions and votes are the rule-based player's (agents/scripted/werewolf.py): secret actions
  and votes are already discrete, LSPO abstracts only the free-text discussion.

A role the space has no clusters for speaks the rule-based line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field, field_validator

from agents.scripted.werewolf import RuleBasedPlayer, WerewolfPlayer
from agora.errors import AgoraError
from agora.policy import PolicyConfig
from agora.scenario import parse_json, read_text
from agora.world import sanitize
from worlds.werewolf.rules import DISCUSSION, NAMES, ROLES, WEREWOLF

TEAMS = {"village": ("seer", "doctor", "villager"), "werewolves": ("werewolf",)}  # each team's roles, in choosing order
ACCUSATION_KINDS = ("rule", "nobody", "other")


def team_of(role: str) -> str:
    return "werewolves" if role == "werewolf" else "village"


def infoset_key(team: str, role: str, earlier: list[tuple[str, int]]) -> str:
    """'village:doctor|seer=1': the team's choice for `role` after its earlier choices (perfect recall)."""
    return f"{team}:{role}" + ("|" + ",".join(f"{r}={a}" for r, a in earlier) if earlier else "")


@dataclass
class Member:
    """One candidate statement of a cluster: its text, and its accusation relative to its state."""

    statement: str
    accusation: str  # rule | nobody | other
    accused: str | None = None  # the name it accused in its own state (replaced by the new target in play)


@dataclass
class LatentSpace:
    """clusters[role][c] = the members of latent strategy c of `role`; policy[infoset key] = probabilities."""

    clusters: dict[str, list[list[Member]]]
    policy: dict[str, list[float]] = field(default_factory=dict)
    exemplars: dict[str, list[str]] = field(default_factory=dict)  # role -> the member nearest each centroid

    def roles(self, team: str) -> list[str]:
        """The team's roles that have clusters, in choosing order."""
        return [r for r in TEAMS[team] if self.clusters.get(r)]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "agora-latent-space-1",
            "clusters": {r: [[vars(m) for m in c] for c in cs] for r, cs in self.clusters.items()},
            "policy": self.policy,
            "exemplars": self.exemplars,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatentSpace:
        if not isinstance(data, dict) or data.get("format") != "agora-latent-space-1":
            raise ValueError(
                "not a latent space file (its 'format' must be agora-latent-space-1); write one with `agora train` "
                "on a kind: lspo campaign"
            )
        clusters = {}
        for role, cs in data.get("clusters", {}).items():
            if role not in ROLES:
                raise ValueError(f"unknown role '{role}' in the latent space; roles: {', '.join(ROLES)}")
            clusters[role] = [[Member(**m) for m in c] for c in cs]
            if any(not c for c in clusters[role]):
                raise ValueError(f"an empty cluster for role '{role}'")
            if any(m.accusation not in ACCUSATION_KINDS for c in clusters[role] for m in c):
                raise ValueError(f"accusation kinds must be one of {', '.join(ACCUSATION_KINDS)}")
        space = cls(
            clusters, {k: list(map(float, v)) for k, v in data.get("policy", {}).items()}, data.get("exemplars", {})
        )
        for team in TEAMS:
            for key, size in space.infosets(team):
                probs = space.policy.get(key)
                if probs is not None and (len(probs) != size or abs(sum(probs) - 1) > 1e-6 or min(probs) < 0):
                    raise ValueError(f"policy['{key}'] must be {size} probabilities summing to 1")
        return space

    @classmethod
    def load(cls, path: str | Path) -> LatentSpace:
        return cls.from_json(parse_json(read_text(path)))  # a user file: Agora's reader and limits

    def infosets(self, team: str) -> list[tuple[str, int]]:
        """Every (information set key, number of clusters) of the team's choosing tree."""
        out: list[tuple[str, int]] = []
        roles = self.roles(team)

        def walk(i: int, earlier: list[tuple[str, int]]) -> None:
            if i == len(roles):
                return
            k = len(self.clusters[roles[i]])
            out.append((infoset_key(team, roles[i], earlier), k))
            for a in range(k):
                walk(i + 1, earlier + [(roles[i], a)])

        walk(0, [])
        return out

    def draw_profile(self, team: str, rng: np.random.Generator) -> dict[str, int]:
        """One cluster per role of the team, drawn in choosing order from the policy (uniform where it has none)."""
        earlier: list[tuple[str, int]] = []
        for role in self.roles(team):
            k = len(self.clusters[role])
            probs = np.asarray(self.policy.get(infoset_key(team, role, earlier), np.full(k, 1 / k)), dtype=np.float64)
            earlier.append((role, int(rng.choice(k, p=probs / probs.sum()))))
        return dict(earlier)


def replace_name(statement: str, old: str | None, new: str | None, names: list[str]) -> str:
    """The statement with the name it accused (`old`) replaced by `new` (whole words only)."""
    if not old or not new or old == new or old not in names:
        return statement
    return re.sub(rf"\b{re.escape(old)}\b", new, statement)


def space_path(value: str) -> Path:
    """A latent space file: relative to the working directory, else to Agora's folder (shipped scenarios)."""
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        shipped = Path(__file__).resolve().parent.parent / path
        if shipped.exists():
            return shipped
    return path


class LatentConfig(PolicyConfig):
    space: str | None = Field(
        None,
        description="latent space JSON written by an lspo campaign (checkpoints/<name>/iter-N/latent_space.json); "
        "relative to the working directory or Agora's folder",
    )
    max_statement_chars: int = Field(200, ge=1, le=2000, description="longer statements are cut")

    @field_validator("space")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = space_path(value)
        if not path.is_file():
            raise ValueError(
                f"no such file: {value} (paths are relative to the working directory or to Agora's folder)"
            )
        try:
            LatentSpace.load(path)
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read the latent space {value}: {exc}") from None
        return value


class LatentPolicy(WerewolfPlayer):
    """Day statements from latent strategies drawn from an LSPO policy; night actions and votes by rule."""

    Config = LatentConfig

    def __init__(
        self,
        config: LatentConfig,
        *,
        seed: int,
        space: LatentSpace | None = None,
        assign: Callable[[int], dict[str, int]] | None = None,
    ):
        """`space` given: play that space (in code) instead of the file `config.space`. `assign(episode)`
        given: play those clusters per role in that episode instead of drawing them (utility estimation)."""
        super().__init__(config, seed=seed)
        if space is None:
            if config.space is None:
                raise AgoraError(
                    "the latent policy needs a latent space: set `space:` to a latent_space.json written by an lspo "
                    "campaign"
                )
            space = LatentSpace.load(space_path(config.space))
        self.space, self.assign = space, assign
        self.rule = RuleBasedPlayer(RuleBasedPlayer.Config(), seed=seed)
        self.profiles: dict[tuple[int, str], dict[str, int]] = {}
        self.spoken: dict[str, dict[int, int]] = {}  # role -> cluster -> statements spoken (for reports and tests)

    def profile(self, team: str, episode: int) -> dict[str, int]:
        if self.assign is not None:
            return self.assign(episode)
        key = (episode, team)
        if key not in self.profiles:
            self.profiles[key] = self.space.draw_profile(
                team, np.random.default_rng([self.seed, episode, list(TEAMS).index(team)])
            )
        return self.profiles[key]

    def decide(self, obs) -> dict:
        self.rule.episode = self.episode
        ruled = self.rule.decide(obs)
        role = ROLES[int(obs["role"])]
        if int(obs["phase"]) != DISCUSSION or not self.space.clusters.get(role):
            return ruled
        cluster = self.profile(team_of(role), self.episode).get(role)
        if cluster is None:
            return ruled
        members = self.space.clusters[role][cluster]
        n = len(obs["alive"])
        key = [self.seed, self.episode, int(obs["day"]), int(obs["me"]), len(obs["transcript"])]
        rng = np.random.default_rng(key)
        member = members[int(rng.integers(len(members)))]
        mask = obs["target_mask"]
        if member.accusation == "nobody":
            target = n
        elif member.accusation == "rule":
            target = int(ruled["target"])
        else:
            others = [int(p) for p in np.flatnonzero(mask[:n]) if int(p) != int(ruled["target"])]
            if int(obs["role"]) == WEREWOLF:  # a werewolf's "other" is a villager, not its own pack
                others = [p for p in others if obs["known"][p] != 1] or others
            target = int(rng.choice(others)) if others else n
        if not mask[target]:
            target = n
        new_name = NAMES[target] if target < n else None
        statement = sanitize(
            replace_name(member.statement, member.accused, new_name, NAMES[:n]), self.config.max_statement_chars
        )
        self.spoken.setdefault(role, {}).setdefault(cluster, 0)
        self.spoken[role][cluster] += 1
        return {"target": target, "statement": statement}
