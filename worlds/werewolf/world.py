"""The werewolf world as a PettingZoo AECEnv: seating, spaces, and the night / discussion / vote cycle.

The rules are told in the package docstring (worlds/werewolf/__init__.py); the text interface is
`WerewolfText` (text.py), the metrics and run report `WerewolfRecords` (report.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from agora.world import PRINTABLE, cached_per_agent, sanitize, world_config
from worlds.werewolf.numeric import WerewolfNumeric
from worlds.werewolf.report import WerewolfRecords
from worlds.werewolf.rules import (
    DISCUSSION,
    DOCTOR,
    NIGHT,
    PHASES,
    ROLES,
    SEER,
    SEER_CLAIM,
    UNKNOWN,
    VILLAGE_TEAM,
    VOTE,
    WEREWOLF,
    WEREWOLF_TEAM,
    WerewolfConfig,
    plurality,
    role_of,
    seat_names,
    target_mask,
)
from worlds.werewolf.text import WerewolfText


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(WerewolfText, WerewolfRecords, WerewolfNumeric, AECEnv):
    metadata = {"name": "werewolf_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
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
        self.seating: list[str] = []  # position -> seat, dealt at reset

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
                "votes": spaces.Box(
                    -1, n, (c.max_days, n), dtype=np.int64
                ),  # votes[d-1, voter] = target, n = nobody, -1 none
                "accusations": spaces.Box(
                    -1, n, (c.max_days, n), dtype=np.int64
                ),  # latest accusation per day, n = nobody
                "seer_claims": spaces.Box(
                    0, statements, (n,), dtype=np.int64
                ),  # 1 + index of a player's first seer claim; 0 none
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
                "statement": spaces.Text(
                    max_length=max(self.config.max_statement_chars, 1), min_length=0, charset=PRINTABLE
                ),
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
        return target_mask(
            self.config, self.roles[p], p, self.alive, self.known[seat], self.phase, self.last_protected[seat]
        )

    def _select(self) -> None:
        """Hand the turn to the head of the queue, with its action mask in its info."""
        self.agent_selection = self.queue[0]
        self.infos[self.agent_selection]["action_mask"] = {
            "target": self._mask(self.agent_selection),
            "statement": None,
        }

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
                self.notes[seat].append(
                    f"Night {day}: you inspected {self.names[choice]}: {'a WEREWOLF' if wolf else 'not a werewolf'}."
                )
            elif role == DOCTOR:
                self.last_protected[seat] = choice if choice < n else -1
                if choice < n:
                    protected.add(choice)
                    self.notes[seat].append(f"Night {day}: you protected {self.names[choice]}.")
        for seat in wolves:
            attacked = (
                f"the werewolves attacked {self.names[victim]}" if victim >= 0 else "the werewolves attacked no one"
            )
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
        self.transcript.append(
            {
                "draw": "The day limit is reached: a draw.",
                "village": "The village wins.",
                "werewolves": "The werewolves win.",
            }[winner]
        )

    def render(self) -> str | None:
        if self.render_mode is None or not self.seating:  # nothing is dealt before the first reset
            return None
        seats = ", ".join(f"{self.names[p]}={ROLES[self.roles[p]]}" for p in range(self.n))
        text = "\n".join([f"players: {seats}", *self.transcript])
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass
