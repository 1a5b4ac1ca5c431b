"""The LLM Economist (Karten et al., arXiv 2507.15815): a tax planner over a population of workers.

A PettingZoo `ParallelEnv`. Every step each of N workers chooses labor l ∈ [0, 100] hours and
earns z = v·l at its skill (hourly wage) v. Income is taxed with piecewise-linear marginal rates,

    T(z) = Σ_j τ_j · clip(z − b_j, 0, b_{j+1} − b_j),

and the revenue is rebated lump-sum in equal shares: z̃ = z − T(z) + Σ_i T(z_i)/N. A worker's
utility (its reward) is isoelastic and quasi-linear, u = z̃ − c·l^δ (c = 0.0005, δ = 3.5, labor
elasticity 1/(δ−1) = 0.4). The planner (the leader of a Stackelberg game) sets the schedule
every K steps after a warm-up; between its decisions it is passive (`passive_action`), so its
policy is only asked on its own steps. Its reward every step is the social welfare
SWF = Σ_i u_i / max(z_i, 1) (inverse-income weights; utilitarian Σ_i u_i optionally), so each of
its decision records sums the SWF of the period that decision governed.

Timing: all agents act at once. The planner's schedule taxes the step it is chosen in; the
workers see it (and respond to it) from the next step on. The planner's action is the schedule
itself (rates in percent per bracket): the language interface restricts an LLM planner to the
paper's moves Δ ∈ {−20, −10, 0, +10, +20} points per bracket, while scripted baselines (Saez,
US federal, flat) set their rates directly, as in the paper.

Skills are drawn from the GB2 fit of US incomes (ACS 2023) divided by 40 hours, or uniformly.
Each worker has a persona (age band, occupation, household, attitude) written into its prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.world import ParseError, Report, world_config

# --- constants of the paper (ALGORITHMS.md §6) ------------------------------------------------

GB2_ACS_2023 = {"mu": 72402.78, "sigma": 2.0721, "nu": 0.48652, "tau": 1.14104}  # annual income fit
REFERENCE_HOURS = 40.0  # skill = annual income / 40 h; the Saez baseline uses z = 40·v (see saez_rates)
UNIFORM_SKILL = (1.24, 159.1)  # hourly wage range of the uniform mode
MAX_LABOR = 100.0
BRACKETS: dict[str, list[float]] = {  # lower cutoffs b_j; the top bracket is open
    "us_federal": [0, 11600, 47150, 100525, 191950, 243725, 609350],
    "three": [0, 90000, 159100],
    "flat": [0],
}
US_FEDERAL_RATES = [10, 12, 22, 24, 32, 35, 37]  # 2024 marginal rates, percent
PLANNER_DELTAS = (-20, -10, 0, 10, 20)  # the planner's moves per bracket, percentage points
HISTORY = 3  # past steps a worker sees (labor, utility)
PLANNER_HISTORY = 5  # past periods the planner sees (rates, SWF)
PLANNER = "planner"

# A small persona table: each worker draws one entry per column.
PERSONAS = {
    "age": ["18-29", "30-44", "45-64", "65 or older"],
    "occupation": [
        "retail clerk", "nurse", "software developer", "truck driver", "teacher", "electrician",
        "restaurant cook", "accountant", "warehouse worker", "small-business owner", "home health aide", "lawyer",
    ],
    "household": ["single, no children", "married, no children", "married with children", "single parent"],
    "attitude": [
        "you value your free time highly",
        "you are career-driven and ambitious",
        "you are a careful saver who dislikes risk",
        "you care about your community and fairness",
        "you are skeptical of taxes and government",
    ],
}


class EconomyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_workers: int = Field(10, ge=1, le=100_000, description="workers N")
    steps: int = Field(100, ge=1, le=100_000, description="steps per episode (workers choose labor every step)")
    tax_period: int = Field(25, ge=1, le=100_000, description="K: the planner acts every K steps after the warm-up")
    warmup: int = Field(25, ge=0, le=100_000, description="steps under the initial schedule before the planner's first decision")
    brackets: Literal["us_federal", "three", "flat"] = Field("us_federal", description="bracket cutoffs: US federal 2024, three-bracket or flat")
    initial_rate: float = Field(50.0, ge=0, le=100, description="every bracket's marginal rate (percent) before the planner's first decision")
    skill_distribution: Literal["gb2", "uniform"] = Field("gb2", description="gb2: ACS 2023 income fit / 40 h; uniform: U(1.24, 159.1) per hour")
    labor_cost: float = Field(0.0005, gt=0, description="c in u = z̃ − c·l^δ")
    labor_exponent: float = Field(3.5, gt=1, le=10, description="δ in u = z̃ − c·l^δ (labor elasticity 1/(δ−1))")
    welfare: Literal["inverse_income", "utilitarian"] = Field("inverse_income", description="SWF = Σ u_i / max(z_i, 1), or Σ u_i")
    comparison_flat_rate: float = Field(25.0, ge=0, le=100, description="rate (percent) of the flat schedule in the end-of-run comparison")
    democratic: bool = Field(False, description="workers elect the schedule change each tax period (stand the step before, vote on the decision step); the planner is passive")

    @model_validator(mode="after")
    def _planner_acts(self) -> EconomyConfig:
        if self.warmup >= self.steps:
            raise ValueError(f"warmup ({self.warmup}) must be below steps ({self.steps}), or the planner never acts")
        if self.democratic and (self.warmup < 1 or self.tax_period < 2):
            raise ValueError(
                "democratic mode needs warmup >= 1 and tax_period >= 2: candidates stand the step before each decision "
                f"and everyone votes on it (got warmup {self.warmup}, tax_period {self.tax_period})"
            )
        return self

    def cutoffs(self) -> np.ndarray:
        return np.asarray(BRACKETS[self.brackets], dtype=np.float64)


# --- rules as pure functions ---------------------------------------------------------------------


def sample_gb2(rng: np.random.Generator, size: int, mu: float, sigma: float, nu: float, tau: float) -> np.ndarray:
    """Draws of the generalised beta of the second kind GB2(μ, σ, ν, τ): Y = μ·(B/(1−B))^{1/σ}, B ~ Beta(ν, τ).

    Density f(y) = σ (y/μ)^{σν} / (y · Beta(ν, τ) · (1 + (y/μ)^σ)^{ν+τ}).
    """
    b = rng.beta(nu, tau, size=size)
    return mu * (b / (1.0 - b)) ** (1.0 / sigma)


def draw_skills(rng: np.random.Generator, config: EconomyConfig) -> np.ndarray:
    """Hourly wages v_i: GB2 annual income / 40 h, or uniform on [1.24, 159.1]."""
    if config.skill_distribution == "uniform":
        return rng.uniform(*UNIFORM_SKILL, size=config.num_workers)
    return sample_gb2(rng, config.num_workers, **GB2_ACS_2023) / REFERENCE_HOURS


def bracket_widths(cutoffs: np.ndarray) -> np.ndarray:
    """b_{j+1} − b_j, with an open (infinite) top bracket."""
    return np.diff(np.append(cutoffs, np.inf))


def tax(incomes, cutoffs, rates) -> np.ndarray:
    """T(z) = Σ_j τ_j · clip(z − b_j, 0, b_{j+1} − b_j), rates in percent."""
    z = np.asarray(incomes, dtype=np.float64)
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    taxed = np.clip(z[..., None] - cutoffs, 0.0, bracket_widths(cutoffs))
    return taxed @ (np.asarray(rates, dtype=np.float64) / 100.0)


def post_tax_incomes(incomes, cutoffs, rates) -> tuple[np.ndarray, np.ndarray, float]:
    """(z̃, T(z), rebate) with z̃ = z − T(z) + Σ_i T(z_i)/N."""
    z = np.asarray(incomes, dtype=np.float64)
    taxes = tax(z, cutoffs, rates)
    rebate = float(taxes.sum() / len(z)) if len(z) else 0.0
    return z - taxes + rebate, taxes, rebate


def utility(post_tax, labor, labor_cost: float, labor_exponent: float) -> np.ndarray:
    """u = z̃ − c·l^δ."""
    return np.asarray(post_tax, dtype=np.float64) - labor_cost * np.asarray(labor, dtype=np.float64) ** labor_exponent


def social_welfare(utilities, incomes, kind: str = "inverse_income") -> float:
    """SWF = Σ_i u_i / max(z_i, 1) (inverse-income weights), or Σ_i u_i (utilitarian)."""
    u = np.asarray(utilities, dtype=np.float64)
    if kind == "utilitarian":
        return float(u.sum())
    return float((u / np.maximum(np.asarray(incomes, dtype=np.float64), 1.0)).sum())


def gini(values) -> float:
    """Gini coefficient Σ_i (2i − n − 1)·x_(i) / (n·Σ x) over sorted x (0 when Σ x ≤ 0)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def best_response_labor(
    skills, cutoffs, rates, labor_cost: float, labor_exponent: float, rebate_share: float = 0.0
) -> np.ndarray:
    """Each worker's exact utility-maximising labor under a fixed schedule.

    Maximises f(l) = v·l − (1 − s)·T(v·l) − c·l^δ over l ∈ [0, 100], where s = 1/N is the share of
    its own tax a worker gets back in the rebate (everyone else's tax only adds a constant).
    On bracket j (labor in [b_j/v, b_{j+1}/v]) f is concave with stationary point
    l_j = (v·(1 − (1 − s)·τ_j) / (c·δ))^{1/(δ−1)}; clipped to the bracket it is that piece's
    maximum, and the best piece wins (ties: the least labor). Exact for any rates, non-monotone
    schedules included.
    """
    v = np.asarray(skills, dtype=np.float64)[:, None]
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    kept = 1.0 - (1.0 - rebate_share) * np.asarray(rates, dtype=np.float64) / 100.0  # share of a marginal dollar kept
    lo = np.minimum(cutoffs / v, MAX_LABOR)
    hi = np.minimum(np.append(cutoffs[1:], np.inf) / v, MAX_LABOR)
    stationary = (np.maximum(v * kept, 0.0) / (labor_cost * labor_exponent)) ** (1.0 / (labor_exponent - 1.0))
    candidates = np.clip(stationary, lo, hi)  # (N, B)
    z = v * candidates
    value = z - (1.0 - rebate_share) * tax(z, cutoffs, rates) - labor_cost * candidates**labor_exponent
    return candidates[np.arange(len(v)), np.argmax(value, axis=1)]


