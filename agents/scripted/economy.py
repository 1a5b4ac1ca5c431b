"""Scripted economy agents: best-response workers and baseline tax planners (Saez, US federal, flat,
hill-climbing). All act on the structured observation; workers are solved in one vectorised call
per schedule, so a step of 10,000 workers costs one numpy pass, not 10,000 Python solves.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import Field

from agora.errors import ScenarioError
from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig
from worlds.economy.rules import (
    BRACKETS,
    PLANNER,
    PLANNER_DELTAS,
    REFERENCE_HOURS,
    STAND,
    US_FEDERAL_RATES,
    VOTE,
    best_response_labor,
    best_response_value,
    platform_deltas,
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
    """Works the exact utility-maximising hours under the schedule it sees (`best_response_labor`).

    Democratic mode: a self-interested, myopic voter. On a stand step it stands with probability
    `stand_probability` (seeded), with the platform that maximises its own best-response value
    V(τ) = max_l v·l − (1 − 1/N)·T(v·l) − c·l^δ (others' taxes, the rest of the rebate, held fixed)
    found by one coordinate pass over the brackets (ties: the smaller change); on a vote step it
    votes for the candidate whose platform gives it the highest V (ties: the first candidate).
    """

    seats = "worker_*"  # the seats it plays

    class Config(PolicyConfig):
        stand_probability: float = Field(
            0.3, ge=0, le=1, description="democratic mode: chance a worker stands as a candidate each tax period"
        )

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
            skills = np.fromiter(
                (requests[k].observation["skill"] for k in members), dtype=np.float64, count=len(members)
            )
            c, delta, share = obs["utility_params"]
            labor = best_response_labor(skills, obs["cutoffs"], obs["rates"], c, delta, share)
            if "phase" not in obs:
                for k, hours in zip(members, labor):
                    out[k] = ActResponse("", np.array(hours))
                continue
            phase = int(obs["phase"])  # one step: the same phase for all of a schedule's workers
            platforms = best_platforms(skills, obs) if phase == STAND else None
            votes = best_votes(skills, obs) if phase == VOTE else None
            stands = [  # each worker's own draw (only on stand steps: a generator per worker costs ~25 us)
                platforms is not None and self.rng_for(requests[k]).random() < self.config.stand_probability
                for k in members
            ]
            for i, (k, hours) in enumerate(zip(members, labor)):
                action = {
                    "labor": np.array(hours),
                    "stand": 0,
                    "platform": np.zeros(len(obs["rates"]), dtype=np.int64),
                    "vote": -1,
                }
                if platforms is not None and stands[i]:
                    action.update(stand=1, platform=platforms[i])
                if votes is not None:
                    action["vote"] = int(votes[i])
                out[k] = ActResponse("", action)
        return out


DELTA_ORDER = np.argsort(
    np.abs(PLANNER_DELTAS), kind="stable"
)  # indices of 0, -10, +10, -20, +20: ties pick the smaller change


def best_platforms(skills: np.ndarray, obs: dict) -> np.ndarray:
    """Each worker's platform (indices into PLANNER_DELTAS): one coordinate-ascent pass over the
    brackets on its best-response value V under the current schedule + platform."""
    c, delta, share = obs["utility_params"]
    rates = np.asarray(obs["rates"], dtype=np.float64)
    zero = PLANNER_DELTAS.index(0)
    chosen = np.full((len(skills), len(rates)), zero, dtype=np.int64)
    for j in range(len(rates)):
        values = []
        for d in DELTA_ORDER:
            trial = chosen.copy()
            trial[:, j] = d
            values.append(_values(skills, obs["cutoffs"], rates, trial, c, delta, share))
        chosen[:, j] = DELTA_ORDER[np.argmax(np.stack(values, axis=1), axis=1)]
    return chosen


def best_votes(skills: np.ndarray, obs: dict) -> np.ndarray:
    """Each worker's vote: the candidate (worker index) whose platform gives it the highest V; -1 without candidates."""
    standing = np.flatnonzero(obs["candidates"])
    if len(standing) == 0:
        return np.full(len(skills), -1)
    c, delta, share = obs["utility_params"]
    rates = np.asarray(obs["rates"], dtype=np.float64)
    unique, which = np.unique(obs["platforms"][standing], axis=0, return_inverse=True)
    values = np.stack(
        [
            best_response_value(skills, obs["cutoffs"], np.clip(rates + platform_deltas(p), 0, 100), c, delta, share)
            for p in unique
        ],
        axis=1,
    )
    return standing[np.argmax(values[:, np.asarray(which).reshape(-1)], axis=1)]


def _values(skills, cutoffs, rates, platforms, c, delta, share) -> np.ndarray:
    """V per worker under its own platform (rows of `platforms`), grouped by distinct platform."""
    out = np.empty(len(skills))
    unique, which = np.unique(platforms, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    for u, p in enumerate(unique):
        members = which == u
        out[members] = best_response_value(
            skills[members], cutoffs, np.clip(rates + platform_deltas(p), 0, 100), c, delta, share
        )
    return out


class SaezPlanner(Policy):
    """Sets the Saez optimal rates for the population's incomes at the 40-hour reference, z_i = 40·v_i.

    The income sample is each worker's skill times 40 h (the hours the skills were calibrated
    with: v = annual income / 40), not times 100 h as in the published code.
    """

    seats = "planner"  # the seats it plays

    class Config(PolicyConfig):
        elasticity: float = Field(
            0.4, gt=0, le=10, description="labor elasticity e of the Saez formula (1/(δ−1) = 0.4 by default)"
        )

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "saez")
        out = []
        for request in requests:
            obs = request.observation
            out.append(
                ActResponse("", saez_rates(REFERENCE_HOURS * obs["skills"], obs["cutoffs"], self.config.elasticity))
            )
        return out


def federal_marginal_rates(cutoffs) -> np.ndarray:
    """The 2024 US federal marginal rate at each cutoff b_j (the federal schedule itself on its own brackets)."""
    federal = np.asarray(BRACKETS["us_federal"], dtype=np.float64)
    index = np.searchsorted(federal, np.asarray(cutoffs, dtype=np.float64), side="right") - 1
    return np.asarray(US_FEDERAL_RATES, dtype=np.float64)[index]


class FederalPlanner(Policy):
    """Sets the 2024 US federal rates: exact on `us_federal` brackets; on other bracket sets, the
    federal marginal rate at each bracket's lower cutoff."""

    seats = "planner"  # the seats it plays

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "us_federal")
        return [ActResponse("", federal_marginal_rates(r.observation["cutoffs"])) for r in requests]


class FlatPlanner(Policy):
    """One marginal rate for every bracket."""

    seats = "planner"  # the seats it plays

    class Config(PolicyConfig):
        rate: float = Field(25.0, ge=0, le=100, description="the flat marginal rate, percent")

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        check_seats(requests, True, "flat")
        return [ActResponse("", np.full(len(r.observation["rates"]), self.config.rate)) for r in requests]


class HillClimbingPlanner(Policy):
    """Coordinate hill climbing on the period SWF with the paper's moves (±10 points on one bracket).

    Keeps the best schedule seen and its SWF. Each decision scores the trial that governed the last
    period: a better one becomes the best and the same move is tried again from it; a worse one is
    dropped and the next move is tried (bracket j up, j down, then j + 1, ...). Every decision is a
    legal Δ ∈ {−20, −10, 0, +10, +20} per bracket from the schedule in force. State is kept per
    episode.
    """

    seats = "planner"  # the seats it plays

    step = 10  # percentage points: a trial then differs from the schedule in force by at most 20 on a bracket

    def __init__(self, config: PolicyConfig, *, seed: int):
        super().__init__(config, seed=seed)
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
