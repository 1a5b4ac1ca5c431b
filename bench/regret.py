"""Regret of agents in repeated rock-paper-scissors, played with the rollout engine: Hedge vs a fixed action.

Both agents face the same paper-heavy opponent (0.2, 0.6, 0.2) for T rounds; prints Reg_T and
Reg_T / T for each T (no-regret: Reg_T / T → 0; a fixed action: a constant), and their ratio.

    .venv/bin/python bench/regret.py [--rounds 100 1000 4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.scripted.matrix import Hedge, MixedStrategy  # noqa: E402
from agora.rollout import Rollout  # noqa: E402
from solvers.regret import episode_history, repeated_game_regret  # noqa: E402
from worlds.matrix import GAMES, parallel_env  # noqa: E402


def regret(agent, rounds: int) -> float:
    seats = ["player_0", "player_1"]
    opponent = MixedStrategy(MixedStrategy.Config(probs=[0.2, 0.6, 0.2]), seed=1)
    rollout = Rollout(
        lambda: parallel_env(rounds=rounds),
        {seats[0]: agent, seats[1]: opponent},
        {s: s for s in seats},
        seed=0,
        record_observations=False,
    )
    (episode,) = rollout.run(1)
    return repeated_game_regret(
        np.asarray(GAMES["rock_paper_scissors"][1], dtype=float), episode_history(episode, seats), seat=0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[100, 1000, 4000])
    args = parser.parse_args()
    for T in args.rounds:
        hedge = regret(Hedge(Hedge.Config(seat=0), seed=2), T)
        fixed = regret(MixedStrategy(MixedStrategy.Config(probs=[1, 0, 0]), seed=2), T)
        print(
            f"T={T}: hedge Reg_T {hedge:.1f} (Reg_T/T {hedge / T:.3f}) | fixed rock Reg_T {fixed:.1f} (Reg_T/T "
            f"{fixed / T:.3f}) | fixed/hedge = {fixed / max(hedge, 1e-9):.1f}"
        )


if __name__ == "__main__":
    main()
