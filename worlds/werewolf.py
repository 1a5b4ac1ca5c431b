"""Werewolf: social deduction with hidden roles, free-text discussion and votes, as a PettingZoo AECEnv.

Default: 7 players, 2 werewolves, 1 seer, 1 doctor, 3 villagers. The werewolves know each other.

- Night d: each living werewolf picks a victim (their plurality choice; a tie is broken by a seeded
  draw among the tied choices); each seer inspects a living player and privately learns whether it
  is a werewolf; each doctor protects a living player (self-protection and protecting the same
  player two nights running are parameters). The victim dies unless protected.
- Day d: the death (or a quiet night) is announced; `discussion_rounds` rounds in which each living
  player makes one free-text statement (and may accuse one player), in a seeded speaking order;
  then every living player votes to eliminate one living player (or abstains, if enabled). A
  plurality eliminates; a tie eliminates no one. Whether a dead player's role is revealed is a
  parameter.
- The village wins when no werewolf lives; the werewolves win when they are at least as many as the
  others. After `max_days` days without a winner the game is a draw (a truncation).

Seats are named by role (`werewolf_0`, `seer_0`, ..., from the role counts), so "one policy per
role" is a glob in the scenario file. Inside the game every player is known only by a public name:
the seed deals the seats to seating positions, position i is called `names[i]`, and targets are
positions. Observations hold only what their player may know: its own role and position, its
private night results, and the public record (deaths, statements, accusations, votes, revealed
roles).

An action is `{"target": position | n (nobody), "statement": text}`. At night and in the vote the
target counts and the statement is ignored; in the discussion the statement is the point and the
target is an optional accusation. Legal targets are given by the observation's `target_mask`
(and, in gymnasium's mask format for the Dict action space, by `infos[agent]["action_mask"]`).
A masked-out target counts as "nobody" and is flagged in `infos[agent]["illegal_action"]`.
Rewards: +1 to each member of the winning side, -1 to the losers, 0 to all in a draw.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.world import PRINTABLE, ParseError, Report, cached_per_agent, sanitize, world_config

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
    names: list[str] = Field(NAMES, min_length=2, description="public names, one per seating position (at least one per player)")
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
                f"{self.werewolves} werewolves against {self.players - self.werewolves} others win before the game starts; "
                "the werewolves must be fewer than the other players"
            )
        if len(self.names) < self.players:
            raise ValueError(f"{self.players} players need at least {self.players} names, got {len(self.names)}")
        if not all(re.fullmatch(r"[A-Z][a-z]{1,11}", name) for name in self.names):
            raise ValueError("names must be capitalised words of 2-12 letters (e.g. Alice)")
        if len({name.upper() for name in self.names}) != len(self.names) or {n.upper() for n in self.names} & set(NOBODY_WORDS):
            raise ValueError("names must be different from each other and from NOBODY/NONE/ABSTAIN")
        return self


def seat_names(config: WerewolfConfig) -> list[str]:
    """Seats by role, from the role counts: werewolf_0.., seer_0.., doctor_0.., villager_0.."""
    counts = (("werewolf", config.werewolves), ("seer", config.seers), ("doctor", config.doctors), ("villager", config.villagers))
    return [f"{role}_{i}" for role, count in counts for i in range(count)]


def role_of(seat: str) -> int:
    return ROLES.index(seat.rsplit("_", 1)[0])


def target_mask(config: WerewolfConfig, role: int, me: int, alive: np.ndarray, known: np.ndarray, phase: int,
                last_protected: int = -1) -> np.ndarray:
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


LABEL_LINE = re.compile(r"[ \t>#*_`-]*([A-Za-z]+)[ \t*_`]*:(.*)")


def labelled(text: str, label: str) -> list[str]:
    """Bodies of the lines 'LABEL: body' (case and markdown emphasis tolerated), in order."""
    out = []
    for line in text.splitlines():
        match = LABEL_LINE.match(line)
        if match and match.group(1).upper() == label:
            out.append(match.group(2))
    return out


def name_body(body: str) -> str:
    """'**Bob**. (he lied)' -> 'BOB'."""
    body = re.sub(r"[*_`\"']", " ", body).strip()
    if body.endswith(")") and "(" in body:
        body = body[: body.index("(")]
    return " ".join(body.upper().split()).rstrip(" .!,;")


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(AECEnv):
    metadata = {"name": "werewolf_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "win/village": "village win rate",
        "win/werewolves": "werewolf win rate",
        "draw": "draw rate (day limit)",
        "days": "days per game",
        "vote_accuracy": "village votes on a werewolf",
        "wolf_detection": "day-1 vote leaders who are werewolves",
        "seer_survival": "seer survival rate",
    }
    Config = WerewolfConfig

    def __init__(self, config: WerewolfConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__()
        self.config = world_config(WerewolfConfig, config, kwargs)
        self.possible_agents = seat_names(self.config)
        self.n = len(self.possible_agents)
        self.names = list(self.config.names[: self.n])
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.agents = []
        self.transcript: list[str] = []

    # --- spaces (the same object on every call, as PettingZoo's tests require) ----------

    @cached_per_agent
    def observation_space(self, agent: str) -> spaces.Space:
        n, c = self.n, self.config
        statements = max(1, c.max_days * c.discussion_rounds * n)
        return spaces.Dict(
            {
                "role": spaces.Discrete(len(ROLES)),
                "me": spaces.Discrete(n),  # own seating position
                "day": spaces.Discrete(c.max_days + 1),
                "phase": spaces.Discrete(len(PHASES)),
                "alive": spaces.MultiBinary(n),
                "known": spaces.Box(-1, 1, (n,), dtype=np.int64),  # team known to me: -1 unknown, 0 village, 1 werewolf
                "revealed": spaces.Box(-1, len(ROLES) - 1, (n,), dtype=np.int64),  # public role of the dead, -1 hidden
                "votes": spaces.Box(-1, n, (c.max_days, n), dtype=np.int64),  # votes[d-1, voter] = target, n = nobody, -1 none
                "accusations": spaces.Box(-1, n, (c.max_days, n), dtype=np.int64),  # latest accusation per day, n = nobody
                "seer_claims": spaces.Box(0, statements, (n,), dtype=np.int64),  # 1 + index of a player's first seer claim; 0 none
                "target_mask": spaces.MultiBinary(n + 1),
                "transcript": spaces.Text(max_length=self._transcript_chars(), min_length=0, charset=PRINTABLE + "\n"),
                "notes": spaces.Text(max_length=c.max_days * 3 * 80, min_length=0, charset=PRINTABLE + "\n"),  # private
            }
        )

    @cached_per_agent
    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Dict(
            {
                "target": spaces.Discrete(self.n + 1),  # a seating position, or n = nobody
                "statement": spaces.Text(max_length=max(self.config.max_statement_chars, 1), min_length=0, charset=PRINTABLE),
            }
        )

    def _transcript_chars(self) -> int:
        c, name = self.config, max(len(x) for x in self.names)
        night = 80 + name
        talk = c.discussion_rounds * self.n * (c.max_statement_chars + 2 * name + 40)
        vote = 60 + self.n * (2 * name + 6) + 60 + name
        return c.max_days * (night + talk + vote)

    # --- AEC API ------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        n = self.n
        self.seating: list[str] = [self.possible_agents[i] for i in self.np_random.permutation(n)]  # position -> seat
        if options and "seating" in options:  # a hand-dealt table (tests, replays)
            if sorted(options["seating"]) != sorted(self.possible_agents):
                raise ValueError(f"options['seating'] must order the seats {self.possible_agents}")
            self.seating = list(options["seating"])
        self.position = {seat: p for p, seat in enumerate(self.seating)}
        self.roles = np.array([role_of(seat) for seat in self.seating], dtype=np.int64)  # by position
        self.alive = np.ones(n, dtype=np.int8)
        self.revealed = np.full(n, -1, dtype=np.int64)
        self.known = {seat: self._initial_knowledge(seat) for seat in self.possible_agents}
        self.votes = np.full((self.config.max_days, n), -1, dtype=np.int64)
        self.accusations = np.full((self.config.max_days, n), -1, dtype=np.int64)
        self.seer_claims = np.zeros(n, dtype=np.int64)
        self.statements = 0
        self.transcript = []
        self.notes: dict[str, list[str]] = {seat: [] for seat in self.possible_agents}
        self.night_choices: dict[str, int] = {}  # this night's kill / inspection / protection per seat
        self.last_protected = {seat: -1 for seat in self.possible_agents}
        self.deaths: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # the public record (statements, votes) for episode_info
        self.day, self.phase = 1, NIGHT
        self.winner: str | None = None  # village | werewolves | draw
        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self.queue: list[str] = []
        self._start_night()

    def _initial_knowledge(self, seat: str) -> np.ndarray:
        known = np.full(self.n, UNKNOWN, dtype=np.int64)
        me = self.position[seat]
        known[me] = WEREWOLF_TEAM if self.roles[me] == WEREWOLF else VILLAGE_TEAM
        if self.roles[me] == WEREWOLF:
            known[self.roles == WEREWOLF] = WEREWOLF_TEAM
        return known

    def living(self, role: int | None = None) -> list[int]:
        """Living positions in seating order (of one role, if given)."""
        return [p for p in range(self.n) if self.alive[p] and (role is None or self.roles[p] == role)]

    def _mask(self, seat: str) -> np.ndarray:
        p = self.position[seat]
        return target_mask(self.config, self.roles[p], p, self.alive, self.known[seat], self.phase, self.last_protected[seat])

    def _select(self) -> None:
        """Hand the turn to the head of the queue, with its action mask in its info."""
        self.agent_selection = self.queue[0]
        self.infos[self.agent_selection]["action_mask"] = {"target": self._mask(self.agent_selection), "statement": None}

    def _start_night(self) -> None:
        self.phase = NIGHT
        self.night_choices = {}
        self.queue = [self.seating[p] for role in (WEREWOLF, SEER, DOCTOR) for p in self.living(role)]
        self._select()  # werewolves are always alive at night, so the queue is never empty

    def _start_day(self) -> None:
        if self.config.discussion_rounds == 0:
            return self._start_vote()
        self.phase = DISCUSSION
        living = self.living()
        first = (self.day - 1) % len(living)  # the speaking order rotates round the table, day by day
        order = living[first:] + living[:first]
        self.queue = [self.seating[p] for _ in range(self.config.discussion_rounds) for p in order]
        self._select()

    def _start_vote(self) -> None:
        self.phase = VOTE
        self.queue = [self.seating[p] for p in self.living()]
        self._select()

    def observe(self, agent: str) -> dict[str, Any]:
        return {
            "role": int(self.roles[self.position[agent]]),
            "me": self.position[agent],
            "day": self.day,
            "phase": self.phase,
            "alive": self.alive.copy(),
            "known": self.known[agent].copy(),
            "revealed": self.revealed.copy(),
            "votes": self.votes.copy(),
            "accusations": self.accusations.copy(),
            "seer_claims": self.seer_claims.copy(),
            "target_mask": self._mask(agent) if self.winner is None else np.zeros(self.n + 1, dtype=np.int8),
            "transcript": "\n".join(self.transcript),
            "notes": "\n".join(self.notes[agent]),
        }

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        self.infos[agent] = {}
        target, statement = self._decode(agent, action)
        self.queue.pop(0)
        {NIGHT: self._night_action, DISCUSSION: self._statement, VOTE: self._vote}[self.phase](agent, target, statement)
        if self.queue:
            self._select()
        elif self.phase == NIGHT:
            self._resolve_night()
        elif self.phase == DISCUSSION:
            self._start_vote()
        else:
            self._resolve_vote()
        self._accumulate_rewards()
        if self.render_mode == "human":
            self.render()

    def _decode(self, agent: str, action: Any) -> tuple[int, str]:
        """(legal target or n = nobody, sanitized statement); an illegal target is flagged and counts as nobody."""
        if not isinstance(action, dict):
            self.infos[agent]["illegal_action"] = True
            return self.n, ""
        statement = sanitize(action.get("statement", ""), self.config.max_statement_chars)
        try:
            raw = action.get("target", self.n)
            target = int(raw)
            legal = target == raw and 0 <= target <= self.n and bool(self._mask(agent)[target])
        except (TypeError, ValueError, OverflowError):
            legal = False
        if not legal:
            self.infos[agent]["illegal_action"] = True
            return self.n, statement
        return target, statement

    # --- rules --------------------------------------------------------------------------

    def _night_action(self, agent: str, target: int, statement: str) -> None:
        self.night_choices[agent] = target

    def _resolve_night(self) -> None:
        """The werewolves' plurality choice dies unless a doctor protected it; seers learn their results."""
        n, day = self.n, self.day
        wolves = [s for s in self.night_choices if role_of(s) == WEREWOLF]
        tied = plurality([self.night_choices[s] for s in wolves if self.night_choices[s] < n])
        victim = tied[int(self.np_random.integers(len(tied)))] if len(tied) > 1 else (tied[0] if tied else -1)
        protected = set()
        for seat, choice in self.night_choices.items():
            role = role_of(seat)
            if role == SEER and choice < n:
                wolf = bool(self.roles[choice] == WEREWOLF)
                self.known[seat][choice] = WEREWOLF_TEAM if wolf else VILLAGE_TEAM
                self.notes[seat].append(f"Night {day}: you inspected {self.names[choice]}: {'a WEREWOLF' if wolf else 'not a werewolf'}.")
            elif role == DOCTOR:
                self.last_protected[seat] = choice if choice < n else -1
                if choice < n:
                    protected.add(choice)
                    self.notes[seat].append(f"Night {day}: you protected {self.names[choice]}.")
        for seat in wolves:
            attacked = f"the werewolves attacked {self.names[victim]}" if victim >= 0 else "the werewolves attacked no one"
            self.notes[seat].append(f"Night {day}: {attacked}.")
        if victim >= 0 and victim not in protected:
            self._kill(victim, "night", self.config.reveal_on_night_death)
            self.transcript.append(f"Night {day}: {self._dead_name(victim)} was killed by the werewolves.")
        else:
            self.transcript.append(f"Night {day}: nobody died.")
        if not self._check_winner():
            self._start_day()

    def _statement(self, agent: str, target: int, statement: str) -> None:
        p, day = self.position[agent], self.day
        self.statements += 1
        if self.seer_claims[p] == 0 and SEER_CLAIM.search(statement):
            self.seer_claims[p] = self.statements
        self.accusations[day - 1, p] = target
        accuses = f" (accuses {self.names[target]})" if target < self.n else ""
        self.transcript.append(f'Day {day}, {self.names[p]}: "{statement}"{accuses}')
        self.events.append({"kind": "statement", "day": day, "speaker": p, "target": target, "text": statement})

    def _vote(self, agent: str, target: int, statement: str) -> None:
        self.votes[self.day - 1, self.position[agent]] = target

    def _resolve_vote(self) -> None:
        """The plurality of the votes eliminates; a tie, or a plurality for NOBODY, eliminates no one."""
        day, n = self.day, self.n
        votes = self.votes[day - 1]
        cast = [(voter, int(t)) for voter, t in enumerate(votes) if t >= 0]
        self.events += [{"kind": "vote", "day": day, "voter": v, "target": t} for v, t in cast]
        ballot = ", ".join(f"{self.names[v]} -> {self.names[t] if t < n else 'nobody'}" for v, t in cast)
        tied = plurality([t for _, t in cast])
        if len(tied) == 1 and tied[0] < n:
            self._kill(tied[0], "vote", self.config.reveal_on_elimination)
            outcome = f"{self._dead_name(tied[0])} was eliminated."
        else:
            outcome = "A tie: nobody was eliminated." if len(tied) > 1 else "Nobody was eliminated."
        self.transcript.append(f"Day {day} vote: {ballot}. {outcome}")
        if self._check_winner():
            return
        if day >= self.config.max_days:
            self._end("draw")
            return
        self.day += 1
        self._start_night()

    def _kill(self, p: int, cause: str, reveal: bool) -> None:
        self.alive[p] = 0
        if reveal:
            self.revealed[p] = self.roles[p]
            for known in self.known.values():
                known[p] = WEREWOLF_TEAM if self.roles[p] == WEREWOLF else VILLAGE_TEAM
        self.deaths.append({"day": self.day, "cause": cause, "position": p, "revealed": reveal})

    def _dead_name(self, p: int) -> str:
        role = self.revealed[p]
        return f"{self.names[p]} ({ROLES[role]})" if role >= 0 else self.names[p]

    def _check_winner(self) -> bool:
        wolves = len(self.living(WEREWOLF))
        if wolves == 0:
            self._end("village")
        elif wolves >= len(self.living()) - wolves:
            self._end("werewolves")
        return self.winner is not None

    def _end(self, winner: str) -> None:
        self.winner = winner
        self.queue = []
        for seat in self.agents:
            wolf = role_of(seat) == WEREWOLF
            self.rewards[seat] = 0.0 if winner == "draw" else (1.0 if (winner == "werewolves") == wolf else -1.0)
            self.infos[seat].pop("action_mask", None)
        done = {a: True for a in self.agents}
        if winner == "draw":
            self.truncations = done
        else:
            self.terminations = done
        self.transcript.append({"draw": "The day limit is reached: a draw.", "village": "The village wins.",
                                "werewolves": "The werewolves win."}[winner])

    def render(self) -> str | None:
        if self.render_mode is None or not self.transcript:
            return None
        seats = ", ".join(f"{self.names[p]}={ROLES[self.roles[p]]}" for p in range(self.n))
        text = "\n".join([f"players: {seats}", *self.transcript])
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass

    # --- text interface -----------------------------------------------------------------

    def _roster(self) -> str:
        c = self.config
        parts = [(c.werewolves, "werewolf", "werewolves"), (c.seers, "seer", "seers"), (c.doctors, "doctor", "doctors"),
                 (c.villagers, "villager", "villagers")]
        return ", ".join(f"{k} {one if k == 1 else many}" for k, one, many in parts if k)

    def prompt(self, agent: str, observation: dict[str, Any]) -> str:
        """Rules, the player's role and private knowledge, the public transcript and the reply format.

        Built from `observation` alone (plus the public config), so nothing hidden leaks.
        """
        return self._prompt(observation, self.names)

    def _prompt(self, observation: dict[str, Any], names: list[str]) -> str:
        obs = observation
        me, role, day, phase = int(obs["me"]), int(obs["role"]), int(obs["day"]), int(obs["phase"])
        # The fixed rules come first so that the prompts of one batch share a long prefix.
        night = ["the werewolves choose a player to kill"]
        night += ["the seer learns whether one player is a werewolf"] if self.config.seers else []
        night += ["the doctor protects one player from the kill"] if self.config.doctors else []
        lines = [
            f"You are playing Werewolf with {self.n} players: {self._roster()}.",
            f"Each night {', '.join(night[:-1])}{' and ' if len(night) > 1 else ''}{night[-1]}.",
            "Each day every living player speaks, then everyone votes to eliminate one player; "
            "the most votes eliminates, a tie eliminates no one.",
            "The village wins when no werewolf is alive. The werewolves win when they are at least as many as the others.",
            "",
            f"You are {names[me]}. Your role: {ROLES[role]}.",
        ]
        known = obs["known"]
        if role == WEREWOLF:
            pack = [names[p] for p in range(self.n) if known[p] == WEREWOLF_TEAM and p != me]
            lines.append(f"Your fellow werewolves: {', '.join(pack) or 'none'}. Never reveal that you are a werewolf.")
        else:
            lines.append("You are on the village team: find the werewolves and vote them out.")
        alive = [names[p] for p in range(self.n) if obs["alive"][p]]
        dead = [names[p] + (f" ({ROLES[obs['revealed'][p]]})" if obs["revealed"][p] >= 0 else "")
                for p in range(self.n) if not obs["alive"][p]]
        lines.append(f"Alive: {', '.join(alive)}." + (f" Dead: {', '.join(dead)}." if dead else ""))
        if obs["notes"]:
            lines += ["What only you know:", *(f"  {line}" for line in obs["notes"].split("\n"))]
        if obs["transcript"]:
            lines += ["What happened so far:", *(f"  {line}" for line in obs["transcript"].split("\n"))]
        mask = obs["target_mask"]
        choices = ", ".join(names[p] for p in range(self.n) if mask[p])
        if phase == DISCUSSION:
            lines += [
                f"It is day {day}. Speak to the others in one short sentence. You may accuse one player.",
                "Reply in exactly this format:",
                "SAY: <one short sentence>",
                f"ACCUSE: <one of {choices}, or NOBODY>",
            ]
        else:
            verb = "VOTE" if phase == VOTE else NIGHT_VERBS[role]
            what = {"VOTE": "vote out", "KILL": "kill", "INSPECT": "inspect", "PROTECT": "protect"}[verb]
            when = f"day {day}: the vote" if phase == VOTE else f"night {day}"
            nobody = ", or NOBODY to abstain" if mask[self.n] else ""
            lines += [
                f"It is {when}. Choose one player to {what}: {choices}{nobody}.",
                "Reply in exactly this format:",
                f"{verb}: <name>",
            ]
        return "\n".join(lines)

    @cached_per_agent
    def _demonstration(self, role: int, phase: int) -> tuple[tuple[str, str], ...]:
        """A worked turn on a fixed example (position 0 on day 1, nobody dead), for one role and phase.

        The example table takes the config's names from position n on (wrapping round), so with
        enough spare names its speaker and suspect are nobody in the real game and a small model
        that copies the example does not vote for a real player.
        """
        n = self.n
        names = [self.config.names[(n + i) % len(self.config.names)] for i in range(n)]
        alive = np.ones(n, dtype=np.int8)
        known = np.full(n, UNKNOWN, dtype=np.int64)
        known[0] = WEREWOLF_TEAM if role == WEREWOLF else VILLAGE_TEAM
        if role == WEREWOLF:
            known[1 : self.config.werewolves] = WEREWOLF_TEAM
        suspect = self.config.werewolves if role == WEREWOLF else 2
        observation = {
            "role": role, "me": 0, "day": 1, "phase": phase, "alive": alive, "known": known,
            "revealed": np.full(n, -1, dtype=np.int64), "target_mask": target_mask(self.config, role, 0, alive, known, phase),
            "transcript": "" if phase == NIGHT else "Night 1: nobody died.", "notes": "",
        }
        if phase == DISCUSSION:
            action = {"target": suspect, "statement": f"{names[suspect]} has been too quiet, I suspect them."}
        else:
            action = {"target": 0 if phase == NIGHT and role == DOCTOR and self.config.doctor_self_protect else suspect, "statement": ""}
        return (("user", self._prompt(observation, names)), ("assistant", self.reply(phase, role, action, names)))

    def demonstration(self, agent: str) -> list[dict[str, str]]:
        """A worked example for the agent's role and the current phase (nothing about the real game)."""
        return [{"role": r, "content": c} for r, c in self._demonstration(role_of(agent), self.phase)]

    def parse(self, agent: str, text: str) -> dict[str, Any]:
        """The action named in the reply: 'SAY: ...' (+ optional 'ACCUSE: <name>') in the discussion,
        '<VERB>: <name>' at night (KILL, INSPECT, PROTECT) and in the vote (VOTE).

        Tolerated: letter case, surrounding whitespace, markdown emphasis, a trailing '(comment)' or '.'.
        Not guessed: a missing or ambiguous label, a name that is not a legal target now.
        """
        if not isinstance(text, str):
            raise ParseError("the reply must be text")
        p = self.position[agent]
        if self.winner is not None or not self.alive[p]:
            raise ParseError("you cannot act now")
        mask = self._mask(agent)
        if self.phase == DISCUSSION:
            says = labelled(text, "SAY")
            if not says:
                raise ParseError("no 'SAY:' line; reply e.g. 'SAY: I think Bob is lying.' then 'ACCUSE: Bob' or 'ACCUSE: NOBODY'")
            statement = sanitize(says[0].strip().strip("*_` "), self.config.max_statement_chars)
            accused = {name_body(b) for b in labelled(text, "ACCUSE")}
            if len(accused) > 1:
                raise ParseError("more than one different ACCUSE line; accuse at most one player")
            target = self._target(agent, accused.pop(), mask, "accuse") if accused else self.n
            return {"target": target, "statement": statement}
        verb = "VOTE" if self.phase == VOTE else NIGHT_VERBS.get(int(self.roles[p]), "")
        bodies = {name_body(b) for b in labelled(text, verb)}
        example = self.names[int(np.flatnonzero(mask[: self.n])[0])] if mask[: self.n].any() else "NOBODY"
        if not bodies:
            raise ParseError(f"no '{verb}:' line; reply e.g. '{verb}: {example}'")
        if len(bodies) > 1:
            raise ParseError(f"more than one different {verb} line; name exactly one player")
        return {"target": self._target(agent, bodies.pop(), mask, verb.lower()), "statement": ""}

    def _target(self, agent: str, body: str, mask: np.ndarray, verb: str) -> int:
        """Position of the player named `body` (upper case), if `mask` allows it; else a ParseError saying why."""
        legal = [self.names[p] for p in range(self.n) if mask[p]] + (["NOBODY"] if mask[self.n] else [])
        choose = f"choose one of: {', '.join(legal)}"
        if body in NOBODY_WORDS:
            if mask[self.n]:
                return self.n
            raise ParseError(f"you must {verb} someone now; {choose}")
        upper = [name.upper() for name in self.names]
        if body not in upper:
            raise ParseError(f"'{body[:30]}' is not a player's name; write only the name: {choose[len('choose '):]}")
        p = upper.index(body)
        if mask[p]:
            return p
        if not self.alive[p]:
            reason = f"{self.names[p]} is dead"
        elif p == self.position[agent]:
            reason = f"you cannot {verb} yourself"
        else:
            reason = f"you cannot {verb} {self.names[p]} now"
        raise ParseError(f"{reason}; {choose}")

    def render_action(self, agent: str, action: dict[str, Any]) -> str:
        return self.reply(self.phase, role_of(agent), action)

    def reply(self, phase: int, role: int, action: dict[str, Any], names: list[str] | None = None) -> str:
        """`action` in the reply format of `phase` for a player of `role` (what `parse` reads)."""
        target = int(action["target"])
        name = (names or self.names)[target] if target < self.n else "NOBODY"
        if phase == DISCUSSION:
            return f"SAY: {action.get('statement', '')}\nACCUSE: {name}"
        return f"{'VOTE' if phase == VOTE else NIGHT_VERBS.get(role, 'VOTE')}: {name}"

    def fallback_action(self, agent: str, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly drawn legal target (an accusation or nobody in the discussion), and no statement."""
        legal = np.flatnonzero(self._mask(agent))
        return {"target": int(rng.choice(legal)) if len(legal) else self.n, "statement": ""}

    # --- metrics and reports ------------------------------------------------------------

    def village_votes(self, day: int | None = None) -> list[tuple[int, int]]:
        """(voter, target) of every non-abstaining vote cast by a village-team player (on `day`, if given)."""
        days = range(self.config.max_days) if day is None else [day - 1]
        return [(v, int(t)) for d in days for v, t in enumerate(self.votes[d])
                if 0 <= t < self.n and self.roles[v] != WEREWOLF]

    def episode_metrics(self) -> dict[str, float]:
        """Outcome, `days` (the day or night the game ended on), vote accuracy
        (village votes on werewolves / village votes), wolf detection (share of werewolves among the
        players the village voted most on day 1), seer survival."""
        wolf = self.roles == WEREWOLF
        metrics = {
            "win/village": float(self.winner == "village"),
            "win/werewolves": float(self.winner == "werewolves"),
            "draw": float(self.winner == "draw"),
            "days": float(self.day),
        }
        votes = self.village_votes()
        if votes:
            metrics["vote_accuracy"] = float(np.mean([wolf[t] for _, t in votes]))
        first = plurality([t for _, t in self.village_votes(1)])
        if first:
            metrics["wolf_detection"] = float(np.mean([wolf[t] for t in first]))
        seers = [p for p in range(self.n) if self.roles[p] == SEER]
        if seers:
            metrics["seer_survival"] = float(np.mean([self.alive[p] for p in seers]))
        return metrics

    def episode_info(self) -> dict[str, Any]:
        """Who was who, every statement, vote and death (positions with their seats and names)."""

        def who(p: int) -> dict[str, Any] | None:
            return {"name": self.names[p], "seat": self.seating[p]} if 0 <= p < self.n else None

        return {
            "winner": self.winner,
            "days": self.day,
            "players": [{"position": p, **who(p), "role": ROLES[self.roles[p]], "alive": bool(self.alive[p])} for p in range(self.n)],
            "deaths": [{**d, **who(d["position"])} for d in self.deaths],
            "statements": [{"day": e["day"], "speaker": who(e["speaker"]), "accused": who(e["target"]), "text": e["text"]}
                           for e in self.events if e["kind"] == "statement"],
            "votes": [{"day": e["day"], "voter": who(e["voter"]), "target": who(e["target"])}
                      for e in self.events if e["kind"] == "vote"],
        }

    def run_report(self, episodes: list) -> Report:
        """Per-day vote and accusation graphs over all episodes (networkx DiGraphs between seats, edge
        weight = number of votes/accusations), drawn as figures and written as edge lists; the share of
        village votes on werewolves per day as a metric series (step = day)."""
        import networkx as nx

        graphs: dict[str, dict[int, nx.DiGraph]] = {"votes": {}, "accusations": {}}
        for episode in episodes:
            for kind, key, source in (("votes", "votes", "voter"), ("accusations", "statements", "speaker")):
                for event in episode.info.get(key, []):
                    target = event["target" if kind == "votes" else "accused"]
                    if target is None:
                        continue
                    graph = graphs[kind].setdefault(event["day"], nx.DiGraph())
                    u, v = event[source]["seat"], target["seat"]
                    weight = graph.get_edge_data(u, v, {"weight": 0})["weight"]
                    graph.add_edge(u, v, weight=weight + 1)
        report = Report()
        for kind, by_day in graphs.items():
            if not by_day:
                continue
            report.texts[f"werewolf/{kind}_edges.txt"] = edge_lists(by_day, kind)
            report.figures[f"werewolf/{kind}_graphs.png"] = draw_day_graphs(by_day, self.possible_agents, kind)
        accuracy = defaultdict(list)
        for episode in episodes:
            for event in episode.info.get("votes", []):
                if event["target"] is not None and role_of(event["voter"]["seat"]) != WEREWOLF:
                    accuracy[event["day"]].append(role_of(event["target"]["seat"]) == WEREWOLF)
        report.series["day/vote_accuracy"] = [(day, float(np.mean(v))) for day, v in sorted(accuracy.items())]
        report.tables["werewolf/games.json"] = {
            "episode": [e.index for e in episodes],
            "winner": [e.info.get("winner") for e in episodes],
            "days": [e.info.get("days") for e in episodes],
            "roles": [", ".join(f"{p['name']}={p['role']}" for p in e.info.get("players", [])) for e in episodes],
            "deaths": [", ".join(f"{d['name']} ({d['cause']} {d['day']})" for d in e.info.get("deaths", [])) for e in episodes],
        }
        return report


def edge_lists(by_day: dict[int, Any], kind: str) -> str:
    """'# day d' blocks of 'source target weight' lines (networkx's edge-list format)."""
    import networkx as nx

    lines = [f"# {kind}: source target weight, summed over the run's episodes"]
    for day, graph in sorted(by_day.items()):
        lines.append(f"# day {day}")
        lines += sorted(nx.generate_edgelist(graph, data=["weight"]))
    return "\n".join(lines) + "\n"


def draw_day_graphs(by_day: dict[int, Any], seats: list[str], kind: str):
    """One panel per day (at most 6): seats on a circle, werewolves red, arrow width ~ weight."""
    import networkx as nx
    from matplotlib.figure import Figure

    days = sorted(by_day)[:6]
    figure = Figure(figsize=(4 * len(days), 4.2))
    layout = nx.circular_layout(seats)
    for i, day in enumerate(days):
        ax = figure.add_subplot(1, len(days), i + 1)
        graph = by_day[day]
        graph.add_nodes_from(seats)
        top = max(w for _, _, w in graph.edges(data="weight"))
        colors = ["tab:red" if role_of(s) == WEREWOLF else "tab:blue" for s in graph.nodes]
        nx.draw_networkx_nodes(graph, layout, ax=ax, node_color=colors, node_size=500, alpha=0.8)
        nx.draw_networkx_labels(graph, layout, ax=ax, font_size=7)
        widths = [0.5 + 4 * w / top for _, _, w in graph.edges(data="weight")]
        nx.draw_networkx_edges(graph, layout, ax=ax, width=widths, arrows=True, arrowsize=12,
                               connectionstyle="arc3,rad=0.1", node_size=500)
        ax.set_title(f"day {day} {kind}")
        ax.set_axis_off()
    figure.tight_layout()
    return figure
