"""Time to build a 16×16 empirical payoff matrix with scripted policies: rollout engine vs a plain PettingZoo loop.

16 scripted mixed strategies of rock-paper-scissors (seeded Dirichlet draws) play every ordered
pair for `--episodes` episodes of `--rounds` rounds. Agora's side is `solvers.psro.rollout_payoff_matrix`
(the batched rollout engine); the baseline steps each `parallel_env` episode in a plain loop, asking
the same policies for one action at a time. Prints both times, their ratio, and the largest
difference between the two matrices in standard errors (they sample differently, so they agree
only statistically).

    .venv/bin/python bench/payoff_matrix.py [--policies 16] [--episodes 20] [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.scripted.matrix import MixedStrategy  # noqa: E402
from agora.policy import ActRequest  # noqa: E402
from solvers.psro import rollout_payoff_matrix  # noqa: E402
from worlds.matrix import parallel_env  # noqa: E402


def plain_loop(make_world, factories: dict, episodes: int, seed: int) -> np.ndarray:
    names = list(factories)
    U0 = np.zeros((len(names), len(names)))
    for k, row in enumerate(names):
        for l, column in enumerate(names):
            policies = [
                factories[row](seed + 2 * (k * len(names) + l)),
                factories[column](seed + 2 * (k * len(names) + l) + 1),
            ]
            total = 0.0
            for e in range(episodes):
                env = make_world()
                observations, _ = env.reset(seed=seed + e)
                while env.agents:
                    actions = {}
                    for agent, policy in zip(env.possible_agents, policies):
                        request = ActRequest(e, agent, observations[agent], [], env.action_space(agent))
                        actions[agent] = policy.act([request])[0].action
                    observations, rewards, *_ = env.step(actions)
                    total += rewards[env.possible_agents[0]]
            U0[k, l] = total / episodes
    return U0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per cell")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mixtures = {f"mix{i}": rng.dirichlet(np.ones(3)).tolist() for i in range(args.policies)}
    factories = {
        name: (lambda seed, p=p: MixedStrategy(MixedStrategy.Config(probs=p), seed=seed))
        for name, p in mixtures.items()
    }
    make = lambda: parallel_env(game="rock_paper_scissors", rounds=args.rounds)  # noqa: E731

    start = time.perf_counter()
    U_agora, _ = rollout_payoff_matrix(make, factories, factories, episodes_per_cell=args.episodes, seed=0)
    t_agora = time.perf_counter() - start
    start = time.perf_counter()
    U_plain = plain_loop(make, factories, args.episodes, seed=0)
    t_plain = time.perf_counter() - start

    n = args.policies
    cells, rounds = n * n * args.episodes, n * n * args.episodes * args.rounds
    # a round's payoff has variance ≤ 1, so a cell's mean return has se ≤ sqrt(rounds/episodes); the difference of two:
    # ×√2
    se = np.sqrt(2 * args.rounds / args.episodes)
    print(
        f"{n}x{n} payoff matrix, {args.episodes} episodes/cell x {args.rounds} rounds ({cells} episodes, {rounds} "
        "joint moves)"
    )
    print(
        f"agora rollout engine: {t_agora:.2f} s | plain PettingZoo loop: {t_plain:.2f} s | agora/plain time = "
        f"{t_agora / t_plain:.2f}"
    )
    print(f"max |U_agora - U_plain| = {np.abs(U_agora - U_plain).max():.2f} (difference-of-means se bound {se:.2f})")


if __name__ == "__main__":
    main()
