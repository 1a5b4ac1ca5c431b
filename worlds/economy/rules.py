"""The economy's rules as data and pure functions: the paper's constants, the config, taxes,
utilities, welfare, exact best responses, the Saez rates, elections, and how actions are read.

The world itself is told in the package docstring (worlds/economy/__init__.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# --- constants of the paper (arXiv 2507.15815) -------------------------------------------------

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
        "retail clerk",
        "nurse",
        "software developer",
        "truck driver",
        "teacher",
        "electrician",
        "restaurant cook",
        "accountant",
        "warehouse worker",
        "small-business owner",
        "home health aide",
        "lawyer",
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
    warmup: int = Field(
        25, ge=0, le=100_000, description="steps under the initial schedule before the planner's first decision"
    )
    brackets: Literal["us_federal", "three", "flat"] = Field(
        "us_federal", description="bracket cutoffs: US federal 2024, three-bracket or flat"
    )
    initial_rate: float = Field(
        50.0, ge=0, le=100, description="every bracket's marginal rate (percent) before the planner's first decision"
    )
    skill_distribution: Literal["gb2", "uniform"] = Field(
        "gb2", description="gb2: ACS 2023 income fit / 40 h; uniform: U(1.24, 159.1) per hour"
    )
    labor_cost: float = Field(0.0005, gt=0, description="c in u = z̃ − c·l^δ")
    labor_exponent: float = Field(3.5, gt=1, le=10, description="δ in u = z̃ − c·l^δ (labor elasticity 1/(δ−1))")
    welfare: Literal["inverse_income", "utilitarian"] = Field(
        "inverse_income", description="SWF = Σ u_i / max(z_i, 1), or Σ u_i"
    )
    comparison_flat_rate: float = Field(
        25.0, ge=0, le=100, description="rate (percent) of the flat schedule in the end-of-run comparison"
    )
    comparison_optimum: bool = Field(
        True,
        description="add the Stackelberg optimum (the welfare-maximising schedule with best-response workers) to the "
        "end-of-run comparison: about a second per episode at 100 workers, more for large populations",
    )
    persona_scaling: bool = Field(
        False,
        description="each worker also says whether it is satisfied with the tax policy (SATISFIED: YES/NO) and its "
        "utility is scaled u = r·ũ, r = 1 if satisfied, else `dissatisfied_scale` (the paper's persona utilities)",
    )
    dissatisfied_scale: float = Field(0.5, ge=0, le=1, description="r of a worker not satisfied with the tax policy")
    democratic: bool = Field(
        False,
        description="workers elect the schedule change each tax period (stand the step before, vote on the decision "
        "step); the planner is passive",
    )

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


def best_response_value(
    skills, cutoffs, rates, labor_cost: float, labor_exponent: float, rebate_share: float = 0.0
) -> np.ndarray:
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


WORK, STAND, VOTE = 0, 1, 2  # democratic phases of a step


# --- reading actions -----------------------------------------------------------------------------


def action_field(action, key: str, default: int) -> int:
    """An integer field of a democratic worker action (a dict), or `default` when missing or malformed."""
    try:
        return int(np.asarray(action[key]).reshape(-1)[0])
    except (TypeError, ValueError, KeyError, IndexError):
        return default


def action_labor(action) -> float:
    """A worker's hours from its action (a number, or a democratic action's "labor"), clipped to
    [0, 100] (missing or NaN: 0)."""
    if isinstance(action, dict):
        action = action.get("labor")
    try:
        hours = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return 0.0
    return float(np.clip(hours, 0.0, MAX_LABOR)) if np.isfinite(hours) else 0.0
