"""Policy-Space Response Oracles (PSRO) over an empirical payoff matrix, and payoff matrices from rollouts.

The loop ("A Unified Game-Theoretic Approach to Multiagent Reinforcement Learning", arXiv 1711.00832):
populations Π_0, Π_1 → empirical payoffs U_i[k, l] = u_i(Π_0[k], Π_1[l]) → meta-strategy σ = MSS(U) → each player adds
an oracle's best response to the opponent's
meta-mixture → repeat, until the exploitability of the meta-mixture is ≤ a threshold, the oracles
add nothing new, or the iteration budget is spent. With an exact best-response oracle and the
Nash meta-solver this is the double-oracle algorithm.

For the matrix world, a strategy is a mixed strategy over the game's actions (a probability
vector), the oracle is an exact best response (`matrix_best_response`), and payoffs between
policies can be estimated by playing episodes with the rollout engine (`rollout_payoff_matrix`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from solvers import meta

MetaSolver = Literal["nash", "uniform", "replicator", "alpharank"]


def meta_strategy(U0: np.ndarray, U1: np.ndarray, solver: MetaSolver) -> tuple[np.ndarray, np.ndarray]:
    """σ = MSS(U): a mixture over each player's population from the empirical payoff matrices."""
    if solver == "nash":
        if not np.allclose(U0 + U1, (U0 + U1).flat[0]):
            raise ValueError(
                "the 'nash' meta-solver is the zero-sum LP: the payoffs must be constant-sum; use replicator or "
                "alpharank"
            )
        x, y, _ = meta.zero_sum_nash(U0)
        return x, y
    if solver == "uniform":  # PSRO with a uniform meta-strategy is fictitious play over the population
        return np.full(U0.shape[0], 1 / U0.shape[0]), np.full(U0.shape[1], 1 / U0.shape[1])
    if solver == "replicator":
        return meta.replicator_dynamics(U0, U1, iterations=5000, dt=0.05)
    if solver == "alpharank":
        return meta.alpharank_marginals(U0, U1)
    raise ValueError(f"unknown meta-solver {solver!r}; choose nash, uniform, replicator or alpharank")


@dataclass
class PSROResult:
    populations: tuple[list[Any], list[Any]]
    meta_strategies: tuple[np.ndarray, np.ndarray]  # final σ over each population
    payoffs: tuple[np.ndarray, np.ndarray]  # final empirical U_0, U_1
    exploitability: list[float] = field(default_factory=list)  # of the meta-mixture, per iteration (if measurable)
    stop_reason: str = ""


@dataclass
class PSROStep:
    """One PSRO iteration's outcome: σ, the meta-mixture's exploitability, each player's new strategy."""

    sigma: tuple[np.ndarray, np.ndarray]  # σ = MSS(U) over each population
    exploitability: float | None  # of the meta-mixture (None when not measurable)
    new: list[Any]  # per player: the oracle's best response to add, or None (nothing new, or stopped)
    stop_reason: str = ""  # "" (go on), "threshold", "budget", "no new best response"


def psro_iteration(
    populations: tuple[Sequence[Any], Sequence[Any]],
    payoffs: tuple[np.ndarray, np.ndarray],
    oracle: Callable[[int, list[Any], np.ndarray], Any],
    *,
    meta_solver: MetaSolver = "nash",
    exploitability: Callable[[list[Any], np.ndarray, list[Any], np.ndarray], float] | None = None,
    threshold: float = 1e-6,
    last: bool = False,
    same: Callable[[Any, Any], bool] = lambda a, b: bool(np.array_equal(a, b)),
) -> PSROStep:
    """One iteration of PSRO on the empirical payoffs U_0, U_1 of `populations`: σ = MSS(U); stop when the
    meta-mixture's exploitability is ≤ `threshold` or on the `last` iteration of the budget; else each
    player's `oracle(player, opponent_population, opponent_σ)` answers the other's meta-mixture, both
    against the populations as they are (a None or a strategy `same` as a member adds nothing)."""
    U0, U1 = payoffs
    sigma = meta_strategy(U0, U1, meta_solver)
    value = None
    if exploitability is not None:
        value = float(exploitability(list(populations[0]), sigma[0], list(populations[1]), sigma[1]))
        if value <= threshold:
            return PSROStep(sigma, value, [None, None], "threshold")
    if last:
        return PSROStep(sigma, value, [None, None], "budget")
    new = [oracle(0, list(populations[1]), sigma[1]), oracle(1, list(populations[0]), sigma[0])]
    new = [s if s is not None and not any(same(s, m) for m in populations[i]) else None for i, s in enumerate(new)]
    return PSROStep(sigma, value, new, "" if any(s is not None for s in new) else "no new best response")


