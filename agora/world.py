"""What Agora needs from a world beyond the PettingZoo API: a text interface and episode metrics.

A world is a PettingZoo `AECEnv` or `ParallelEnv`. To be played by language agents it also
implements `TextWorld`: it renders a prompt from an agent's observation and strictly parses a
reply into a legal action, raising `ParseError` (with a message the agent can act on) otherwise.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


def cached_per_agent(method):
    """Cache `method(self, agent, ...)` on the instance: one object per agent (per argument tuple), as
    PettingZoo's API tests want for spaces.

    Unlike `functools.lru_cache` on a method, whose class-level cache holds every instance ever
    asked, this keeps nothing alive once a world is dropped (a long run builds thousands).
    """
    name = f"_cached_{method.__name__}"

    @functools.wraps(method)
    def wrapper(self, *args):
        cache = self.__dict__.setdefault(name, {})
        if args not in cache:
            cache[args] = method(self, *args)
        return cache[args]

    return wrapper


class ParseError(ValueError):
    """Agent text that the world cannot turn into a legal action. The message is shown to the agent."""


PRINTABLE = "".join(chr(c) for c in range(32, 127))  # the charset of agents' free text in worlds: printable ASCII


def world_config(config_class: type, config: Any, settings: dict[str, Any]) -> Any:
    """A world's config: the `config` object given, or one built from keyword `settings` (not both)."""
    if config is not None and settings:
        raise TypeError(f"pass either a {config_class.__name__} object or keyword settings, not both")
    return config or config_class(**settings)


NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
# What chat templates use as control tokens: '<|im_start|>', '<|eot_id|>' (ChatML, Llama 3, Phi), '<s>',
# '</s>', '<start_of_turn>', '<file_sep>' (tags), '[INST]', '[/INST]' (Mistral). Bounded, so matching is linear.
SPECIAL_TOKEN_MARKUP = re.compile(r"<\|[^<>|]{0,64}\|>|</?[A-Za-z_][\w.:-]{0,63}>|\[/?[A-Z_]{2,64}\]")
# C0 and C1 control characters but tab, line feed and carriage return; DEL; lone surrogates (undecodable bytes)
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029]")  # the line breaks of str.splitlines that are not control characters
MAX_REPLY_CHARS = 32_000  # longer replies are parse failures (about 8,000 tokens: far more than any world asks for)


def sanitize(text: Any, limit: int) -> str:
    """Free agent text as one line of printable ASCII, at most `limit` characters (other characters become '?').

    Other agents read it in their prompts, so markup that looks like a chat template's control token has its
    brackets replaced by '?' too ('<|im_start|>' -> '?|im_start|?'): one agent's text never forges another's turn.
    """
    line = " ".join(str(text).split())[: limit + 80]  # the first `limit` characters and any markup they start
    line = NOT_PRINTABLE.sub("?", line)
    while SPECIAL_TOKEN_MARKUP.search(line):  # each pass removes brackets, so this ends
        line = SPECIAL_TOKEN_MARKUP.sub(lambda m: "?" + m[0][1:-1] + "?", line)
    return line[:limit].strip()


def check_reply(text: Any) -> str:
    """`text`, with every line break written '\\n', if it can be a reply at all: a string of at most
    MAX_REPLY_CHARS characters with no control characters but tabs and line breaks (binary noise is no
    reply); else a ParseError saying which.

    Worlds call it first in `parse`, so no later step sees an unbounded or binary text, and read lines with
    one MULTILINE regex pass ('^' and '.' then agree with `str.splitlines`) rather than a Python loop per line.
    """
    if not isinstance(text, str):
        raise ParseError("the reply must be text")
    if len(text) > MAX_REPLY_CHARS:
        raise ParseError(
            f"the reply has {len(text)} characters, more than {MAX_REPLY_CHARS}; reply in the format asked"
        )
    if CONTROL_CHARACTERS.search(text):
        raise ParseError("the reply contains control characters or invalid text; reply in plain text")
    return LINE_BREAKS.sub("\n", text)