def best_response_value(skills, cutoffs, rates, labor_cost: float, labor_exponent: float, rebate_share: float = 0.0) -> np.ndarray:
    """max_l v·l − (1 − s)·T(v·l) − c·l^δ per worker: the value of a schedule to a worker that
    best-responds to it, others' taxes (the rest of the rebate) held fixed."""
    labor = best_response_labor(skills, cutoffs, rates, labor_cost, labor_exponent, rebate_share)
    z = np.asarray(skills, dtype=np.float64) * labor
    return z - (1.0 - rebate_share) * tax(z, cutoffs, rates) - labor_cost * labor**labor_exponent


def saez_rates(incomes, cutoffs, elasticity: float = 0.4) -> np.ndarray:
    """Saez optimal marginal rates per bracket (percent) for an income sample.

    τ_j = (1 − G(z_j)) / (1 − G(z_j) + a(z_j)·e), clipped to [0, 1], at z_j = the bracket's
    midpoint (top bracket: m, the mean income above its cutoff). F is the empirical CDF,
    f a Gaussian KDE (scipy), a(z) = z·f(z)/(1 − F(z)) (top bracket: a = m/(m − b_top)), and
    G(z) = [Σ_{z_i>z} (1/z_i) / Σ_i (1/z_i)] / (1 − F(z)), the mean inverse-income welfare weight
    above z relative to the population's. A bracket nobody's income exceeds gets the rate of the
    bracket below (0 for the first): it taxes no one.
    """
    from scipy.stats import gaussian_kde

    z = np.maximum(np.asarray(incomes, dtype=np.float64), 1.0)
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    weights = 1.0 / z
    density = gaussian_kde(z) if len(np.unique(z)) > 1 else None
    rates = np.zeros(len(cutoffs))
    for j, lower in enumerate(cutoffs):
        top = j == len(cutoffs) - 1
        above_cutoff = z[z > lower]
        if top:
            if len(above_cutoff) == 0:
                rates[j] = rates[j - 1] if j else 0.0
                continue
            point = float(above_cutoff.mean())
        else:
            point = (lower + cutoffs[j + 1]) / 2
        above = z > point
        tail = above.mean()  # 1 − F(z_j)
        if tail <= 0 or density is None:
            rates[j] = rates[j - 1] if j else 0.0
            continue
        g = weights[above].sum() / weights.sum() / tail
        if top:
            a = point / (point - lower)
        else:
            a = point * float(density(point)[0]) / tail
        rates[j] = np.clip((1 - g) / (1 - g + a * elasticity), 0.0, 1.0)
    return 100.0 * rates