def psro(
    initial: tuple[Sequence[Any], Sequence[Any]],
    payoff: Callable[[Any, Any], tuple[float, float]],
    oracle: Callable[[int, list[Any], np.ndarray], Any],
    *,
    meta_solver: MetaSolver = "nash",
    exploitability: Callable[[list[Any], np.ndarray, list[Any], np.ndarray], float] | None = None,
    threshold: float = 1e-6,
    max_iterations: int = 50,
    same: Callable[[Any, Any], bool] = lambda a, b: bool(np.array_equal(a, b)),
) -> PSROResult:
    """Run PSRO: `max_iterations` iterations that may add best responses (`psro_iteration`), then a final evaluation.

    `payoff(s0, s1)` → (u_0, u_1); `oracle(player, opponent_population, opponent_σ)` → a new
    strategy for `player`; `exploitability(pop0, σ0, pop1, σ1)` of the meta-mixture (optional:
    without it the loop stops when no oracle adds a new strategy, or on the budget).
    """
    populations: tuple[list[Any], list[Any]] = (list(initial[0]), list(initial[1]))
    cache: dict[tuple[int, int], tuple[float, float]] = {}

    def matrices() -> tuple[np.ndarray, np.ndarray]:
        shape = (len(populations[0]), len(populations[1]))
        U0, U1 = np.zeros(shape), np.zeros(shape)
        for k in range(shape[0]):
            for l in range(shape[1]):
                if (k, l) not in cache:
                    cache[k, l] = payoff(populations[0][k], populations[1][l])
                U0[k, l], U1[k, l] = cache[k, l]
        return U0, U1

    history: list[float] = []
    for t in range(max_iterations + 1):
        U0, U1 = matrices()
        step = psro_iteration(
            populations,
            (U0, U1),
            oracle,
            meta_solver=meta_solver,
            exploitability=exploitability,
            threshold=threshold,
            last=t == max_iterations,
            same=same,
        )
        if step.exploitability is not None:
            history.append(step.exploitability)
        for player, strategy in enumerate(step.new):
            if strategy is not None:
                populations[player].append(strategy)
        if step.stop_reason:
            break
    return PSROResult(populations, step.sigma, (U0, U1), history, step.stop_reason)


# --- the matrix world ---------------------------------------------------------------------------


def mixture(population: Sequence[np.ndarray], sigma: np.ndarray) -> np.ndarray:
    """The meta-mixture in action space: Σ_k σ_k·π_k."""
    return np.asarray(sigma) @ np.asarray(population, dtype=np.float64)


def matrix_best_response(A: np.ndarray, B: np.ndarray) -> Callable[[int, list[np.ndarray], np.ndarray], np.ndarray]:
    """Exact best-response oracle of a matrix game: a pure strategy (one-hot) maximising payoff vs the meta-mixture."""

    def oracle(player: int, opponents: list[np.ndarray], sigma: np.ndarray) -> np.ndarray:
        opponent = mixture(opponents, sigma)
        values = A @ opponent if player == 0 else opponent @ B
        return np.eye(len(values))[int(np.argmax(values))]

    return oracle


def matrix_psro(
    A: np.ndarray,
    B: np.ndarray,
    start: tuple[int, int] = (0, 0),
    *,
    meta_solver: MetaSolver = "nash",
    threshold: float = 1e-6,
    max_iterations: int = 50,
) -> PSROResult:
    """PSRO on a 2-player matrix game from one pure strategy per player, with exact payoffs and oracle."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    eye0, eye1 = np.eye(A.shape[0]), np.eye(A.shape[1])
    return psro(
        ([eye0[start[0]]], [eye1[start[1]]]),
        payoff=lambda s0, s1: (float(s0 @ A @ s1), float(s0 @ B @ s1)),
        oracle=matrix_best_response(A, B),
        meta_solver=meta_solver,
        exploitability=lambda p0, x, p1, y: meta.exploitability(A, B, mixture(p0, x), mixture(p1, y)),
        threshold=threshold,
        max_iterations=max_iterations,
    )


def rollout_payoff_matrix(
    make_world: Callable[[], Any],
    row_policies: dict[str, Callable[[int], Any]],
    column_policies: dict[str, Callable[[int], Any]],
    *,
    episodes_per_cell: int = 10,
    seed: int = 0,
    concurrency: int = 16,
    on_cell: Callable[[str, str, list], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical payoff matrices U_0, U_1 by playing `episodes_per_cell` episodes per pair with the rollout engine.

    `row_policies` / `column_policies` map a policy id to a factory `seed -> Policy` (a fresh policy
    per cell, seeded from `seed` and the cell's ids, so a cell's value does not depend on which other
    cells are played with it: `play_cell`). U_i[k, l] is seat i's mean episode return. `on_cell(row_id,
    column_id, episodes)` sees each cell's episodes (win records, regret).
    """
    U0, U1 = np.zeros((len(row_policies), len(column_policies))), np.zeros((len(row_policies), len(column_policies)))
    for k, (row_id, make_row) in enumerate(row_policies.items()):
        for l, (column_id, make_column) in enumerate(column_policies.items()):
            episodes = play_cell(
                make_world, (row_id, make_row), (column_id, make_column), episodes_per_cell, seed, concurrency
            )
            if on_cell is not None:
                on_cell(row_id, column_id, episodes)
            U0[k, l], U1[k, l] = cell_value(make_world().possible_agents, [e.returns for e in episodes])
    return U0, U1


def play_cell(
    make_world: Callable[[], Any],
    row: tuple[str, Callable[[int], Any]],
    column: tuple[str, Callable[[int], Any]],
    episodes: int,
    seed: int,
    concurrency: int = 16,
) -> list:
    """The episodes of one payoff cell: the row policy (id, factory) on the first seat and the column policy on
    the second, both fresh and seeded from (`seed`, the cell's ids), the episodes from `policy_seed(seed, cell)`:
    the same wherever and with whatever else the cell is played (`rollout_payoff_matrix`, Ray cell workers)."""
    from agora.rollout import Rollout, policy_seed

    seats = make_world().possible_agents
    cell = f"{row[0]}|{column[0]}"
    rollout = Rollout(
        make_world,
        {seats[0]: row[1](policy_seed(seed, cell + "|0")), seats[1]: column[1](policy_seed(seed, cell + "|1"))},
        {seats[0]: row[0], seats[1]: column[0]},
        seed=policy_seed(seed, cell),
        concurrency=concurrency,
        record_observations=False,
    )
    return rollout.run(episodes)


def cell_value(seats: Sequence[str], returns: list[dict[str, float]]) -> tuple[float, float]:
    """(U_0, U_1) of a cell from its episodes' returns (seat -> return): each of the two seats' mean."""
    return float(np.mean([r[seats[0]] for r in returns])), float(np.mean([r[seats[1]] for r in returns]))
