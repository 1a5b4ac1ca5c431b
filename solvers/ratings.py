"""Ratings of policy versions: OpenSkill for 2+ players and teams, Elo, and a Bradley–Terry fit with bootstrap CIs.

- OpenSkill (Weng–Lin Bayesian ratings, the maintained `openskill` package, Plackett–Luce model by
  default): every version holds (μ, σ); a game of any number of teams updates them; the
  leaderboard uses the conservative score μ − 3σ.
- Elo (the chess rating): E_A = 1 / (1 + 10^{(R_B − R_A)/400}); R_A ← R_A + K·(S_A − E_A). Depends on game order.
- Bradley–Terry: P(i beats j) = σ(θ_i − θ_j) fitted by maximum likelihood over the whole log
  (order-free), reported on the Elo scale R = 1500 + 400·θ/ln 10, with percentile bootstrap
  confidence intervals over resampled games.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from openskill.models import PlackettLuce
from scipy.optimize import minimize
from scipy.special import expit, log_expit

ELO_SCALE = 400.0 / np.log(10.0)


class OpenSkillRatings:
    """OpenSkill ratings of named versions, updated game by game (teams of any size, 2+ teams).

    `model` is any `openskill.models` model instance (default `PlackettLuce()`, the library's defaults:
    μ = 25, σ = 25/3, β = σ/2, τ = 25/300).
    """

    def __init__(self, model=None):
        self.model = model or PlackettLuce()
        self.ratings: dict[str, object] = {}

    def rating(self, name: str):
        if name not in self.ratings:
            self.ratings[name] = self.model.rating(name=name)
        return self.ratings[name]

    def rate(
        self,
        teams: Sequence[Sequence[str]],
        *,
        ranks: Sequence[float] | None = None,
        scores: Sequence[float] | None = None,
    ) -> None:
        """Record one game: `teams` lists each team's version names; `ranks` (lower is better, ties equal)
        or `scores` (higher is better); neither means the teams are listed from first to last."""
        if len(teams) < 2 or any(len(team) == 0 for team in teams):
            raise ValueError("a game needs at least two non-empty teams")
        names = [name for team in teams for name in team]
        if len(set(names)) != len(names):
            raise ValueError(f"a version may play only one seat per game: {names}")
        updated = self.model.rate([[self.rating(n) for n in team] for team in teams], ranks=ranks, scores=scores)
        for team, new_team in zip(teams, updated):
            for name, new in zip(team, new_team):
                self.ratings[name] = new

    def mu(self, name: str) -> float:
        return float(self.rating(name).mu)

    def sigma(self, name: str) -> float:
        return float(self.rating(name).sigma)

    def conservative(self, name: str) -> float:
        """μ − 3σ: the score a leaderboard sorts by."""
        return self.mu(name) - 3.0 * self.sigma(name)

    def leaderboard(self) -> list[tuple[str, float, float, float]]:
        """(name, μ − 3σ, μ, σ), best first."""
        rows = [(n, self.conservative(n), self.mu(n), self.sigma(n)) for n in self.ratings]
        return sorted(rows, key=lambda row: -row[1])


def elo_expected(r_a: float, r_b: float) -> float:
    """E_A = 1 / (1 + 10^{(R_B − R_A)/400})."""
    return 1.0 / (1.0 + 10.0 ** ((r_b - r_a) / 400.0))


def elo_update(r_a: float, r_b: float, score_a: float, k: float = 32.0) -> tuple[float, float]:
    """One game (score_a = 1 win, 0.5 draw, 0 loss): R_A ← R_A + K·(S_A − E_A), R_B ← R_B − K·(S_A − E_A)."""
    delta = k * (score_a - elo_expected(r_a, r_b))
    return r_a + delta, r_b - delta


@dataclass
class BradleyTerryFit:
    players: list[str]
    elo: np.ndarray  # maximum-likelihood ratings on the Elo scale (mean 1500)
    lower: np.ndarray  # bootstrap percentile interval (all equal to `elo` when no bootstrap was run)
    upper: np.ndarray

    def as_dict(self) -> dict[str, tuple[float, float, float]]:
        return {
            p: (float(e), float(lo), float(hi)) for p, e, lo, hi in zip(self.players, self.elo, self.lower, self.upper)
        }


def _bt_theta(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int, prior: float) -> np.ndarray:
    """argmax_θ Σ_g [s_g·log σ(θ_i − θ_j) + (1 − s_g)·log σ(θ_j − θ_i)] − prior/2·|θ|², then centred."""

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[i] - theta[j]
        nll = -np.sum(s * log_expit(d) + (1 - s) * log_expit(-d)) + 0.5 * prior * theta @ theta
        g = s - expit(d)  # d log-likelihood / d d
        grad = -np.bincount(i, weights=g, minlength=n) + np.bincount(j, weights=g, minlength=n) + prior * theta
        return float(nll), grad

    theta = minimize(objective, np.zeros(n), jac=True, method="L-BFGS-B").x
    return theta - theta.mean()


def bradley_terry(
    games: Sequence[tuple[str, str, float]],
    *,
    bootstrap: int = 0,
    confidence: float = 0.95,
    prior: float = 1e-3,
    rng: np.random.Generator | None = None,
) -> BradleyTerryFit:
    """Bradley–Terry maximum-likelihood fit of `games` = [(a, b, score of a ∈ [0, 1])], ties as 0.5.

    `prior` is a small Gaussian (L2) prior on θ so undefeated players get finite ratings. With
    `bootstrap` > 0, games are resampled with replacement that many times and the percentile
    interval at `confidence` is returned.
    """
    if not games:
        raise ValueError("no games to fit")
    players = sorted({g[0] for g in games} | {g[1] for g in games})
    index = {p: k for k, p in enumerate(players)}
    i = np.array([index[a] for a, _, _ in games])
    j = np.array([index[b] for _, b, _ in games])
    s = np.array([float(score) for _, _, score in games])
    if np.any((s < 0) | (s > 1)):
        raise ValueError("scores must lie in [0, 1] (1 win, 0.5 draw, 0 loss)")
    elo = 1500.0 + ELO_SCALE * _bt_theta(i, j, s, len(players), prior)
    lower = upper = elo
    if bootstrap > 0:
        rng = rng or np.random.default_rng(0)
        samples = np.empty((bootstrap, len(players)))
        for b in range(bootstrap):
            pick = rng.integers(len(games), size=len(games))
            samples[b] = 1500.0 + ELO_SCALE * _bt_theta(i[pick], j[pick], s[pick], len(players), prior)
        tail = (1 - confidence) / 2 * 100
        lower, upper = np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)
    return BradleyTerryFit(players, elo, lower, upper)
