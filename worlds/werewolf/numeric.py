"""Werewolf's numeric view (agora.compat): one table of targets for every seat and phase (a seating position,
or nobody; statements are empty), the world's target mask, and the whole game state for a centralised critic."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from agora.compat import NumericWorld
from worlds.werewolf.rules import PHASES, ROLES


class WerewolfNumeric(NumericWorld):
    """Table: `target <name>` per seating position, then `nobody`. What a target means is the phase's: the kill,
    inspection or protection at night, the accusation in the discussion, the vote by day. The observation keeps
    every numeric field (the seer's results are in `known`); the transcript and notes (text) are dropped."""

    def action_table(self) -> list[str]:
        return [f"target {name}" for name in self.names] + ["nobody"]

    def table_action(self, agent: str, index: int) -> dict[str, Any]:
        return {"target": int(index), "statement": ""}

    def action_mask(self, agent: str) -> np.ndarray:
        if not self.agents or self.winner is not None:
            return np.zeros(self.n + 1, dtype=np.int8)
        return self._mask(agent)

    @property
    def state_space(self) -> spaces.Box:
        """Each seat's position and role, who lives, the day, the phase (one-hot), the mover's position
        (one-hot), every vote and accusation so far and the seer claims: the hidden roles included."""
        n, c = self.n, self.config
        statements = max(1, c.max_days * c.discussion_rounds * n)
        high = [n - 1] * n + [len(ROLES) - 1] * n + [1] * n + [c.max_days] + [1] * (len(PHASES) + n)
        high += [n] * 2 * c.max_days * n + [statements] * n
        low = [0] * (3 * n + 1 + len(PHASES) + n) + [-1] * 2 * c.max_days * n + [0] * n
        return spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)

    def state(self) -> np.ndarray:
        n = self.n
        positions = [self.position[seat] for seat in self.possible_agents]
        roles = [self.roles[p] for p in positions]
        phase = np.eye(len(PHASES))[self.phase]
        mover = np.zeros(n)
        if self.winner is None:
            mover[self.position[self.agent_selection]] = 1
        parts = [positions, roles, self.alive, [self.day], phase, mover, self.votes.reshape(-1)]
        parts += [self.accusations.reshape(-1), self.seer_claims]
        return np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in parts])
