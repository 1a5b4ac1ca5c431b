"""Scripted learners for the online-learning world: Hedge, follow-the-leader, uniform.

Each acts on the structured observation (the loss vectors revealed so far) and plays a
distribution over the actions (solvers/regret.py has the same rules on whole sequences).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig


def revealed_losses(observation: dict) -> np.ndarray:
    """ℓ_1..ℓ_{t−1}: the rows of the observation already revealed."""
    return np.asarray(observation["losses"], dtype=np.float64)[: int(observation["round"])]


class Hedge(Policy):
    """Hedge / multiplicative weights: p_t(a) ∝ exp(−η·Σ_{s<t} ℓ_s(a)), η = sqrt(8 ln n / T) by default
    (Reg_T ≤ sqrt(T ln n / 2) for losses in [0, 1]): a no-regret learner."""

    class Config(PolicyConfig):
        eta: float | None = Field(
            None, gt=0, description="learning rate; default sqrt(8 ln n / T), T = the episode's rounds"
        )

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            T, n = np.asarray(request.observation["losses"]).shape
            eta = self.config.eta or np.sqrt(8 * np.log(n) / T)
            logits = -eta * revealed_losses(request.observation).sum(axis=0)
            weights = np.exp(logits - logits.max())
            out.append(ActResponse("", weights / weights.sum()))
        return out


class FollowTheLeader(Policy):
    """FTL: all mass on the action with the least total loss so far (lowest index on ties)."""

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            n = np.asarray(request.observation["losses"]).shape[1]
            out.append(ActResponse("", np.eye(n)[int(np.argmin(revealed_losses(request.observation).sum(axis=0)))]))
        return out


class Uniform(Policy):
    """The uniform distribution every round (no learning: linear regret against a fixed best action)."""

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            n = np.asarray(request.observation["losses"]).shape[1]
            out.append(ActResponse("", np.full(n, 1.0 / n)))
        return out
