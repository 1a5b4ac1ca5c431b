"""Werewolf's text interface: the prompt a player reads, its worked example, and the strict reply parser.

`WerewolfText` is a mixin of `raw_env` (worlds/werewolf/world.py); it reads the env's state (`config`,
`n`, `names`, `position`, `alive`, `roles`, `phase`, `winner`) and its legal-target mask `_mask(seat)`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from agora.world import ParseError, cached_per_agent, check_reply, sanitize
from worlds.werewolf.rules import (
    DISCUSSION,
    DOCTOR,
    NIGHT,
    NIGHT_VERBS,
    NOBODY_WORDS,
    ROLES,
    UNKNOWN,
    VILLAGE_TEAM,
    VOTE,
    WEREWOLF,
    WEREWOLF_TEAM,
    role_of,
    target_mask,
)


def labelled(text: str, label: str) -> list[str]:
    """Bodies of the lines 'LABEL: body' (case and markdown emphasis tolerated), in order; linear in the text."""
    return re.findall(rf"^[ \t>#*_`-]*{label}[ \t*_`]*:(.*)", text, re.IGNORECASE | re.MULTILINE)


def name_body(body: str) -> str:
    """'**Bob**. (he lied)' -> 'BOB'."""
    body = re.sub(r"[*_`\"']", " ", body).strip()
    if body.endswith(")") and "(" in body:
        body = body[: body.index("(")]
    return " ".join(body.upper().split()).rstrip(" .!,;")


class WerewolfText:
    """Prompts, demonstrations, parsing and rendering of replies for the werewolf world."""

    def _roster(self) -> str:
        c = self.config
        parts = [
            (c.werewolves, "werewolf", "werewolves"),
            (c.seers, "seer", "seers"),
            (c.doctors, "doctor", "doctors"),
            (c.villagers, "villager", "villagers"),
        ]
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
            "The village wins when no werewolf is alive. The werewolves win when they are at least as many as the "
            "others.",
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
        dead = [
            names[p] + (f" ({ROLES[obs['revealed'][p]]})" if obs["revealed"][p] >= 0 else "")
            for p in range(self.n)
            if not obs["alive"][p]
        ]
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
            "role": role,
            "me": 0,
            "day": 1,
            "phase": phase,
            "alive": alive,
            "known": known,
            "revealed": np.full(n, -1, dtype=np.int64),
            "target_mask": target_mask(self.config, role, 0, alive, known, phase),
            "transcript": "" if phase == NIGHT else "Night 1: nobody died.",
            "notes": "",
        }
        if phase == DISCUSSION:
            action = {"target": suspect, "statement": f"{names[suspect]} has been too quiet, I suspect them."}
        else:
            action = {
                "target": 0 if phase == NIGHT and role == DOCTOR and self.config.doctor_self_protect else suspect,
                "statement": "",
            }
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
        text = check_reply(text)
        p = self.position[agent]
        if self.winner is not None or not self.alive[p]:
            raise ParseError("you cannot act now")
        mask = self._mask(agent)
        if self.phase == DISCUSSION:
            says = labelled(text, "SAY")
            if not says:
                raise ParseError(
                    "no 'SAY:' line; reply e.g. 'SAY: I think Bob is lying.' then 'ACCUSE: Bob' or 'ACCUSE: NOBODY'"
                )
            statement = sanitize(says[0].strip().strip("*_` "), self.config.max_statement_chars)
            accused = {name_body(b) for b in set(labelled(text, "ACCUSE"))}
            if len(accused) > 1:
                raise ParseError("more than one different ACCUSE line; accuse at most one player")
            target = self._target(agent, accused.pop(), mask, "accuse") if accused else self.n
            return {"target": target, "statement": statement}
        verb = "VOTE" if self.phase == VOTE else NIGHT_VERBS.get(int(self.roles[p]), "")
        bodies = {name_body(b) for b in set(labelled(text, verb))}
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
            raise ParseError(f"'{body[:30]}' is not a player's name; write only the name: {choose[len('choose ') :]}")
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