def fixed_schedule_welfare(skills, cutoffs, rates, config: EconomyConfig) -> dict[str, float]:
    """Per-step outcome when every worker best-responds to a fixed schedule (a dominant strategy:
    quasi-linear utility, so others' labor only shifts the rebate)."""
    labor = best_response_labor(skills, cutoffs, rates, config.labor_cost, config.labor_exponent, 1.0 / len(skills))
    z = np.asarray(skills) * labor
    post, taxes, _ = post_tax_incomes(z, cutoffs, rates)
    u = utility(post, labor, config.labor_cost, config.labor_exponent)
    return {
        "swf": social_welfare(u, z, config.welfare),
        "mean_utility": float(u.mean()),
        "total_income": float(z.sum()),
        "tax_revenue": float(taxes.sum()),
        "mean_labor": float(labor.mean()),
    }


def plurality_winner(votes, candidates, rng: np.random.Generator) -> int | None:
    """The candidate (worker index) with the most valid votes; ties broken uniformly with `rng`.

    A vote is valid when it names a candidate; no candidates -> None. With candidates but no valid
    vote, every candidate ties at zero.
    """
    candidates = sorted(int(c) for c in candidates)
    if not candidates:
        return None
    votes = np.asarray(votes, dtype=np.int64)
    counts = np.array([(votes == c).sum() for c in candidates])
    tied = [c for c, k in zip(candidates, counts) if k == counts.max()]
    return int(tied[rng.integers(len(tied))]) if len(tied) > 1 else tied[0]


def platform_deltas(indices) -> np.ndarray:
    """A platform as indices into PLANNER_DELTAS -> the changes in percentage points."""
    return np.asarray(PLANNER_DELTAS, dtype=np.float64)[np.asarray(indices, dtype=np.int64)]


# --- the world -----------------------------------------------------------------------------------


