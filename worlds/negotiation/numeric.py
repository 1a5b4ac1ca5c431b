"""Negotiation's numeric view (agora.compat): an action table of every split of the largest pool, ACCEPT and
WALK AWAY (messages are empty), masks from the pool and the standing offer, and the full state for a critic."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from agora.compat import NumericWorld
from worlds.negotiation.rules import (
    ACCEPT,
    ACCEPT_WORDS,
    PROPOSE,
    PROPOSE_WORD,
    WALK_AWAY,
    WALK_AWAY_WORDS,
    all_splits,
    take_text,
)


class NegotiationNumeric(NumericWorld):
    """Table: `PROPOSE take` for every take in [0, max_count]^items (a take larger than this episode's pool is
    masked), then ACCEPT (legal while the other agent's offer stands), then WALK AWAY (always legal)."""

    def takes(self) -> list[tuple[int, ...]]:
        return all_splits([self.config.max_count] * len(self.items))

    def action_table(self) -> list[str]:
        proposals = [f"{PROPOSE_WORD} {take_text(self.items, take)}" for take in self.takes()]
        return [*proposals, ACCEPT_WORDS[0], WALK_AWAY_WORDS[0]]

    def table_action(self, agent: str, index: int) -> dict[str, Any]:
        takes, blank = self.takes(), [0] * len(self.items)
        if index < len(takes):
            return {"type": PROPOSE, "take": list(takes[index]), "message": ""}
        return {"type": ACCEPT if index == len(takes) else WALK_AWAY, "take": blank, "message": ""}

    def action_mask(self, agent: str) -> np.ndarray:
        takes = np.asarray(self.takes(), dtype=np.int64)
        within = np.all(takes <= self.counts, axis=1)
        return np.concatenate([within, [self.can_accept(agent), True]]).astype(np.int8)

    @property
    def state_space(self) -> spaces.Box:
        """Pool counts, each agent's values, what each agent would get under the standing offer (-1: none), the
        turn, and who moves (one-hot): everything both agents know together."""
        n, c = len(self.items), self.config
        high = [c.max_count] * n + [c.total_value] * 2 * n + [c.max_count] * 2 * n + [c.max_turns, 1, 1]
        low = [0] * 3 * n + [-1] * 2 * n + [0, 0, 0]
        return spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)

    def state(self) -> np.ndarray:
        a, b = self.possible_agents
        offers = np.full((2, len(self.items)), -1, dtype=np.int64)
        if self.offer is not None:
            proposer, kept = self.offer
            offers[self.possible_agents.index(proposer)] = kept
            offers[1 - self.possible_agents.index(proposer)] = self.counts - kept
        mover = [float(self.agent_selection == a), float(self.agent_selection == b)]
        parts = [self.counts, self.values[a], self.values[b], offers.reshape(-1), [self.turn], mover]
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
