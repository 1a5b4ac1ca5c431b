"""Time to build a 16×16 empirical payoff matrix with scripted policies: rollout engine vs a plain PettingZoo loop.

16 scripted mixed strategies of rock-paper-scissors (seeded Dirichlet draws) play every ordered
pair for `--episodes` episodes of `--rounds` rounds. Agora's side is `solvers.psro.rollout_payoff_matrix`
(the batched rollout engine); the baseline steps each `parallel_env` episode in a plain loop, asking
the same policies for one action at a time. Prints both times, their ratio, and the largest
difference between the two matrices in standard errors (they sample differently, so they agree
only statistically). Fairness (bench/harness.py): both sides first build a 2x2 matrix of one
episode on a seed no measured run uses (imports, first calls), then each of `--repeats` repeats
runs the two sides in an order rotated by the repeat; every repeat is printed and the medians
give the ratio. Scripted policies are built fresh for every cell on both sides.

    .venv/bin/python bench/payoff_matrix.py [--policies 16] [--episodes 20] [--rounds 10] [--repeats 2]
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
from bench.harness import format_repeats, median, side_orders, warmup_seed  # noqa: E402
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
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, in rotated orders")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mixtures = {f"mix{i}": rng.dirichlet(np.ones(3)).tolist() for i in range(args.policies)}
    factories = {
        name: (lambda seed, p=p: MixedStrategy(MixedStrategy.Config(probs=p), seed=seed))
        for name, p in mixtures.items()
    }
    make = lambda: parallel_env(game="rock_paper_scissors", rounds=args.rounds)  # noqa: E731
    sides = {
        "agora": lambda f, episodes, seed: rollout_payoff_matrix(make, f, f, episodes_per_cell=episodes, seed=seed)[0],
        "plain": lambda f, episodes, seed: plain_loop(make, f, episodes, seed=seed),
    }
    # measured runs use seeds 0 .. max(episodes, 2 * policies^2) - 1; the warm-up starts above them
    warm = warmup_seed([args.episodes, 2 * args.policies**2])
    two = dict(list(factories.items())[:2])
    for side in sides.values():
        side(two, 1, warm)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    matrices = {}
    for order in side_orders(list(sides), args.repeats):
        for name in order:
            start = time.perf_counter()
            matrices[name] = sides[name](factories, args.episodes, 0)
            seconds[name].append(time.perf_counter() - start)
    U_agora, U_plain = matrices["agora"], matrices["plain"]
    t_agora, t_plain = median(seconds["agora"]), median(seconds["plain"])

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
        f"agora rollout engine: {format_repeats(seconds['agora'], 2)} s | plain PettingZoo loop: "
        f"{format_repeats(seconds['plain'], 2)} s | agora/plain time = {t_agora / t_plain:.2f}"
    )
    print(f"max |U_agora - U_plain| = {np.abs(U_agora - U_plain).max():.2f} (difference-of-means se bound {se:.2f})")


if __name__ == "__main__":
    main()