def env(config: EconomyConfig | None = None, **kwargs):
    """The AEC version (PettingZoo's parallel-to-AEC conversion)."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(parallel_env(config, **kwargs))


def _money(x: float) -> str:
    return f"${x:,.0f}" if abs(x) >= 100 or x == 0 else f"${x:,.2f}"


LABOR_LINE = re.compile(r'^[\s>*_`{"\']*labou?r["\'\s*_`]*[:=]\s*[*_`"\']*\s*(-?[0-9][0-9,]*(?:\.[0-9]*)?|-?\.[0-9]+)\s*(h|hours?)?[\s*_`"\'}.]*$', re.IGNORECASE)
DELTAS_LINE = re.compile(r"^[\s>*_`]*deltas?[\s*_`]*:(.*)$", re.IGNORECASE)
STAND_LINE = re.compile(r"^[\s>*_`]*stand[\s*_`]*:(.*)$", re.IGNORECASE)
VOTE_LINE = re.compile(r"^[\s>*_`]*vote[\s*_`]*:[\s*_`]*(?:candidate\s*)?#?\s*([0-9]+)[\s.*_`]*$", re.IGNORECASE)
WORK, STAND, VOTE = 0, 1, 2  # democratic phases of a step


class parallel_env(ParallelEnv):
    metadata = {"name": "economy_v0", "render_modes": ["ansi"], "is_parallelizable": True}
    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "swf": "social welfare (mean per step)",
        "planner_swf": "social welfare under the planner",
        "mean_utility": "mean worker utility",
        "mean_labor": "mean hours worked",
        "total_income": "total pre-tax income",
        "tax_revenue": "tax revenue",
        "gini_pre": "Gini before tax",
        "gini_post": "Gini after tax and rebate",
        "br_gap": "workers' gap to best-response utility",
    }
    Config = EconomyConfig

    def __init__(self, config: EconomyConfig | None = None, render_mode: str | None = None, **kwargs):
        self.config = world_config(EconomyConfig, config, kwargs)
        self.cutoffs = self.config.cutoffs()
        self.workers = [f"worker_{i}" for i in range(self.config.num_workers)]
        self.possible_agents = [PLANNER, *self.workers]
        self.render_mode = render_mode
        self.np_random, _ = seeding.np_random(None)
        self.agents: list[str] = []
        self.t = 0
        # Spaces are built once per env, not cached with functools.lru_cache on the methods: a
        # class-level cache keyed by `self` keeps every env of a run alive (N-sized arrays each).
        self._spaces = {
            "worker": (self._worker_observation_space(), self._worker_action_space()),
            PLANNER: (self._planner_observation_space(), self._planner_action_space()),
        }
        self._demonstrations: dict[str, list[tuple[str, str]]] = {}

    # --- spaces (one object per role, the same on every call) -------------------------------

    def observation_space(self, agent: str) -> spaces.Space:
        return self._spaces[PLANNER if agent == PLANNER else "worker"][0]

    def action_space(self, agent: str) -> spaces.Space:
        return self._spaces[PLANNER if agent == PLANNER else "worker"][1]

    def _worker_observation_space(self) -> spaces.Space:
        b, big = len(self.cutoffs), np.inf
        return spaces.Dict(
            {
                "step": spaces.Discrete(self.config.steps + 1),
                "skill": spaces.Box(0, big, (), dtype=np.float64),  # hourly wage v
                "cutoffs": spaces.Box(0, big, (b,), dtype=np.float64),
                "rates": spaces.Box(0, 100, (b,), dtype=np.float64),
                # (c, δ, 1/N): u = z̃ − c·l^δ, and the share of its own tax a worker gets back in the rebate
                "utility_params": spaces.Box(0, big, (3,), dtype=np.float64),
                # the last steps, most recent first, flat: (labor, income, tax, rebate, utility) per step; 0 beyond `history_len`
                "history": spaces.Box(-big, big, (HISTORY * 5,), dtype=np.float64),
                "history_len": spaces.Discrete(HISTORY + 1),
                "persona": spaces.MultiDiscrete([len(v) for v in PERSONAS.values()]),
                **self._election_spaces(),
            }
        )

    def _election_spaces(self) -> dict[str, spaces.Space]:
        """Democratic mode: the phase (0 work, 1 stand, 2 vote), who stands, and their platforms
        (indices into PLANNER_DELTAS per bracket); the two arrays are shared by all workers."""
        if not self.config.democratic:
            return {}
        n, b = self.config.num_workers, len(self.cutoffs)
        return {
            "phase": spaces.Discrete(3),
            "candidates": spaces.MultiBinary(n),
            "platforms": spaces.MultiDiscrete(np.full((n, b), len(PLANNER_DELTAS))),
        }

    def _planner_observation_space(self) -> spaces.Space:
        b, n, big = len(self.cutoffs), self.config.num_workers, np.inf
        return spaces.Dict(
            {
                "step": spaces.Discrete(self.config.steps + 1),
                "cutoffs": spaces.Box(0, big, (b,), dtype=np.float64),
                "rates": spaces.Box(0, 100, (b,), dtype=np.float64),
                "skills": spaces.Box(0, big, (n,), dtype=np.float64),
                "incomes": spaces.Box(0, big, (n,), dtype=np.float64),  # last step
                "labor": spaces.Box(0, MAX_LABOR, (n,), dtype=np.float64),  # last step
                "period_swf": spaces.Box(-big, big, (1,), dtype=np.float64),  # mean SWF per step since the last decision
                # past decisions, most recent first: rates then the mean SWF per step of the period they governed
                "periods": spaces.Box(-big, big, (PLANNER_HISTORY, b + 1), dtype=np.float64),
                "periods_len": spaces.Discrete(PLANNER_HISTORY + 1),
            }
        )

    def _worker_action_space(self) -> spaces.Space:
        hours = spaces.Box(0, MAX_LABOR, (), dtype=np.float64)  # hours (a 0-d array: no list per step in the records)
        if not self.config.democratic:
            return hours
        # stand (1) with a platform (indices into PLANNER_DELTAS) on a stand step; vote for a worker index on a vote step
        n, b = self.config.num_workers, len(self.cutoffs)
        return spaces.Dict(
            {"labor": hours, "stand": spaces.Discrete(2), "platform": spaces.MultiDiscrete([len(PLANNER_DELTAS)] * b), "vote": spaces.Discrete(n)}
        )

    def _planner_action_space(self) -> spaces.Space:
        return spaces.Box(0, 100, (len(self.cutoffs),), dtype=np.float64)  # the schedule, percent per bracket

    # --- Parallel API ----------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        n, b = self.config.num_workers, len(self.cutoffs)
        self.skills = draw_skills(self.np_random, self.config)
        self.personas = np.stack([self.np_random.integers(len(v), size=n) for v in PERSONAS.values()], axis=1)
        self.rates = np.full(b, float(self.config.initial_rate))
        self.agents = list(self.possible_agents)
        self.t = 0
        self.history = np.zeros((n, HISTORY, 5))
        self.history_len = 0
        self.labor = np.zeros(n)
        self.incomes = np.zeros(n)
        self.period_swf: list[float] = []  # SWF of each step since the planner's last decision
        self.periods: list[tuple[np.ndarray, float]] = []  # (rates, mean SWF) of each finished period
        self.decisions: list[int] = []  # steps at which the planner acted
        self.candidates = np.zeros(n, dtype=np.int8)  # democratic: who stands in the coming vote
        self.platforms = np.zeros((n, b), dtype=np.int64)  # their platforms, indices into PLANNER_DELTAS
        self.elections: list[dict[str, Any]] = []
        self.log: dict[str, list] = {k: [] for k in ("swf", "mean_utility", "total_income", "tax_revenue", "gini_pre", "gini_post", "mean_labor", "br_gap", "rates")}
        observations = self._observations()
        return observations, {a: {} for a in self.agents}

    def is_planning_step(self, t: int | None = None) -> bool:
        """The planner decides at steps warmup, warmup + K, warmup + 2K, ..."""
        t = self.t if t is None else t
        return t >= self.config.warmup and (t - self.config.warmup) % self.config.tax_period == 0

    def phase(self, t: int | None = None) -> int:
        """Democratic mode: VOTE on each decision step, STAND on the step before it, else WORK."""
        t = self.t if t is None else t
        if not self.config.democratic:
            return WORK
        if self.is_planning_step(t):
            return VOTE
        return STAND if t + 1 < self.config.steps and self.is_planning_step(t + 1) else WORK

    def _hold_election(self, actions: dict[str, Any]) -> np.ndarray:
        """Tally the votes for the standing candidates; the plurality winner's platform (seeded
        tie-break) changes the schedule. No candidate: the schedule stays."""
        n = self.config.num_workers
        standing = np.flatnonzero(self.candidates)
        votes = np.array([_field(actions.get(a), "vote", -1) for a in self.workers], dtype=np.int64)
        valid = np.isin(votes, standing)
        winner = plurality_winner(votes[valid], standing, self.np_random)
        deltas = platform_deltas(self.platforms[winner]) if winner is not None else np.zeros(len(self.cutoffs))
        self.elections.append(
            {
                "step": self.t,
                "candidates": standing.tolist(),
                "platforms": [platform_deltas(self.platforms[c]).tolist() for c in standing],
                "votes": [int((votes[valid] == c).sum()) for c in standing],
                "winner": winner,
                "platform": deltas.tolist(),
                "candidate_share": len(standing) / n,
                "turnout": float(valid.mean()),
            }
        )
        self.candidates[:] = 0
        return np.clip(self.rates + deltas, 0.0, 100.0)

    def _nominate(self, actions: dict[str, Any]) -> None:
        """Workers that stand (stand = 1 with a legal platform) become the next vote's candidates."""
        self.candidates[:] = 0
        for i, agent in enumerate(self.workers):
            action = actions.get(agent)
            if _field(action, "stand", 0) != 1:
                continue
            try:
                platform = np.asarray(action["platform"], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError, KeyError, IndexError):
                continue
            if platform.shape == (len(self.cutoffs),) and np.all((platform >= 0) & (platform < len(PLANNER_DELTAS))):
                self.candidates[i], self.platforms[i] = 1, platform

    def step(self, actions: dict[str, Any]):
        """Workers' labor -> incomes, taxes under the schedule (the planner's new one on its steps), rebate, utilities."""
        c = self.config
        labor = np.fromiter((_labor(actions.get(a)) for a in self.workers), dtype=np.float64, count=c.num_workers)
        seen = self.rates  # the schedule the workers saw when they chose
        phase = self.phase()
        if self.is_planning_step() and (PLANNER in actions or c.democratic):
            if self.period_swf:
                self.periods.insert(0, (seen.copy(), float(np.mean(self.period_swf))))
            self.period_swf = []
            self.rates = self._hold_election(actions) if c.democratic else _rates(actions[PLANNER], self.rates)
            self.decisions.append(self.t)
        elif phase == STAND:
            self._nominate(actions)
        z = self.skills * labor
        post, taxes, rebate = post_tax_incomes(z, self.cutoffs, self.rates)
        u = utility(post, labor, c.labor_cost, c.labor_exponent)
        swf = social_welfare(u, z, c.welfare)
        best = best_response_labor(self.skills, self.cutoffs, seen, c.labor_cost, c.labor_exponent, 1.0 / c.num_workers)
        self.period_swf.append(swf)
        for key, value in (
            ("swf", swf), ("mean_utility", float(u.mean())), ("total_income", float(z.sum())),
            ("tax_revenue", float(taxes.sum())), ("gini_pre", gini(z)), ("gini_post", gini(post)),
            ("mean_labor", float(labor.mean())), ("br_gap", float(np.abs(labor - best).mean())), ("rates", self.rates.tolist()),
        ):
            self.log[key].append(value)
        self.history[:, 1:] = self.history[:, :-1]
        self.history[:, 0] = np.stack([labor, z, taxes, np.full(len(z), rebate), u], axis=1)
        self.history_len = min(self.history_len + 1, HISTORY)
        self.labor, self.incomes = labor, z
        self.t += 1
        rewards = {PLANNER: swf, **{a: float(x) for a, x in zip(self.workers, u)}}
        over = self.t >= c.steps
        observations = self._observations()
        agents = self.agents
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, over)
        infos = {a: {} for a in agents}
        if over:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _observations(self) -> dict[str, dict]:
        step, rates, cutoffs = self.t, self.rates.copy(), self.cutoffs.copy()
        params = np.array([self.config.labor_cost, self.config.labor_exponent, 1.0 / self.config.num_workers])
        # Built for N up to 10^4 per step: one copy of the shared arrays, per-worker views of them,
        # and as few containers per observation as possible (each is a record in the trajectories).
        history = self.history.reshape(len(self.skills), -1).copy()
        election = {}
        if self.config.democratic:
            election = {"phase": self.phase(), "candidates": self.candidates.copy(), "platforms": self.platforms.copy()}
        observations = {
            name: {
                "step": step,
                "skill": self.skills[i, ...],  # a 0-d view
                "cutoffs": cutoffs,
                "rates": rates,
                "utility_params": params,
                "history": history[i],
                "history_len": self.history_len,
                "persona": self.personas[i],
                **election,
            }
            for i, name in enumerate(self.workers)
        }
        periods = np.zeros((PLANNER_HISTORY, len(self.cutoffs) + 1))
        for k, (r, s) in enumerate(self.periods[:PLANNER_HISTORY]):
            periods[k] = [*r, s]
        observations[PLANNER] = {
            "step": step,
            "cutoffs": cutoffs,
            "rates": rates,
            "skills": self.skills.copy(),
            "incomes": self.incomes.copy(),
            "labor": self.labor.copy(),
            "period_swf": np.array([np.mean(self.period_swf) if self.period_swf else 0.0]),
            "periods": periods,
            "periods_len": min(len(self.periods), PLANNER_HISTORY),
        }
        return observations

    def passive_action(self, agent: str) -> np.ndarray | None:
        """The planner keeps the schedule between its decisions without being asked."""
        if agent == PLANNER and (self.config.democratic or not self.is_planning_step()):
            return self.rates.copy()  # democratic mode: the voters decide, the planner is never asked
        return None

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rates = ", ".join(f"{r:.0f}%" for r in self.rates)
        return f"step {self.t}: rates [{rates}], mean labor {self.labor.mean():.1f} h, SWF {self.log['swf'][-1] if self.log['swf'] else 0:.3f}"

    # --- text interface --------------------------------------------------------------------------

    def _schedule_lines(self, cutoffs, rates) -> list[str]:
        uppers = [*cutoffs[1:], None]
        return [
            f"  {_money(lo)} to {_money(hi)}: {r:.0f}%" if hi is not None else f"  above {_money(lo)}: {r:.0f}%"
            for lo, hi, r in zip(cutoffs, uppers, rates)
        ]

    def prompt(self, agent: str, observation: dict) -> str:
        return self._planner_prompt(observation) if agent == PLANNER else self._worker_prompt(observation)

    def _worker_prompt(self, obs: dict) -> str:
        c, delta, _ = (float(x) for x in obs["utility_params"])
        # Fixed instructions and the (episode-wide) schedule first: prompts of one batch share that prefix.
        lines = [
            "You are a worker in a simulated economy. Each step you choose how many hours to work, from 0 to 100.",
            "Your income is your hourly wage times your hours. Income is taxed by brackets (marginal rates below),",
            "and all tax collected is shared equally among all workers as a rebate.",
            f"Your utility = income - tax + rebate - {c:g} * hours^{delta:g}. Long hours get very tiring.",
            "Choose the hours that give you the highest utility.",
            "Tax brackets (the rate applies to the part of income inside each bracket):",
            *self._schedule_lines(obs["cutoffs"], obs["rates"]),
            "Reply with one line: LABOR: <hours>",
            "",
        ]
        age, job, household, attitude = (PERSONAS[k][int(i)] for k, i in zip(PERSONAS, obs["persona"]))
        lines.append(f"About you: age {age}, {job}, {household}; {attitude}.")
        lines.append(f"Your hourly wage: {_money(float(obs['skill']))}.")
        lines.append(f"This is step {int(obs['step']) + 1} of {self.config.steps}.")
        for k in range(int(obs["history_len"])):
            hours, income, paid, rebate, u = obs["history"][5 * k : 5 * k + 5]
            when = "Last step" if k == 0 else f"{k + 1} steps ago"
            lines.append(
                f"{when}: you worked {hours:.0f} h, earned {_money(income)}, paid {_money(paid)} tax, "
                f"got a {_money(rebate)} rebate; utility {u:,.0f}."
            )
        lines.extend(self._election_lines(obs))
        return "\n".join(lines)

    def _standing(self, obs: dict) -> np.ndarray:
        return np.flatnonzero(obs["candidates"])

    def _election_lines(self, obs: dict) -> list[str]:
        """The closing lines: the reply format, with the election's stand/vote line in democratic mode."""
        labor = "Reply now with one line, hours from 0 to 100: LABOR: <hours>"  # small models follow the last line best
        phase = int(obs.get("phase", WORK))
        b = len(obs["rates"])
        if phase == STAND:
            return [
                "Election: next step the workers vote on how to change each bracket's rate by -20, -10, 0, +10 or +20 points.",
                f"You may stand as a candidate with a platform of {b} change{'s' if b > 1 else ''}, one per bracket in order, or decline.",
                "Reply now with two lines, hours from 0 to 100 and your platform or NO:",
                "LABOR: <hours>",
                "STAND: " + ", ".join(["+10", "0", "-10", "+20", "-20"][i % 5] for i in range(b)) + "   (or STAND: NO)",
            ]
        standing = self._standing(obs) if phase == VOTE else []
        if len(standing) == 0:
            return [labor]
        lines = ["Election: the candidate with the most votes changes each bracket's rate by its platform (points):"]
        for k, c in enumerate(standing):
            lines.append(f"  Candidate {k + 1}: " + ", ".join(_signed(d) for d in platform_deltas(obs["platforms"][c])))
        lines += [f"Reply now with two lines, hours from 0 to 100 and the candidate you vote for (1-{len(standing)}):", "LABOR: <hours>", "VOTE: <candidate number>"]
        return lines

    def _planner_prompt(self, obs: dict) -> str:
        n, k = self.config.num_workers, self.config.tax_period
        welfare = "the sum over workers of utility divided by income (it weighs low incomes most)" if self.config.welfare == "inverse_income" else "the sum of the workers' utilities"
        b = len(obs["rates"])
        lines = [
            f"You are the tax planner of an economy of {n} workers. Every {k} steps you change the marginal tax rate",
            f"of each income bracket by one of {', '.join(f'{d:+d}' if d else '0' for d in PLANNER_DELTAS)} percentage points (rates stay within 0-100%).",
            "Workers choose their hours in response. All tax collected is returned to the workers in equal shares.",
            f"Your goal: maximise social welfare, {welfare}.",
            f"Reply with one line with {b} change{'s' if b > 1 else ''}, one per bracket in order, e.g.:",
            "DELTAS: " + ", ".join(["+10", "0", "-10", "+20", "-20"][i % 5] for i in range(b)),
            "",
            "Current brackets and rates:",
            *self._schedule_lines(obs["cutoffs"], obs["rates"]),
        ]
        incomes, labor = obs["incomes"], obs["labor"]
        if int(obs["step"]) > 0:
            p10, p50, p90 = np.percentile(incomes, [10, 50, 90])
            lines.append(
                f"Last step: mean income {_money(incomes.mean())} (10th/50th/90th percentile {_money(p10)}/{_money(p50)}/{_money(p90)}), "
                f"mean hours {labor.mean():.1f}."
            )
            lines.append(f"Social welfare per step since your last decision: {float(obs['period_swf'][0]):.3f}.")
        for j in range(int(obs["periods_len"])):
            row = obs["periods"][j]
            rates = ", ".join(f"{r:.0f}%" for r in row[:-1])
            lines.append(f"Period {j + 1} back: rates [{rates}] gave welfare {row[-1]:.3f} per step.")
        lines.append(f"Reply now with one line of {b} changes, each -20, -10, 0, +10 or +20: DELTAS: <changes>")
        return "\n".join(lines)

    def _demonstration(self, role: str) -> list[tuple[str, str]]:
        if role not in self._demonstrations:
            self._demonstrations[role] = self._worked_turn(role)
        return self._demonstrations[role]

    def _worked_turn(self, role: str) -> list[tuple[str, str]]:
        # A plain work step (democratic: the election lines are explained by the prompt itself; a
        # stand-step example answered with LABOR alone would teach the wrong reply).
        example = parallel_env(self.config.model_copy(update={"num_workers": 4, "democratic": False}))
        example.reset(seed=2507)
        obs, _, _, _, _ = example.step({a: np.array(40.0) for a in example.workers})
        if role == PLANNER:
            deltas = [0] * len(self.cutoffs)
            deltas[0] = -10
            reply = "DELTAS: " + ", ".join(f"{d:+d}" if d else "0" for d in deltas)
            return [("user", example.prompt(PLANNER, obs[PLANNER])), ("assistant", reply)]
        return [("user", example.prompt("worker_0", obs["worker_0"])), ("assistant", "LABOR: 40")]

    def demonstration(self, agent: str) -> list[dict[str, str]]:
        """A worked turn on a fixed 4-worker example economy (nothing about the real episode)."""
        role = PLANNER if agent == PLANNER else "worker"
        return [{"role": r, "content": c} for r, c in self._demonstration(role)]

    def parse(self, agent: str, text: str):
        if not isinstance(text, str):
            raise ParseError("the reply must be text")
        return self._parse_deltas(text) if agent == PLANNER else self._parse_worker(text)

    def _parse_worker(self, text: str):
        """Labor; in democratic mode also the STAND line (stand step) or the VOTE line (vote step with candidates)."""
        hours = self._parse_labor(text)
        if not self.config.democratic:
            return hours
        action = {"labor": hours, "stand": 0, "platform": np.zeros(len(self.cutoffs), dtype=np.int64), "vote": -1}
        phase = self.phase()
        if phase == STAND:
            bodies = {m.group(1).strip().strip("*_`[]() .") for m in map(STAND_LINE.match, text.splitlines()) if m}
            if len(bodies) != 1:
                raise ParseError("give exactly one 'STAND:' line: your platform, e.g. 'STAND: " + ", ".join(["0"] * len(self.cutoffs)) + "', or 'STAND: NO'")
            body = bodies.pop()
            if body.lower() not in ("no", "none", "decline"):
                deltas = self._delta_tokens(body, "STAND")
                action.update(stand=1, platform=np.array([PLANNER_DELTAS.index(d) for d in deltas], dtype=np.int64))
        elif phase == VOTE and len(standing := np.flatnonzero(self.candidates)):
            found = {m.group(1) for m in map(VOTE_LINE.match, text.splitlines()) if m}
            if len(found) != 1:
                raise ParseError(f"give exactly one 'VOTE: <candidate number>' line, a number from 1 to {len(standing)}")
            k = int(found.pop())
            if not 1 <= k <= len(standing):
                raise ParseError(f"there are {len(standing)} candidates; vote with a number from 1 to {len(standing)}")
            action["vote"] = int(standing[k - 1])
        return action

    def _parse_labor(self, text: str) -> np.ndarray:
        """`LABOR: 40` (or the paper's JSON `{"LABOR": 40}`): one number of hours in [0, 100]."""
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict):
                values = [v for k, v in data.items() if str(k).strip().lower() in ("labor", "labour")]
                if len(values) == 1 and isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
                    return self._hours(str(values[0]))
        found = [m.group(1) for m in map(LABOR_LINE.match, text.splitlines()) if m]
        if not found:
            raise ParseError("no 'LABOR: <hours>' line; reply e.g. 'LABOR: 40'")
        if len({float(f.replace(",", "")) for f in found}) > 1:
            raise ParseError("more than one different LABOR value; give exactly one")
        return self._hours(found[0])

    def _hours(self, raw: str) -> np.ndarray:
        hours = float(raw.replace(",", ""))
        if not np.isfinite(hours) or not 0 <= hours <= MAX_LABOR:
            raise ParseError(f"{raw[:12]} hours is not possible: LABOR must be hours from 0 to 100 (a step has 100 hours at most); reply e.g. 'LABOR: 45'")
        return np.array(hours)

    def _parse_deltas(self, text: str) -> np.ndarray:
        """`DELTAS: +10, 0, -10, ...`: one change per bracket from {−20, −10, 0, +10, +20} -> the new rates.

        Tolerated: markdown emphasis, brackets, '%' signs, Unicode minus and dashes (models write '–10')."""
        bodies = {m.group(1).strip().strip("*_`[]() .") for m in map(DELTAS_LINE.match, text.splitlines()) if m}
        b = len(self.cutoffs)
        example = "DELTAS: " + ", ".join(["0"] * b)
        if not bodies:
            raise ParseError(f"no 'DELTAS:' line; reply e.g. '{example}'")
        if len(bodies) > 1:
            raise ParseError("more than one different DELTAS line; give exactly one")
        deltas = self._delta_tokens(bodies.pop(), "DELTAS")
        return np.clip(self.rates + np.array(deltas, dtype=np.float64), 0.0, 100.0)

    def _delta_tokens(self, body: str, keyword: str) -> list[int]:
        """One legal change per bracket from a line's body ('+10, 0, -10')."""
        b = len(self.cutoffs)
        example = f"{keyword}: " + ", ".join(["0"] * b)
        tokens = [t for t in re.split(r"[\s,;]+", re.sub("[\u2212\u2013\u2014]", "-", body)) if t]  # −, –, — as minus
        if len(tokens) != b:
            raise ParseError(f"give exactly {b} change{'s' if b > 1 else ''} (one per bracket), got {len(tokens)}; e.g. '{example}'")
        deltas = []
        for token in tokens:
            clean = token.rstrip("%")
            if not re.fullmatch(r"[+-]?[0-9]{1,3}", clean) or int(clean) not in PLANNER_DELTAS:
                raise ParseError(f"'{token[:10]}' is not a legal change; each must be one of -20, -10, 0, +10, +20")
            deltas.append(int(clean))
        return deltas

    def render_action(self, agent: str, action) -> str:
        if agent != PLANNER:
            text = f"LABOR: {_labor(action)!r}"
            phase = self.phase()
            if phase == STAND:
                stand = _field(action, "stand", 0) == 1
                text += "\nSTAND: " + (", ".join(_signed(d) for d in platform_deltas(action["platform"])) if stand else "NO")
            elif phase == VOTE and self.candidates.any():
                standing, vote = np.flatnonzero(self.candidates).tolist(), _field(action, "vote", -1)
                text += f"\nVOTE: {standing.index(vote) + 1}" if vote in standing else "\nVOTE: (none)"
            return text
        rates = np.asarray(action, dtype=np.float64).reshape(-1)
        deltas = rates - self.rates
        if np.allclose(deltas, np.round(deltas / 10) * 10) and set(np.round(deltas).astype(int)) <= set(PLANNER_DELTAS):
            return "DELTAS: " + ", ".join(f"{int(round(d)):+d}" if round(d) else "0" for d in deltas)
        return "RATES: " + ", ".join(f"{r:.2f}" for r in rates)  # a scripted baseline setting rates directly

    def fallback_action(self, agent: str, rng: np.random.Generator) -> np.ndarray:
        """Workers: uniform hours in [0, 100] (democratic: decline to stand; vote for a uniform
        candidate); the planner: a uniform legal change per bracket."""
        if agent == PLANNER:
            return np.clip(self.rates + rng.choice(PLANNER_DELTAS, size=len(self.cutoffs)), 0.0, 100.0)
        hours = np.array(rng.uniform(0.0, MAX_LABOR))
        if not self.config.democratic:
            return hours
        standing = np.flatnonzero(self.candidates)
        vote = int(rng.choice(standing)) if self.phase() == VOTE and len(standing) else -1
        return {"labor": hours, "stand": 0, "platform": np.zeros(len(self.cutoffs), dtype=np.int64), "vote": vote}

    # --- records ---------------------------------------------------------------------------------

    def episode_metrics(self) -> dict[str, float]:
        """Means over the episode's steps, the last schedule, and the LLM-rationality gap."""
        metrics = {k: float(np.mean(v)) for k, v in self.log.items() if k != "rates" and v}
        planned = self.log["swf"][self.config.warmup :]
        metrics["planner_swf"] = float(np.mean(planned)) if planned else 0.0
        metrics.update({f"rate/b{j}": float(r) for j, r in enumerate(self.rates)})
        if self.config.democratic:
            metrics["election/count"] = float(len(self.elections))
            for key in ("candidate_share", "turnout"):
                metrics[f"election/{key}"] = float(np.mean([e[key] for e in self.elections])) if self.elections else 0.0
        return metrics

    def episode_info(self) -> dict[str, Any]:
        """Per-step series, the planner's decision steps, and the population (skills, personas)."""
        keys = list(PERSONAS)
        return {
            "series": {k: list(v) for k, v in self.log.items()},
            "decisions": list(self.decisions),
            "elections": list(self.elections),  # democratic mode: candidates, platforms, votes, winner, platform per period
            "skills": self.skills.tolist(),
            "personas": [{k: PERSONAS[k][int(i)] for k, i in zip(keys, row)} for row in self.personas],
        }

    def run_report(self, episodes: list) -> Report:
        """Per-step series averaged over episodes, the schedule plot, and the comparison table:
        the planner's SWF vs Saez, US federal and flat schedules on each episode's population."""
        from matplotlib.figure import Figure

        c = self.config
        series = [e.info["series"] for e in episodes if e.info.get("series")]
        report = Report()
        if not series:
            return report
        steps = min(len(s["swf"]) for s in series)
        names = ["swf", "mean_utility", "total_income", "tax_revenue", "gini_pre", "gini_post", "mean_labor", "br_gap"]
        for name in names:
            mean = np.mean([s[name][:steps] for s in series], axis=0)
            report.series[f"step/{name}"] = [(t, float(v)) for t, v in enumerate(mean)]
        rates = np.mean([np.asarray(s["rates"][:steps]) for s in series], axis=0)  # (steps, B)
        for j in range(rates.shape[1]):
            report.series[f"schedule/b{j}"] = [(t, float(v)) for t, v in enumerate(rates[:, j])]

        figure = Figure(figsize=(8, 6))
        top, bottom = figure.subplots(2, 1, sharex=True)
        uppers = [*self.cutoffs[1:], None]
        for j in range(rates.shape[1]):
            label = f"{_money(self.cutoffs[j])}+" if uppers[j] is None else f"{_money(self.cutoffs[j])}-{_money(uppers[j])}"
            top.step(np.arange(steps), rates[:, j], where="post", label=label)
        top.set_ylabel("marginal rate (%)")
        top.set_title(f"Tax schedule per bracket (mean over {len(series)} episode{'s' if len(series) > 1 else ''})")
        top.legend(fontsize="small", ncol=2)
        bottom.plot(np.arange(steps), np.mean([s["swf"][:steps] for s in series], axis=0))
        bottom.set_xlabel("step")
        bottom.set_ylabel("social welfare")
        figure.tight_layout()
        report.figures["economy/schedule.png"] = figure

        table: dict[str, list] = {k: [] for k in ("episode", "seed", "planner", "planner_final_br", "saez", "us_federal", "flat")}
        federal = np.asarray(BRACKETS["us_federal"], dtype=np.float64)
        for episode in episodes:
            if not episode.info.get("skills"):
                continue
            skills = np.asarray(episode.info["skills"])
            final = episode.info["series"]["rates"][-1]
            saez = saez_rates(REFERENCE_HOURS * skills, self.cutoffs)
            table["episode"].append(episode.index)
            table["seed"].append(episode.seed)
            table["planner"].append(episode.metrics.get("planner_swf", float("nan")))
            table["planner_final_br"].append(fixed_schedule_welfare(skills, self.cutoffs, final, c)["swf"])
            table["saez"].append(fixed_schedule_welfare(skills, self.cutoffs, saez, c)["swf"])
            table["us_federal"].append(fixed_schedule_welfare(skills, federal, US_FEDERAL_RATES, c)["swf"])
            table["flat"].append(fixed_schedule_welfare(skills, [0.0], [c.comparison_flat_rate], c)["swf"])
        report.tables["economy/comparison.json"] = table
        elections = [(e.index, x) for e in episodes for x in e.info.get("elections") or []]
        if elections:
            report.tables["economy/elections.json"] = {
                "episode": [i for i, _ in elections],
                "step": [x["step"] for _, x in elections],
                "winner": [x["winner"] for _, x in elections],
                "platform": [x["platform"] for _, x in elections],
                "candidate_share": [x["candidate_share"] for _, x in elections],
                "turnout": [x["turnout"] for _, x in elections],
            }
            first = [x for i, x in elections if i == elections[0][0]]  # the winning platform over time, first episode
            for j in range(len(self.cutoffs)):
                report.series[f"election/platform/b{j}"] = [(x["step"], float(x["platform"][j])) for x in first]
        for name in ("planner", "planner_final_br", "saez", "us_federal", "flat"):
            if table[name]:
                report.metrics[f"compare/{name}_swf"] = float(np.mean(table[name]))
        if table["saez"]:
            report.metrics["compare/planner_minus_saez"] = report.metrics["compare/planner_swf"] - report.metrics["compare/saez_swf"]
        return report


raw_env = parallel_env  # PettingZoo's name for the unwrapped env


def _signed(delta) -> str:
    return f"{int(round(float(delta))):+d}" if round(float(delta)) else "0"


def _field(action, key: str, default: int) -> int:
    """An integer field of a democratic worker action (a dict), or `default` when missing or malformed."""
    try:
        return int(np.asarray(action[key]).reshape(-1)[0])
    except (TypeError, ValueError, KeyError, IndexError):
        return default


def _labor(action) -> float:
    """A worker's hours from its action (a number, or a democratic action's "labor"), clipped to
    [0, 100] (missing or NaN: 0)."""
    if isinstance(action, dict):
        action = action.get("labor")
    try:
        hours = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return 0.0
    return float(np.clip(hours, 0.0, MAX_LABOR)) if np.isfinite(hours) else 0.0


def _rates(action, current: np.ndarray) -> np.ndarray:
    """The planner's schedule from its action, clipped to [0, 100] (malformed: the current schedule)."""
    try:
        rates = np.asarray(action, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return current.copy()
    if rates.shape != current.shape or not np.all(np.isfinite(rates)):
        return current.copy()
    return np.clip(rates, 0.0, 100.0)
