"""Meta-solvers on payoff matrices: exact zero-sum Nash (LP), replicator dynamics, alpha-Rank, NashConv.

A 2-player normal-form game is given as two payoff matrices `A` (row player) and `B` (column
player), both of shape (m, n); `A[i, j]` is the row player's payoff when she plays i and the
column player plays j. Zero-sum games have B = -A. See "A Unified Game-Theoretic Approach to Multiagent Reinforcement
Learning" (arXiv 1711.00832) and α-Rank (arXiv 1903.01373).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog


def zero_sum_nash(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact Nash of the zero-sum game (A, -A) by linear program: (row mixture x, column mixture y, value).

    Row: max_x v  s.t.  (xᵀA)_j ≥ v ∀j, Σx = 1, x ≥ 0. Column: min_y w  s.t.  (Ay)_i ≤ w ∀i.
    """
    A = np.asarray(A, dtype=np.float64)

    def maximin(M: np.ndarray) -> tuple[np.ndarray, float]:
        rows, cols = M.shape
        c = np.zeros(rows + 1)
        c[-1] = -1.0  # maximise v
        A_ub = np.hstack([-M.T, np.ones((cols, 1))])  # v - (xᵀM)_j ≤ 0
        A_eq = np.hstack([np.ones((1, rows)), np.zeros((1, 1))])
        bounds = [(0, None)] * rows + [(None, None)]
        res = linprog(c, A_ub=A_ub, b_ub=np.zeros(cols), A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
        if not res.success:
            raise RuntimeError(f"linprog failed: {res.message}")
        x = np.clip(res.x[:rows], 0, None)
        return x / x.sum(), float(res.x[-1])

    x, value = maximin(A)
    y, _ = maximin(-A.T)  # the column player maximises her own payoff -A
    return x, y, value


def best_response_values(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Value of each player's best pure response to the other's mixture: (max_i (Ay)_i, max_j (xᵀB)_j)."""
    return float(np.max(np.asarray(A) @ y)), float(np.max(np.asarray(x) @ np.asarray(B)))


def nash_conv(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """NashConv(x, y) = Σ_i [max_{π_i'} u_i(π_i', π_-i) − u_i(x, y)]; 0 exactly at a Nash equilibrium."""
    A, B, x, y = (np.asarray(v, dtype=np.float64) for v in (A, B, x, y))
    br0, br1 = best_response_values(A, B, x, y)
    return br0 - float(x @ A @ y) + br1 - float(x @ B @ y)


def exploitability(A: np.ndarray, B: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Exploitability = NashConv / n (n = 2 players), as in OpenSpiel for 2-player zero-sum games."""
    return nash_conv(A, B, x, y) / 2.0


def replicator_dynamics(
    A: np.ndarray,
    B: np.ndarray,
    x0: np.ndarray | None = None,
    y0: np.ndarray | None = None,
    *,
    iterations: int = 10_000,
    dt: float = 0.01,
    average: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-population replicator dynamics by Euler steps.

    ẋ_i = x_i((Ay)_i − xᵀAy),  ẏ_j = y_j((xᵀB)_j − xᵀBy). Returns the final mixtures, or with
    `average=True` the time averages (which converge to Nash in zero-sum games where the
    trajectories themselves cycle, e.g. rock-paper-scissors).
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    m, n = A.shape
    x = np.full(m, 1 / m) if x0 is None else np.asarray(x0, dtype=np.float64).copy()
    y = np.full(n, 1 / n) if y0 is None else np.asarray(y0, dtype=np.float64).copy()
    sum_x, sum_y = np.zeros(m), np.zeros(n)
    for _ in range(iterations):
        fx, fy = A @ y, x @ B
        x, y = x + dt * x * (fx - x @ fx), y + dt * y * (fy - y @ fy)
        x, y = np.clip(x, 0, None), np.clip(y, 0, None)
        x, y = x / x.sum(), y / y.sum()
        sum_x += x
        sum_y += y
    return (sum_x / iterations, sum_y / iterations) if average else (x, y)


def fixation_probability(f_r: float, f_s: float, *, alpha: float = 100.0, m: int = 50) -> float:
    """Fermi fixation probability of a mutant r in a resident population s:

    ρ = (1 − e^{−u}) / (1 − e^{−m·u}), u = α·(f_r − f_s); ρ = 1/m when u ≈ 0 (computed without overflow).
    """
    u = alpha * (f_r - f_s)
    if abs(u) < 1e-12:
        return 1.0 / m
    if u > 0:
        return float(-np.expm1(-u) / -np.expm1(-m * u))
    v = -u  # ρ = (e^v − 1)/(e^{mv} − 1) = e^{(1−m)v}·(1 − e^{−v})/(1 − e^{−mv})
    return float(np.exp((1 - m) * v) * -np.expm1(-v) / -np.expm1(-m * v))


def alpharank(A: np.ndarray, B: np.ndarray, *, alpha: float = 100.0, m: int = 50) -> np.ndarray:
    """alpha-Rank (multi-population) of a 2-player game: stationary distribution over pure profiles.

    Markov chain over profiles (i, j); a transition changes one player's strategy with
    C[s, s'] = η·ρ(s → s'), η = 1/Σ_k(|S_k| − 1); C[s, s] = 1 − Σ_{s'≠s} C[s, s'].
    Returns π reshaped to (m_rows, n_cols): π[i, j] is the mass of profile (i, j).
    Defaults are OpenSpiel's (m = 50, α = 100).
    """
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    rows, cols = A.shape
    if rows == cols == 1:  # one profile: all the mass (and no mutation to normalise η by)
        return np.ones((1, 1))
    eta = 1.0 / ((rows - 1) + (cols - 1))
    size = rows * cols
    C = np.zeros((size, size))
    for i in range(rows):
        for j in range(cols):
            s = i * cols + j
            for k in range(rows):  # the row population mutates to k
                if k != i:
                    C[s, k * cols + j] = eta * fixation_probability(A[k, j], A[i, j], alpha=alpha, m=m)
            for k in range(cols):  # the column population mutates to k
                if k != j:
                    C[s, i * cols + k] = eta * fixation_probability(B[i, k], B[i, j], alpha=alpha, m=m)
            C[s, s] = 1.0 - C[s].sum()
    # stationary π: πᵀC = πᵀ, Σπ = 1 (least squares on the stacked system)
    system = np.vstack([C.T - np.eye(size), np.ones((1, size))])
    target = np.zeros(size + 1)
    target[-1] = 1.0
    pi = np.linalg.lstsq(system, target, rcond=None)[0]
    pi = np.clip(pi, 0, None)
    return (pi / pi.sum()).reshape(rows, cols)


def alpharank_marginals(A: np.ndarray, B: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Each player's marginal of the alpha-Rank distribution (usable as a meta-strategy)."""
    pi = alpharank(A, B, **kwargs)
    return pi.sum(axis=1), pi.sum(axis=0)
