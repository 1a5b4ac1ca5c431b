"""Scripted economy agents: best-response workers and baseline tax planners (Saez, US federal, flat,
hill-climbing). All act on the structured observation; workers are solved in one vectorised call
per schedule, so a step of 10,000 workers costs one numpy pass, not 10,000 Python solves.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import Field

from agora.errors import ScenarioError
from agora.policy import ActRequest, ActResponse, Policy, PolicyParams
from worlds.economy import (
    BRACKETS,
    PLANNER,
    REFERENCE_HOURS,
    US_FEDERAL_RATES,
    best_response_labor,
    saez_rates,
)


def check_seats(requests: list[ActRequest], planner: bool, policy: str) -> None:
    """A scripted worker in the planner's seat (or the reverse) is a scenario mistake, not a crash."""
    for request in requests:
        if (request.agent == PLANNER) != planner:
            role = "the planner" if planner else "workers"
            raise ScenarioError(
                f"'{policy}' plays {role} only, but was given seat '{request.agent}'",
                path=f"agents.{request.agent}",
                hint="planners: saez, us_federal, flat, hill_climbing, llm; workers: best_response, llm",
            )


class BestResponseWorker(Policy):
    """Works the exact utility-maximising hours under the schedule it sees (`best_response_labor`)."""

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, False, "best_response")
        groups: dict[tuple, list[int]] = defaultdict(list)  # requests under the same schedule are solved together
        for k, request in enumerate(requests):
            obs = request.observation
            key = (obs["cutoffs"].tobytes(), obs["rates"].tobytes(), obs["utility_params"].tobytes())
            groups[key].append(k)
        out: list[ActResponse | None] = [None] * len(requests)
        for members in groups.values():
            obs = requests[members[0]].observation
            skills = np.fromiter((requests[k].observation["skill"] for k in members), dtype=np.float64, count=len(members))
            c, delta, share = obs["utility_params"]
            labor = best_response_labor(skills, obs["cutoffs"], obs["rates"], c, delta, share)
            for k, hours in zip(members, labor):
                out[k] = ActResponse("", np.array(hours))
        return out


class SaezPlanner(Policy):
    """Sets the Saez optimal rates for the population's incomes at the 40-hour reference, z_i = 40·v_i.

    The income sample is each worker's skill times 40 h (the hours the skills were calibrated
    with: v = annual income / 40), not times 100 h as in the published code.
    """

    class Params(PolicyParams):
        elasticity: float = Field(0.4, gt=0, le=10, description="labor elasticity e of the Saez formula (1/(δ−1) = 0.4 by default)")

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "saez")
        out = []
        for request in requests:
            obs = request.observation
            out.append(ActResponse("", saez_rates(REFERENCE_HOURS * obs["skills"], obs["cutoffs"], self.params.elasticity)))
        return out


def federal_marginal_rates(cutoffs) -> np.ndarray:
    """The 2024 US federal marginal rate at each cutoff b_j (the federal schedule itself on its own brackets)."""
    federal = np.asarray(BRACKETS["us_federal"], dtype=np.float64)
    index = np.searchsorted(federal, np.asarray(cutoffs, dtype=np.float64), side="right") - 1
    return np.asarray(US_FEDERAL_RATES, dtype=np.float64)[index]


class FederalPlanner(Policy):
    """Sets the 2024 US federal rates: exact on `us_federal` brackets; on other bracket sets, the
    federal marginal rate at each bracket's lower cutoff."""

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "us_federal")
        return [ActResponse("", federal_marginal_rates(r.observation["cutoffs"])) for r in requests]


class FlatPlanner(Policy):
    """One marginal rate for every bracket."""

    class Params(PolicyParams):
        rate: float = Field(25.0, ge=0, le=100, description="the flat marginal rate, percent")

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "flat")
        return [ActResponse("", np.full(len(r.observation["rates"]), self.params.rate)) for r in requests]


class HillClimbingPlanner(Policy):
    """Coordinate hill climbing on the period SWF with the paper's moves (±10 points on one bracket).

    Keeps the best schedule seen and its SWF. Each decision scores the trial that governed the last
    period: a better one becomes the best and the same move is tried again from it; a worse one is
    dropped and the next move is tried (bracket j up, j down, then j + 1, ...). Every decision is a
    legal Δ ∈ {−20, −10, 0, +10, +20} per bracket from the schedule in force. State is kept per
    episode.
    """

    step = 10  # percentage points: a trial then differs from the schedule in force by at most 20 on a bracket

    def __init__(self, params: PolicyParams, *, seed: int):
        super().__init__(params, seed=seed)
        self.state: dict[int, dict] = {}

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "hill_climbing")
        return [ActResponse("", self.decide(r.episode, r.observation)) for r in requests]

    def decide(self, episode: int, obs: dict) -> np.ndarray:
        rates, swf = np.asarray(obs["rates"], dtype=np.float64), float(obs["period_swf"][0])
        state = self.state.get(episode)
        if state is None or int(obs["step"]) <= state["step"]:  # a new episode in this slot
            state = self.state[episode] = {"best": rates.copy(), "best_swf": swf, "move": 0, "step": int(obs["step"])}
        else:
            state["step"] = int(obs["step"])
            if swf > state["best_swf"]:
                state["best"], state["best_swf"] = rates.copy(), swf  # keep the same move
            else:
                state["move"] += 1
        best, moves = state["best"], 2 * len(rates)
        for _ in range(moves):  # the next move that changes the schedule (a rate at 0 cannot go down)
            j, sign = divmod(state["move"] % moves, 2)
            trial = best.copy()
            trial[j] = np.clip(trial[j] + (-1 if sign else 1) * self.step, 0.0, 100.0)
            if trial[j] != best[j]:
                return trial
            state["move"] += 1
        return best.copy()
