"""Werewolf's text interface: the prompt a player reads, its worked example, the strict reply parser
and the reply grammar.

`WerewolfText` is a mixin of `raw_env` (worlds/werewolf/world.py); it reads the env's state (`config`,
`n`, `names`, `position`, `alive`, `roles`, `phase`, `winner`) and its legal-target mask `_mask(seat)`.

One set of definitions serves the prompt, `parse`, `render_action` and `reply_grammar`, so they cannot
drift: the labels (`SAY`, `target_label`), the words naming a target (`target_word`, `target_words`:
the legal names in seating order, then NOBODY) and the line layout `LABEL: body` (`SEPARATOR`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from agora.grammar import Grammar, alt, literal, one_of, seq
from agora.grammar import text as free_text
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

SAY, ACCUSE, VOTE_LABEL = "SAY", "ACCUSE", "VOTE"
NOBODY = NOBODY_WORDS[0]  # the canonical word for "no target" (the parser also reads its synonyms)
SEPARATOR = ": "  # between a reply line's label and its body


def target_label(phase: int, role: int) -> str:
    """The label of the line that names the target: ACCUSE in the discussion, VOTE in the vote, the role's
    night verb (KILL, INSPECT, PROTECT) at night; '' for a role that does not act at night."""
    if phase == DISCUSSION:
        return ACCUSE
    return VOTE_LABEL if phase == VOTE else NIGHT_VERBS.get(role, "")


def target_word(names: list[str], target: int) -> str:
    """The word a reply names target position `target` with (`len(names)` = nobody)."""
    return names[target] if target < len(names) else NOBODY


def target_words(names: list[str], mask: np.ndarray) -> list[str]:
    """The words naming the legal targets of `mask` (index len(names) = nobody): names in seating order, then NOBODY."""
    return [target_word(names, int(p)) for p in np.flatnonzero(mask[: len(names) + 1])]


def reply_language(
    phase: int, role: int, names: list[str], mask: np.ndarray, max_statement_chars: int
) -> Grammar | None:
    """The grammar of a legal reply, in the canonical form the prompt asks for and `reply` writes:
    '<LABEL>: <legal target>' at night and in the vote, 'SAY: <free text or nothing>' then
    'ACCUSE: <legal target>' in the discussion. None when the player has no legal target (it cannot act).

    The statement is one line of at most `max_statement_chars` characters (what the parser keeps), so
    nothing in it can be read as another line's label: the parser reads labels at line starts only.
    """
    label, words = target_label(phase, role), target_words(names, mask)
    if not label or not words:
        return None
    target = seq(label + SEPARATOR, one_of(words))
    if phase != DISCUSSION:
        return Grammar(target)
    # The statement or nothing, then its line break: written as two alternatives rather than an optional text,
    # whose GBNF form '(...{1,n})?' llguidance's GBNF reader misreads.
    statement = alt(seq(free_text(max_statement_chars), "\n"), "\n") if max_statement_chars else literal("\n")
    return Grammar(seq(SAY + SEPARATOR, statement, target))


def labelled(text: str, label: str) -> list[str]:
    """Bodies of the lines 'LABEL: body' (case and markdown emphasis tolerated), in order; linear in the text."""
    colon = re.escape(SEPARATOR.strip())
    return re.findall(rf"^[ \t>#*_`-]*{label}[ \t*_`]*{colon}(.*)", text, re.IGNORECASE | re.MULTILINE)


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
        choices = ", ".join(target_words(names, mask[: self.n]))
        label = target_label(phase, role)
        if phase == DISCUSSION:
            lines += [
                f"It is day {day}. Speak to the others in one short sentence. You may accuse one player.",
                "Reply in exactly this format:",
                f"{SAY}{SEPARATOR}<one short sentence>",
                f"{label}{SEPARATOR}<one of {choices}, or {NOBODY}>",
            ]
        else:
            what = {"VOTE": "vote out", "KILL": "kill", "INSPECT": "inspect", "PROTECT": "protect"}[label]
            when = f"day {day}: the vote" if phase == VOTE else f"night {day}"
            nobody = f", or {NOBODY} to abstain" if mask[self.n] else ""
            lines += [
                f"It is {when}. Choose one player to {what}: {choices}{nobody}.",
                "Reply in exactly this format:",
                f"{label}{SEPARATOR}<name>",
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

        Labels are read at line starts only, so a statement that quotes a label ('SAY: VOTE: Bob') is text.
        Tolerated: letter case, surrounding whitespace, markdown emphasis, a trailing '(comment)' or '.'.
        Not guessed: a missing or ambiguous label, a name that is not a legal target now.
        """
        text = check_reply(text)
        p = self.position[agent]
        if self.winner is not None or not self.alive[p]:
            raise ParseError("you cannot act now")
        mask = self._mask(agent)
        label = target_label(self.phase, int(self.roles[p]))
        bodies = {name_body(b) for b in set(labelled(text, label))}
        if self.phase == DISCUSSION:
            says = labelled(text, SAY)
            if not says:
                raise ParseError(
                    f"no '{SAY}:' line; reply e.g. '{SAY}{SEPARATOR}I think Bob is lying.' then "
                    f"'{ACCUSE}{SEPARATOR}Bob' or '{ACCUSE}{SEPARATOR}{NOBODY}'"
                )
            statement = sanitize(says[0].strip().strip("*_` "), self.config.max_statement_chars)
            if len(bodies) > 1:
                raise ParseError(f"more than one different {ACCUSE} line; accuse at most one player")
            target = self._target(agent, bodies.pop(), mask, "accuse") if bodies else self.n
            return {"target": target, "statement": statement}
        if not bodies:
            example = (target_words(self.names, mask) or [NOBODY])[0]
            raise ParseError(f"no '{label}:' line; reply e.g. '{label}{SEPARATOR}{example}'")
        if len(bodies) > 1:
            raise ParseError(f"more than one different {label} line; name exactly one player")
        return {"target": self._target(agent, bodies.pop(), mask, label.lower()), "statement": ""}

    def _target(self, agent: str, body: str, mask: np.ndarray, verb: str) -> int:
        """Position of the player named `body` (upper case), if `mask` allows it; else a ParseError saying why."""
        legal = ", ".join(target_words(self.names, mask))
        if body in NOBODY_WORDS:
            if mask[self.n]:
                return self.n
            raise ParseError(f"you must {verb} someone now; choose one of: {legal}")
        upper = [name.upper() for name in self.names]
        if body not in upper:
            raise ParseError(f"'{body[:30]}' is not a player's name; write only the name: one of: {legal}")
        p = upper.index(body)
        if mask[p]:
            return p
        if not self.alive[p]:
            reason = f"{self.names[p]} is dead"
        elif p == self.position[agent]:
            reason = f"you cannot {verb} yourself"
        else:
            reason = f"you cannot {verb} {self.names[p]} now"
        raise ParseError(f"{reason}; choose one of: {legal}")

    def render_action(self, agent: str, action: dict[str, Any]) -> str:
        return self.reply(self.phase, role_of(agent), action)

    def reply(self, phase: int, role: int, action: dict[str, Any], names: list[str] | None = None) -> str:
        """`action` in the reply format of `phase` for a player of `role` (what `parse` reads and
        `reply_language` describes); the statement as the world would keep it (one line, cut to length)."""
        word = target_word(names or self.names, int(action["target"]))
        line = f"{target_label(phase, role) or VOTE_LABEL}{SEPARATOR}{word}"
        if phase != DISCUSSION:
            return line
        statement = sanitize(action.get("statement", ""), self.config.max_statement_chars)
        return f"{SAY}{SEPARATOR}{statement}\n{line}"

    def reply_grammar(self, agent: str, observation: Any = None) -> Grammar | None:
        """The language of `agent`'s legal replies now (`reply_language`), from the state `parse` checks
        (phase, role, legal targets; the observation the engine passes shows the same); None when the
        agent cannot act (dead, or the game is over)."""
        p = self.position[agent]
        if self.winner is not None or not self.alive[p]:
            return None
        role = int(self.roles[p])
        return reply_language(self.phase, role, self.names, self._mask(agent), self.config.max_statement_chars)

    def fallback_action(self, agent: str, rng: np.random.Generator) -> dict[str, Any]:
        """A uniformly drawn legal target (an accusation or nobody in the discussion), and no statement."""
        legal = np.flatnonzero(self._mask(agent))
        return {"target": int(rng.choice(legal)) if len(legal) else self.n, "statement": ""}
