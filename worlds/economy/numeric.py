"""The economy's numeric view (agora.compat): hours on a grid for the workers, one-bracket moves for the planner,
and the whole economy as the state of a centralised critic."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from agora.compat import NumericWorld
from worlds.economy.rules import MAX_LABOR, PLANNER, PLANNER_DELTAS

HOURS_GRID = np.linspace(0.0, MAX_LABOR, 11)  # the workers' choices: 0, 10, ..., 100 hours
MOVES = tuple(d for d in PLANNER_DELTAS if d != 0)  # the planner's moves of one bracket, percentage points


class EconomyNumeric(NumericWorld):
    """Table: `LABOR h` for h on HOURS_GRID (the workers'), `KEEP` (the planner's between its decisions, and a
    choice on them), then `bracket j <delta>` for each bracket and nonzero delta of PLANNER_DELTAS: one bracket
    moves per decision (an LLM planner moves all at once). Masks: workers their hours; the planner KEEP, and on
    its decision steps the moves that keep the rate within 0-100%. Democratic mode has no numeric view."""

    def action_table(self) -> list[str]:
        if self.config.democratic:
            raise ValueError(
                "the numeric view covers the planner's economy; set `democratic: false` (elections have no table)"
            )
        hours = [f"LABOR {h:g}" for h in HOURS_GRID]
        moves = [f"bracket {j} {d:+d}" for j in range(len(self.cutoffs)) for d in MOVES]
        return [*hours, "KEEP", *moves]

    def table_action(self, agent: str, index: int) -> Any:
        if index < len(HOURS_GRID):
            return np.array(HOURS_GRID[index])
        rates = self.rates.copy()
        if index > len(HOURS_GRID):
            bracket, move = divmod(index - len(HOURS_GRID) - 1, len(MOVES))
            rates[bracket] = np.clip(rates[bracket] + MOVES[move], 0.0, 100.0)
        return rates

    def action_mask(self, agent: str) -> np.ndarray:
        mask = np.zeros(len(HOURS_GRID) + 1 + len(self.cutoffs) * len(MOVES), dtype=np.int8)
        if agent != PLANNER:
            mask[: len(HOURS_GRID)] = 1
            return mask
        mask[len(HOURS_GRID)] = 1
        if self.agents and self.is_planning_step():
            moved = self.rates[:, None] + np.asarray(MOVES)[None, :]  # (bracket, move)
            mask[len(HOURS_GRID) + 1 :] = ((moved >= 0) & (moved <= 100)).reshape(-1)
        return mask

    @property
    def state_space(self) -> spaces.Box:
        """The step, the schedule, every worker's skill, last labor and income, and this period's mean SWF."""
        n, b = self.config.num_workers, len(self.cutoffs)
        low = np.r_[0, np.zeros(b), np.zeros(3 * n), -np.inf].astype(np.float32)
        high = np.r_[self.config.steps, np.full(b, 100.0), np.full(3 * n, np.inf), np.inf].astype(np.float32)
        high[1 + b + n : 1 + b + 2 * n] = MAX_LABOR
        return spaces.Box(low, high, dtype=np.float32)

    def state(self) -> np.ndarray:
        swf = np.mean(self.period_swf) if self.period_swf else 0.0
        return np.r_[self.t, self.rates, self.skills, self.labor, self.incomes, swf].astype(np.float32)
