"""External regret of online-learning sequences and of agents in repeated matrix games ("Do LLM Agents Have Regret? A
Case Study in Online Learning and Games", arXiv 2403.16843).

Regret of plays p_1..p_T (mixed strategies, or actions as one-hot) against loss vectors ℓ_1..ℓ_T:

    Reg_T = Σ_t ⟨ℓ_t, p_t⟩ − min_a Σ_t ℓ_t(a)

An agent is no-regret when Reg_T grows sublinearly (Reg_T / T → 0). In a repeated matrix game a
player's loss vector at round t is ℓ_t(a) = −u(a, opponent's action at t): the regret compares her
payoffs with those of the best fixed action in hindsight against the opponent's actual plays.
Also the regret-loss of "Do LLM Agents Have Regret?" (arXiv 2403.16843).
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Sequence

import numpy as np


def as_strategies(plays: Sequence, n_actions: int) -> np.ndarray:
    """Plays as a (T, n) array of mixed strategies: action indices become one-hot rows."""
    plays = np.asarray(plays)
    if plays.ndim == 1:
        if np.any((plays < 0) | (plays >= n_actions)):
            raise ValueError(f"actions must be indices in [0, {n_actions})")
        return np.eye(n_actions)[plays.astype(int)]
    if plays.shape[1] != n_actions:
        raise ValueError(f"strategies have {plays.shape[1]} entries, losses {n_actions}")
    return plays.astype(np.float64)


def cumulative_regret(losses: np.ndarray, plays: Sequence) -> np.ndarray:
    """Reg_t for t = 1..T: Σ_{s≤t} ⟨ℓ_s, p_s⟩ − min_a Σ_{s≤t} ℓ_s(a)."""
    losses = np.asarray(losses, dtype=np.float64)
    strategies = as_strategies(plays, losses.shape[1])
    if len(strategies) != len(losses):
        raise ValueError(f"{len(strategies)} plays for {len(losses)} loss vectors")
    incurred = np.cumsum(np.sum(losses * strategies, axis=1))
    best_fixed = np.min(np.cumsum(losses, axis=0), axis=1)
    return incurred - best_fixed


def external_regret(losses: np.ndarray, plays: Sequence) -> float:
    """Reg_T = Σ_t ⟨ℓ_t, p_t⟩ − min_a Σ_t ℓ_t(a)."""
    return float(cumulative_regret(losses, plays)[-1])


def hedge(losses: np.ndarray, eta: float | None = None) -> np.ndarray:
    """Hedge / multiplicative weights: p_t(a) ∝ exp(−η·Σ_{s<t} ℓ_s(a)); η = sqrt(8 ln n / T) by default
    (for losses in [0, 1], Reg_T ≤ sqrt(T ln n / 2))."""
    losses = np.asarray(losses, dtype=np.float64)
    T, n = losses.shape
    eta = np.sqrt(8 * np.log(n) / T) if eta is None else eta
    past = np.vstack([np.zeros(n), np.cumsum(losses, axis=0)[:-1]])
    logits = -eta * past
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def follow_the_leader(losses: np.ndarray) -> np.ndarray:
    """FTL: play the action with the least cumulative loss so far (lowest index on ties), as indices."""
    losses = np.asarray(losses, dtype=np.float64)
    past = np.vstack([np.zeros(losses.shape[1]), np.cumsum(losses, axis=0)[:-1]])
    return np.argmin(past, axis=1)


@functools.lru_cache(maxsize=32)
def simplex_grid(n_actions: int, grid: int) -> list[np.ndarray]:
    """Every distribution over `n_actions` whose probabilities are multiples of 1/grid (stars and bars:
    C(grid + n - 1, n - 1) of them), in lexicographic order of the bar positions."""
    points = []
    for bars in itertools.combinations(range(grid + n_actions - 1), n_actions - 1):
        edges = (-1, *bars, grid + n_actions - 1)
        points.append(np.array([edges[i + 1] - edges[i] - 1 for i in range(n_actions)], dtype=np.float64) / grid)
    return points


def regret_loss(
    regrets: Sequence[float],
    k: float,
    h: Callable[[np.ndarray], np.ndarray] = lambda x: np.maximum(0.0, x) ** 2,
) -> float:
    """Label-free regret-loss over N sampled loss sequences: Σ_j h(R_j)·f(R_j, k) / Σ_j f(R_j, k), f = e^{kx}.

    k = 0 gives the mean of h(R); k → ∞ tends to h(max_j R_j) (the worst case).
    """
    r = np.asarray(regrets, dtype=np.float64)
    w = np.exp(k * (r - r.max()))  # f(R, k) up to a common factor, without overflow
    return float(np.sum(h(r) * w) / np.sum(w))


def repeated_game_losses(own_payoffs: np.ndarray, opponent_actions: Sequence[int]) -> np.ndarray:
    """ℓ_t(a) = −u(a, b_t) for own_payoffs[a, b] = the player's payoff when she plays a and the opponent b."""
    return -np.asarray(own_payoffs, dtype=np.float64)[:, np.asarray(opponent_actions, dtype=int)].T


def repeated_game_regret_curve(payoffs: np.ndarray, history: Sequence[tuple[int, int]], seat: int) -> np.ndarray:
    """Reg_t for t = 1..T of `seat` (0 row, 1 column) over the joint actions `history` of a matrix game.

    `payoffs` has shape (n, n, 2) as in worlds/matrix.py: payoffs[i, j] = (u_0, u_1).
    """
    payoffs = np.asarray(payoffs, dtype=np.float64)
    history = np.asarray(history, dtype=int).reshape(-1, 2)
    own = payoffs[..., 0] if seat == 0 else payoffs[..., 1].T  # own[mine, theirs]
    return cumulative_regret(repeated_game_losses(own, history[:, 1 - seat]), history[:, seat])


def repeated_game_regret(payoffs: np.ndarray, history: Sequence[tuple[int, int]], seat: int) -> float:
    """External regret Reg_T of `seat` over the joint actions `history` of a matrix game."""
    return float(repeated_game_regret_curve(payoffs, history, seat)[-1])


def episode_history(episode, seats: Sequence[str]) -> list[tuple[int, int]]:
    """Joint actions per round of a matrix-world `Episode` (from its recorded steps, in order)."""
    actions = {seat: [int(step.action) for step in episode.steps if step.agent == seat] for seat in seats}
    return list(zip(actions[seats[0]], actions[seats[1]]))