@runtime_checkable
class TextWorld(Protocol):
    """The text interface of a world (a PettingZoo `AECEnv` or `ParallelEnv` class with a pydantic `Config`,
    built as `World(config)`). Optional: the hooks below (`demonstration`, `reply_grammar`, `run_report`,
    `episode_info`, `passive_action`), `metric_labels` (metric -> label in `agora run`'s summary) and
    `small_config` (settings of a small, quick instance, used by the conformance test)."""

    def prompt(self, agent: str, observation: Any) -> str:
        """The full instruction + state text an agent sees before acting."""

    def parse(self, agent: str, text: str) -> Any:
        """The legal action that `text` names for `agent` now; raises `ParseError` otherwise."""

    def render_action(self, agent: str, action: Any) -> str:
        """`action` written in the reply format that `parse` reads (parse(render_action(a)) == a)."""

    def fallback_action(self, agent: str, rng: np.random.Generator) -> Any:
        """A legal action drawn from `rng`, taken when an agent's text cannot be parsed."""

    def episode_metrics(self) -> dict[str, float]:
        """Scalar outcome metrics of the finished episode (e.g. `agreement`, `score/alice`)."""


def demonstration(world, agent: str) -> list[dict[str, str]]:
    """The world's worked example for `agent` (a user prompt + an ideal reply), or none.

    Optional for worlds: `demonstration(agent) -> list of chat messages`. Small models follow
    a reply format far more often after one example exchange; LLM policies may show it first.
    """
    method = getattr(world, "demonstration", None)
    return method(agent) if method else []


@dataclass
class Report:
    """What a world adds to a run's record beyond per-episode metrics (worlds never import mlflow).

    Built by the optional world method `run_report(episodes) -> Report`, called once at the end of
    a run on a fresh world with the run's config. Figures are `matplotlib.figure.Figure` objects
    (build them with `Figure()`, not pyplot, so no display backend is needed).
    """

    metrics: dict[str, float] = field(default_factory=dict)  # run-level, e.g. {"eval/vote_accuracy": 0.6}
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    tables: dict[str, dict[str, list]] = field(default_factory=dict)  # artifact file (.json) -> columns
    figures: dict[str, Any] = field(default_factory=dict)  # artifact file (.png) -> Figure
    texts: dict[str, str] = field(default_factory=dict)  # artifact file -> text (e.g. an edge list)


def run_report(world, episodes: list) -> Report:
    """The world's end-of-run report, or an empty one for worlds without `run_report`."""
    method = getattr(world, "run_report", None)
    return method(episodes) if method else Report()


def episode_info(world) -> dict[str, Any]:
    """Structured facts of a finished episode for analysis (e.g. hidden roles, vote log), JSON-able.

    Optional for worlds: `episode_info() -> dict`. Stored in `Episode.info` and the trajectories.
    """
    method = getattr(world, "episode_info", None)
    return method() if method else {}


def reply_grammar(world, agent: str, observation: Any):
    """The language of `agent`'s legal replies now (an `agora.grammar.Grammar`), or None.

    Optional for worlds: `reply_grammar(agent, observation) -> Grammar`, built from the same
    definitions as `parse` (every reply in the language parses; every legal action's
    `render_action` is in it) and per turn where legality depends on the state. Text policies
    decode under it, so that every reply parses (unless a policy is configured `constrained: false`).
    """
    method = getattr(world, "reply_grammar", None)
    return method(agent, observation) if method else None


def passive_action(world, agent: str) -> Any:
    """For Parallel worlds: the action `agent` takes this step without deciding, or None.

    Optional for worlds: `passive_action(agent) -> action | None`. Agents that act on their own
    timescale (an economy's tax planner, an expert nobody asked) return a no-op here between
    their decisions, so the engine neither asks their policy nor records a step.
    """
    method = getattr(world, "passive_action", None)
    return method(agent) if method else None
