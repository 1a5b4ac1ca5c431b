"""Scripted players for repeated matrix games (actions are indices into the game's action list)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig
from worlds.matrix import GAMES


class MixedStrategy(Policy):
    """Plays a fixed mixed strategy every round: uniform, or `probs`."""

    class Config(PolicyConfig):
        probs: list[float] | None = Field(
            None, description="probability of each action, in the game's order; default uniform"
        )

        @field_validator("probs")
        @classmethod
        def _distribution(cls, probs: list[float] | None) -> list[float] | None:
            if probs is not None and (min(probs) < 0 or abs(sum(probs) - 1) > 1e-6):
                raise ValueError("probs must be non-negative and sum to 1")
            return probs

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            n = int(request.action_space.n)
            probs = self.config.probs
            if probs is not None and len(probs) != n:
                raise ValueError(f"probs has {len(probs)} entries but the game has {n} actions")
            out.append(ActResponse("", int(self.rng_for(request).choice(n, p=probs))))
        return out


class TitForTat(Policy):
    """Opens with `first`, then repeats the opponent's previous action."""

    class Config(PolicyConfig):
        first: int = Field(0, ge=0, description="index of the opening action (0 = cooperate in the prisoner's dilemma)")

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            rounds = int(request.observation["round"])
            action = self.config.first if rounds == 0 else int(request.observation["history"][rounds - 1, 1])
            out.append(ActResponse("", min(action, int(request.action_space.n) - 1)))
        return out


class Hedge(Policy):
    """Hedge (multiplicative weights) with full information: p(a) ∝ exp(η·Σ_s u(a, b_s)) over the
    opponent's past actions b_s; η = sqrt(8 ln n / rounds) / (payoff range). A no-regret learner."""

    class Config(PolicyConfig):
        game: Literal["rock_paper_scissors", "matching_pennies", "prisoners_dilemma"] = Field(
            "rock_paper_scissors", description="the named game whose payoff table the learner knows"
        )
        seat: int = Field(0, ge=0, le=1, description="0 = row player (player_0), 1 = column player")
        eta: float | None = Field(None, gt=0, description="learning rate; default sqrt(8 ln n / rounds) / payoff range")

    def __init__(self, config: Config, *, seed: int):
        super().__init__(config, seed=seed)
        payoffs = np.asarray(GAMES[config.game][1], dtype=np.float64)
        self.own = payoffs[..., 0] if config.seat == 0 else payoffs[..., 1].T  # own[mine, theirs]

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            n = int(request.action_space.n)
            if n != len(self.own):
                raise ValueError(f"hedge knows {self.config.game} ({len(self.own)} actions); the world has {n}")
            history = request.observation["history"]
            rounds = int(request.observation["round"])
            spread = float(self.own.max() - self.own.min()) or 1.0
            eta = self.config.eta or np.sqrt(8 * np.log(n) / len(history)) / spread
            gains = self.own[:, history[:rounds, 1]].sum(axis=1) if rounds else np.zeros(n)
            logits = eta * (gains - gains.max())
            probs = np.exp(logits) / np.exp(logits).sum()
            out.append(ActResponse("", int(self.rng_for(request).choice(n, p=probs))))
        return out


class TabularSoftmax(Policy):
    """A learnable stationary strategy: π(a) = softmax(θ)_a, the same every round.

    `θ` (`logits`) is what a trainer updates (PSRO's `train` oracle: policy gradient,
    ∇_θ log π(a) = e_a − π); `probs` sets the starting strategy (θ = log probs, so every
    entry must be > 0), default uniform.
    """

    class Config(PolicyConfig):
        probs: list[float] | None = Field(
            None, description="starting strategy, in the game's action order, every entry > 0; default uniform"
        )

        @field_validator("probs")
        @classmethod
        def _interior(cls, probs: list[float] | None) -> list[float] | None:
            if probs is not None and (min(probs) <= 0 or abs(sum(probs) - 1) > 1e-6):
                raise ValueError("probs must be > 0 (the logits are log probs) and sum to 1")
            return probs

    def __init__(self, config: Config, *, seed: int, n_actions: int | None = None):
        super().__init__(config, seed=seed)
        n = len(config.probs) if config.probs is not None else n_actions
        self.logits = (
            np.log(np.asarray(config.probs, dtype=np.float64))
            if config.probs is not None
            else (np.zeros(n) if n else None)
        )

    @property
    def probs(self) -> np.ndarray:
        z = np.exp(self.logits - self.logits.max())
        return z / z.sum()

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            n = int(request.action_space.n)
            if self.logits is None:
                self.logits = np.zeros(n)
            if len(self.logits) != n:
                raise ValueError(f"the tabular strategy has {len(self.logits)} entries but the game has {n} actions")
            out.append(ActResponse("", int(self.rng_for(request).choice(n, p=self.probs))))
        return out
