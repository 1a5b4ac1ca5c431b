"""Scripted players for repeated matrix games (actions are indices into the game's action list)."""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from agora.policy import ActRequest, ActResponse, Policy, PolicyParams


class MixedStrategy(Policy):
    """Plays a fixed mixed strategy every round: uniform, or `probs`."""

    class Params(PolicyParams):
        probs: list[float] | None = Field(None, description="probability of each action, in the game's order; default uniform")

        @field_validator("probs")
        @classmethod
        def _distribution(cls, probs: list[float] | None) -> list[float] | None:
            if probs is not None and (min(probs) < 0 or abs(sum(probs) - 1) > 1e-6):
                raise ValueError("probs must be non-negative and sum to 1")
            return probs

    def __init__(self, params: Params, *, seed: int):
        super().__init__(params, seed=seed)
        self.rng = np.random.default_rng(seed)

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            n = int(request.action_space.n)
            probs = self.params.probs
            if probs is not None and len(probs) != n:
                raise ValueError(f"probs has {len(probs)} entries but the game has {n} actions")
            out.append(ActResponse("", int(self.rng.choice(n, p=probs))))
        return out


class TitForTat(Policy):
    """Opens with `first`, then repeats the opponent's previous action."""

    class Params(PolicyParams):
        first: int = Field(0, ge=0, description="index of the opening action (0 = cooperate in the prisoner's dilemma)")

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            rounds = int(request.observation["round"])
            action = self.params.first if rounds == 0 else int(request.observation["history"][rounds - 1, 1])
            out.append(ActResponse("", min(action, int(request.action_space.n) - 1)))
        return out
