"""Scripted negotiators: baselines that act on the observation (counts, own values, standing offer)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig
from worlds.negotiation import ACCEPT, PROPOSE, WALK_AWAY, all_splits, split_value


def offer_value(observation) -> int | None:
    """Value to me of the other agent's standing offer (None when there is none)."""
    offer = observation["offer"]
    return None if offer[0] < 0 else split_value(observation["values"], offer)


def propose(take, message: str = "") -> dict:
    return {"type": PROPOSE, "take": [int(t) for t in take], "message": message}


def accept(n_items: int, message: str = "") -> dict:
    return {"type": ACCEPT, "take": [0] * n_items, "message": message}


class ThresholdNegotiator(Policy):
    """Accepts a standing offer worth at least `ratio()` of its pool value, else proposes `proposal()`."""

    accept_message = propose_message = ""

    def ratio(self) -> float:
        raise NotImplementedError

    def proposal(self, counts, values, target: float):
        raise NotImplementedError

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            obs = request.observation
            target = self.ratio() * split_value(obs["values"], obs["counts"])
            value = offer_value(obs)
            if value is not None and value >= target:
                out.append(ActResponse("", accept(len(obs["counts"]), self.accept_message)))
            else:
                take = self.proposal(obs["counts"], obs["values"], target)
                out.append(ActResponse("", propose(take, self.propose_message)))
        return out


class GreedyNegotiator(ThresholdNegotiator):
    """Keeps every item it values; accepts only offers worth at least `accept_ratio` of its pool value."""

    accept_message, propose_message = "Deal.", "I need everything I value; you can have the rest."

    class Config(PolicyConfig):
        accept_ratio: float = Field(
            0.8, ge=0.0, le=1.0, description="share of its pool value an offer must reach to be accepted"
        )

    def ratio(self) -> float:
        return self.config.accept_ratio

    def proposal(self, counts, values, target: float):
        return np.where(np.asarray(values) > 0, np.asarray(counts), 0)


class FairNegotiator(ThresholdNegotiator):
    """Asks for about `target_ratio` of its pool value with as few items as possible; accepts offers reaching it."""

    accept_message, propose_message = "That is fair, I accept.", "Let us split this fairly."

    class Config(PolicyConfig):
        target_ratio: float = Field(0.5, ge=0.0, le=1.0, description="share of its pool value it asks for and accepts")

    def ratio(self) -> float:
        return self.config.target_ratio

    def proposal(self, counts, values, target: float) -> tuple[int, ...]:
        return self.fair_split(counts, values, target)

    @staticmethod
    def fair_split(counts, values, target: float) -> tuple[int, ...]:
        """Fewest items kept with own value >= target; ties: higher own value, then lexicographic."""
        reaching = [t for t in all_splits(counts) if split_value(values, t) >= target]
        return min(reaching, key=lambda t: (sum(t), -split_value(values, t), t))


class RandomNegotiator(Policy):
    """Random legal actions: accepts a standing offer with `accept_prob`, walks away with `walk_prob`, else proposes."""

    class Config(PolicyConfig):
        accept_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability of accepting a standing offer")
        walk_prob: float = Field(0.0, ge=0.0, le=1.0, description="probability of walking away on a turn")

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            obs, rng = request.observation, self.rng_for(request)
            n = len(obs["counts"])
            if rng.random() < self.config.walk_prob:
                action = {"type": WALK_AWAY, "take": [0] * n, "message": ""}
            elif obs["offer"][0] >= 0 and rng.random() < self.config.accept_prob:
                action = accept(n)
            else:
                action = propose([rng.integers(int(c) + 1) for c in obs["counts"]])
            out.append(ActResponse("", action))
        return out
