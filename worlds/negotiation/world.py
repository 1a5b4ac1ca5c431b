"""The negotiation world: `raw_env` (the PettingZoo AECEnv with its text interface) and `env()`."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import wrappers

from agora.grammar import Grammar, alt, optional, seq, text
from agora.world import PRINTABLE, ParseError, cached_per_agent, check_reply, sanitize, world_config
from worlds.negotiation.numeric import NegotiationNumeric
from worlds.negotiation.rules import (
    ACCEPT,
    ACCEPT_WORDS,
    ACTION_LABEL,
    ACTION_LINE,
    MESSAGE_LABEL,
    MESSAGE_LINE,
    MESSAGE_TOKENS,
    PROPOSE,
    PROPOSE_WORD,
    TAKE_PAIR,
    WALK_AWAY,
    WALK_AWAY_WORDS,
    NegotiationConfig,
    action_body,
    draw_pool,
    is_pareto_optimal,
    message_body,
    split_value,
    take_grammar,
    take_text,
)


def env(**kwargs) -> AECEnv:
    """The world with PettingZoo's order-enforcing wrapper (the raw env is `raw_env`)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


class raw_env(NegotiationNumeric, AECEnv):
    metadata = {"name": "negotiation_v0", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "agreement": "agreement rate",
        "pareto_optimal": "Pareto-optimal rate",
        "joint_welfare": "joint welfare (sum of scores)",
        "nash_product": "Nash product of the scores",
        "walk_away": "walk-away rate",
        "turns": "turns per episode",
        "illegal": "illegal actions per episode",
    }
    Config = NegotiationConfig

    def __init__(self, config: NegotiationConfig | None = None, render_mode: str | None = None, **kwargs):
        super().__init__()
        self.config = world_config(NegotiationConfig, config, kwargs)
        self.items = list(self.config.items)
        self.possible_agents = list(self.config.agent_names)
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.agents = []
        self.history: list[str] = []

    # --- spaces (the same object on every call, as PettingZoo's tests require) ----------

    @cached_per_agent
    def observation_space(self, agent: str) -> spaces.Space:
        n, c = len(self.items), self.config
        return spaces.Dict(
            {
                "counts": spaces.Box(0, c.max_count, (n,), dtype=np.int64),
                "values": spaces.Box(0, c.total_value, (n,), dtype=np.int64),
                "offer": spaces.Box(-1, c.max_count, (n,), dtype=np.int64),  # what I'd get; -1 = no offer
                "turn": spaces.Discrete(c.max_turns + 1),
                "history": spaces.Text(
                    max_length=c.max_turns * self._line_chars(), min_length=0, charset=PRINTABLE + "\n"
                ),
            }
        )

    @cached_per_agent
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

    def can_accept(self, agent: str) -> bool:
        """Whether an offer of the other agent stands, so that ACCEPT is legal for `agent` now."""
        return self.offer is not None and self.offer[0] != agent

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
        elif kind == ACCEPT and self.can_accept(agent):
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
            raw = np.asarray(action.get("take", [0] * len(self.items))).reshape(-1)
            take = raw.astype(np.int64)
        except (TypeError, ValueError, OverflowError):
            return None, None, message
        if (
            take.shape != (len(self.items),)
            or not np.array_equal(take, raw)
            or np.any(take < 0)
            or np.any(take > self.counts)
        ):
            take = None
        return kind, take, message

    def _describe(self, kind: int | None, take: np.ndarray | None) -> str:
        if kind == PROPOSE and take is not None:
            return f"{PROPOSE_WORD} {take_text(self.items, take)}"
        return {ACCEPT: ACCEPT_WORDS[0], WALK_AWAY: WALK_AWAY_WORDS[0]}.get(kind, "ILLEGAL")

    def render(self) -> str | None:
        if self.render_mode is None or not self.agents and not self.history:
            return None
        pool = ", ".join(f"{int(c)} {i}" for i, c in zip(self.items, self.counts))
        lines = (
            [f"pool: {pool}"] + [f"values {a}: {self.values[a].tolist()}" for a in self.possible_agents] + self.history
        )
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
        """Rules, the agent's own values, the transcript, the standing offer and the reply format.

        Built from `observation` alone (plus the public config), so nothing private to the other agent leaks.
        """
        other = self.other(agent)
        counts, values = observation["counts"], observation["values"]
        pool = ", ".join(f"{int(c)} {i}" for i, c in zip(self.items, counts))
        mine = ", ".join(f"{i}={int(v)}" for i, v in zip(self.items, values))
        # The fixed instructions come first so that the prompts of one batch share a long prefix
        # (computed once by the LLM policy); the episode's state follows.
        lines = [
            f"You are {agent}, negotiating with {other} over how to split a pool of items.",
            f"{other} values the items differently, and you cannot see their values.",
            f"If a deal is made, your score is the total value of the items you get; "
            f"with no deal, both of you get {self.config.disagreement_value:g}.",
            "Reply with one MESSAGE line and exactly one ACTION line, in this format:",
            f"{MESSAGE_LABEL}<one short line to {other}>",
            f"{ACTION_LABEL}{PROPOSE_WORD} {' '.join(f'{i}=<n>' for i in self.items)}",
            f"{ACTION_LABEL}{WALK_AWAY_WORDS[0]}",
            f"In PROPOSE, name every item once with the number <n> YOU keep; {other} gets the rest. "
            "WALK AWAY ends the game with no deal. In the conversation, PROPOSE lists the items the speaker keeps.",
            "",
            f"Pool: {pool}.",
            f"Your private value of each item: {mine}. The whole pool is worth {split_value(values, counts)} to you.",
        ]
        history = observation["history"]
        lines += (
            ["Conversation so far:", *(f"  {line}" for line in history.split("\n"))]
            if history
            else ["No one has spoken yet."]
        )
        offer = observation["offer"]
        if offer[0] >= 0:
            gets = " ".join(f"{i}={int(g)}" for i, g in zip(self.items, offer))
            lines.append(f"{other}'s offer on the table gives you {gets}, worth {split_value(values, offer)} to you.")
            lines.append(f"You may also reply {ACTION_LABEL}{ACCEPT_WORDS[0]} to take {other}'s offer.")
        else:
            lines.append(f"There is no offer from {other} on the table.")
        left = self.config.max_turns - int(observation["turn"])
        half = {"type": PROPOSE, "take": [int(c) // 2 for c in counts], "message": "I would like half of everything."}
        lines += [
            f"Turns left, this one included: {left}. With no accepted offer by then, there is no deal.",
            "",
            "Example reply:",
            self.render_action(agent, half),
        ]
        return "\n".join(lines)

    @cached_per_agent
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
        keep = {
            "type": PROPOSE,
            "take": [int(c) if v > 0 else 0 for c, v in zip(counts, values)],
            "message": "I need the items I value most; you can have the rest.",
        }
        return [
            {"role": "user", "content": self.prompt(agent, observation)},
            {"role": "assistant", "content": self.render_action(agent, keep)},
        ]

    def parse(self, agent: str, text: str) -> dict[str, Any]:
        """The action named by exactly one `ACTION:` line, plus the optional `MESSAGE:` line.

        Tolerated: letter case, surrounding whitespace, markdown emphasis, a trailing '(comment)' or '.'.
        Not guessed: a missing or ambiguous action, an item left out, a count the pool does not have.
        Reads lines with one regex pass each, so any string costs time linear in its length.
        """
        text = check_reply(text)
        bodies = {action_body(b) for b in set(ACTION_LINE.findall(text))}
        if not bodies:
            raise ParseError(f"no 'ACTION:' line; end with e.g. 'ACTION: PROPOSE {self._example_take()}'")
        if len(bodies) > 1:
            raise ParseError("more than one different ACTION line; give exactly one")
        body = bodies.pop()
        message = message_body(first) if (first := MESSAGE_LINE.search(text)) else ""
        action: dict[str, Any] = {
            "type": None,
            "take": [0] * len(self.items),
            "message": sanitize(message, self.config.max_message_chars),
        }
        if body in ACCEPT_WORDS:
            if not self.can_accept(agent):
                raise ParseError(f"there is no offer from {self.other(agent)} to accept; PROPOSE a split or WALK AWAY")
            action["type"] = ACCEPT
        elif body in WALK_AWAY_WORDS:
            action["type"] = WALK_AWAY
        elif body.startswith(PROPOSE_WORD):
            action["type"], action["take"] = PROPOSE, self._parse_take(body.removeprefix(PROPOSE_WORD))
        else:
            raise ParseError(f"unknown action '{body[:40]}'; use PROPOSE {self._example_take()}, ACCEPT or WALK AWAY")
        return action

    def _parse_take(self, body: str) -> list[int]:
        """'BOOK=1, HAT = 0 BALL:2' -> [1, 0, 2] in item order; every item exactly once, within the pool."""
        pairs = [
            TAKE_PAIR.fullmatch(token) for token in re.split(r"[ ,;]+", re.sub(r" ?([=:]) ?", r"\1", body)) if token
        ]
        if not pairs or not all(pairs):
            raise ParseError(f"write the split as item=count pairs, e.g. 'PROPOSE {self._example_take()}'")
        take: dict[str, str] = {}
        for name, count in (pair.groups() for pair in pairs):
            item = name.lower()
            if item not in self.items:
                raise ParseError(f"unknown item '{item[:20]}'; the items are: {', '.join(self.items)}")
            if item in take:
                raise ParseError(f"'{item}' appears twice; name each item once")
            take[item] = count
        missing = [i for i in self.items if i not in take]
        if missing:
            raise ParseError(f"the proposal must name every item; missing: {', '.join(missing)}")
        for item, pool in zip(self.items, self.counts):
            if len(take[item]) > 4 or not 0 <= int(take[item]) <= pool:
                raise ParseError(
                    f"{item}={take[item][:8]} is impossible: the pool has {int(pool)} {item}, keep 0 to {int(pool)}"
                )
        return [int(take[i]) for i in self.items]

    def _example_take(self) -> str:
        return take_text(self.items, [int(c) // 2 for c in self.counts])

    def render_action(self, agent: str, action: dict[str, Any]) -> str:
        """The reply's canonical form (that of `reply_grammar`): the message as the world keeps it (`sanitize`d to
        `max_message_chars`), no MESSAGE line for an empty one."""
        line = ACTION_LABEL + self._describe(int(action["type"]), action.get("take"))
        message = sanitize(action.get("message", ""), self.config.max_message_chars)
        return f"{MESSAGE_LABEL}{message}\n{line}" if message else line

    def reply_grammar(self, agent: str, observation: dict[str, Any]) -> Grammar:
        """`[MESSAGE: <free text>\n]ACTION: PROPOSE <take> | ACCEPT | WALK AWAY` for `agent` now: the take within
        the pool (`take_grammar`), ACCEPT only when `can_accept`, read from the state `parse` checks.

        The message is one line of at most `max_message_chars` characters (MESSAGE_TOKENS tokens when decoding);
        it cannot hold an ACTION line, since the parser reads only lines that start with the label."""
        actions = [seq(PROPOSE_WORD, " ", take_grammar(self.items, self.counts)), WALK_AWAY_WORDS[0]]
        if self.can_accept(agent):
            actions.insert(1, ACCEPT_WORDS[0])
        action = seq(ACTION_LABEL, alt(*actions))
        chars = self.config.max_message_chars
        if not chars:  # messages are cut to nothing: no line to write
            return Grammar(action)
        message = seq(MESSAGE_LABEL, text(chars, min(MESSAGE_TOKENS, chars)), "\n")
        return Grammar(seq(optional(message), action))

    def fallback_action(self, agent: str, rng: np.random.Generator) -> dict[str, Any]:
        """ACCEPT a standing offer with probability 1/2, else PROPOSE a uniformly random split; never walk away."""
        if self.can_accept(agent) and rng.random() < 0.5:
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
            "pareto_optimal": float(
                deal and is_pareto_optimal(self.counts, self.values[a], self.values[b], self.deal[a])
            ),
            "nash_product": (self.scores[a] - d) * (self.scores[b] - d) if deal else 0.0,
            "turns": float(self.turn),
            "walk_away": float(self.outcome == "walk_away"),
            "illegal": float(self.outcome == "illegal"),
        }
        metrics.update({f"score/{agent}": self.scores[agent] for agent in self.possible_agents})
        return metrics
