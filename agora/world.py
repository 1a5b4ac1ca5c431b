"""What Agora needs from a world beyond the PettingZoo API: a text interface and episode metrics.

A world is a PettingZoo `AECEnv` or `ParallelEnv`. To be played by language agents it also
implements `TextWorld`: it renders a prompt from an agent's observation and strictly parses a
reply into a legal action, raising `ParseError` (with a message the agent can act on) otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


class ParseError(ValueError):
    """Agent text that the world cannot turn into a legal action. The message is shown to the agent."""


@runtime_checkable
class TextWorld(Protocol):
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
