"""The leader's optimum of the economy's Stackelberg game: the tax schedule that maximises social welfare when
every worker best-responds to it exactly (ground truth for planners; "LLM Economist", arXiv 2507.15815).

With quasi-linear utilities a worker's best response to a fixed schedule does not depend on the others' labor (it
only shifts the rebate), so the followers' equilibrium is `best_response_labor` and the leader's problem is

    max over rates in [0, 100]^B of  SWF(rates) = fixed_schedule_welfare(skills, cutoffs, rates)["swf"],

the welfare of one step in which everyone best-responds (the same number the run report gives Saez, US federal and
flat schedules). SWF is continuous but not concave, with kinks where workers jump between brackets, so the search
has two stages:

1. the lattice: rates the world's planner can reach from `initial_rate` in moves of 10 points, clipped to
   [0, 100] (from 50%: 0, 10, ..., 100). With at most `max_lattice` points (11^4 = 14,641: four brackets)
   every point is evaluated; above, coordinate ascent (each bracket in turn takes its best lattice value until no
   move helps) from the initial, Saez, all-0 and all-100 schedules. `lattice_rates` is the best schedule an
   LLM planner with +-10/+-20 moves could hold; among schedules whose welfare ties (a rate no worker's choice
   depends on, e.g. of a bracket above everyone's best income), the lowest rates;
2. continuous refinement: Powell's method with bounds (scipy.optimize.minimize) from the best lattice points and
   the Saez schedule. The result is never below the lattice optimum.

Closed forms the tests check: utilitarian welfare has its optimum at zero rates (taxes and the rebate cancel in
the sum, and any rate distorts labor); inverse-income welfare over N identical workers is N - 1/delta at 100%
(everyone keeps 1/N of a marginal dollar through the rebate), against N·(1 - 1/delta) at 0%.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from worlds.economy.rules import (
    BRACKETS,
    REFERENCE_HOURS,
    US_FEDERAL_RATES,
    EconomyConfig,
    fixed_schedule_welfare,
    saez_rates,
)

LATTICE_STEP = 10.0  # the planner's smallest move, percentage points
MAX_LATTICE = 11**4  # lattices up to this many schedules are searched exhaustively
REFINE_STARTS = 3  # best lattice points the continuous search starts from (with Saez)
TIE = 1e-9  # welfare within this relative distance ties (e.g. rates of a bracket no one's labor reaches): the lowest
# rates win, compared bracket by bracket


@dataclass(frozen=True)
class StackelbergOptimum:
    rates: np.ndarray  # the welfare-maximising schedule, percent per bracket
    swf: float  # its per-step social welfare with best-response workers
    lattice_rates: np.ndarray  # the best schedule on the planner's lattice
    lattice_swf: float
    exhaustive: bool  # whether the lattice was searched point by point (else by coordinate ascent)
    evaluations: int  # welfare evaluations spent

    def as_dict(self) -> dict[str, object]:
        return {
            "rates": self.rates.tolist(),
            "swf": self.swf,
            "lattice_rates": self.lattice_rates.tolist(),
            "lattice_swf": self.lattice_swf,
            "exhaustive": self.exhaustive,
            "evaluations": self.evaluations,
        }


class Welfare:
    """SWF(rates) of one population with best-response workers, counting its evaluations."""

    def __init__(self, skills, cutoffs, config: EconomyConfig):
        self.skills = np.asarray(skills, dtype=np.float64)
        self.cutoffs = np.asarray(cutoffs, dtype=np.float64)
        self.config = config
        self.evaluations = 0

    def __call__(self, rates) -> float:
        self.evaluations += 1
        rates = np.clip(np.asarray(rates, dtype=np.float64), 0.0, 100.0)
        return fixed_schedule_welfare(self.skills, self.cutoffs, rates, self.config)["swf"]


def planner_lattice(initial_rate: float, step: float = LATTICE_STEP) -> np.ndarray:
    """The rates a bracket can reach from `initial_rate` in moves of `step` points, clipped to [0, 100]."""
    below = np.arange(initial_rate, -step, -step)
    above = np.arange(initial_rate, 100.0 + step, step)
    return np.unique(np.clip(np.concatenate([below, above]), 0.0, 100.0))


def lattice_search(welfare: Welfare, values: np.ndarray, brackets: int, starts: list[np.ndarray], *, keep: int):
    """The `keep` best schedules on the lattice (best first, as (swf, rates)) and whether the search was
    exhaustive."""
    found: dict[tuple[float, ...], float] = {}

    def value(rates) -> float:
        key = tuple(float(r) for r in rates)
        if key not in found:
            found[key] = welfare(np.array(key))
        return found[key]

    exhaustive = len(values) ** brackets <= MAX_LATTICE
    if exhaustive:
        for point in itertools.product(values, repeat=brackets):
            value(point)
    else:
        for start in starts:
            current = values[np.abs(values[None, :] - np.asarray(start)[:, None]).argmin(axis=1)]  # snapped
            best = value(current)
            improved = True
            while improved:
                improved = False
                for j in range(brackets):
                    for v in values:
                        trial = current.copy()
                        trial[j] = v
                        if (w := value(trial)) > best + 1e-12:
                            best, current, improved = w, trial, True
    top = max(found.values())
    tied = min(rates for rates, w in found.items() if w >= top - TIE * max(1.0, abs(top)))  # the lowest rates
    ranked = [(found[tied], tied), *sorted(((w, r) for r, w in found.items() if r != tied), key=lambda x: -x[0])]
    return [(w, np.array(rates)) for w, rates in ranked[:keep]], exhaustive


def stackelberg_optimum(skills, cutoffs, config: EconomyConfig, *, tolerance: float = 1e-3) -> StackelbergOptimum:
    """The leader's welfare optimum for the population `skills` (hourly wages) under the bracket `cutoffs`, with
    `config`'s utility and welfare (module docstring: lattice search, then Powell refinement to `tolerance`
    points)."""
    from scipy.optimize import minimize

    welfare = Welfare(skills, cutoffs, config)
    b = len(welfare.cutoffs)
    saez = saez_rates(REFERENCE_HOURS * welfare.skills, welfare.cutoffs)
    starts = [np.full(b, float(config.initial_rate)), saez, np.zeros(b), np.full(b, 100.0)]
    values = planner_lattice(config.initial_rate)
    best, exhaustive = lattice_search(welfare, values, b, starts, keep=REFINE_STARTS)
    lattice_swf, lattice_rates = best[0]
    top_swf, top_rates = lattice_swf, lattice_rates
    for _, x0 in [*best, (None, saez)]:
        result = minimize(
            lambda x: -welfare(x),
            x0,
            method="Powell",
            bounds=[(0.0, 100.0)] * b,
            options={"xtol": tolerance, "ftol": 1e-12, "maxfev": 4000},
        )
        rates = np.clip(result.x, 0.0, 100.0)
        if (w := welfare(rates)) > top_swf + TIE * max(1.0, abs(top_swf)):
            top_swf, top_rates = w, rates
    return StackelbergOptimum(
        rates=top_rates,
        swf=float(top_swf),
        lattice_rates=lattice_rates,
        lattice_swf=float(lattice_swf),
        exhaustive=exhaustive,
        evaluations=welfare.evaluations,
    )


BASELINES = ("saez", "us_federal", "flat")  # the fixed schedules every comparison has


def baseline_welfare(skills, cutoffs, config: EconomyConfig, *, optimum: bool = True) -> dict[str, object]:
    """Per-step social welfare of the fixed comparison schedules on one population, every worker best-responding:
    `saez` (Saez rates on `cutoffs` for incomes at 40 h), `us_federal` (2024 rates on the federal cutoffs), `flat`
    (`config.comparison_flat_rate`), and with `optimum` the Stackelberg optimum on `cutoffs` (`optimum`,
    `optimum_lattice` and its rates `optimum_rates`). The run report's comparison and the stackelberg campaign's
    evaluation both use it."""
    skills = np.asarray(skills, dtype=np.float64)
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    federal = np.asarray(BRACKETS["us_federal"], dtype=np.float64)
    out: dict[str, object] = {
        "saez": fixed_schedule_welfare(skills, cutoffs, saez_rates(REFERENCE_HOURS * skills, cutoffs), config)["swf"],
        "us_federal": fixed_schedule_welfare(skills, federal, US_FEDERAL_RATES, config)["swf"],
        "flat": fixed_schedule_welfare(skills, [0.0], [config.comparison_flat_rate], config)["swf"],
    }
    if optimum:
        best = stackelberg_optimum(skills, cutoffs, config)
        out.update(
            optimum=best.swf,
            optimum_lattice=best.lattice_swf,
            optimum_rates=[round(float(r), 3) for r in best.rates],
        )
    return out
