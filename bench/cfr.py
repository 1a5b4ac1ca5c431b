"""CFR iterations per second on Kuhn and Leduc poker: Agora's CFR/CFR+ vs OpenSpiel's C++ and Python solvers.

All solvers run in one process on the same games, each for a fixed number of iterations (after
one warm-up iteration); prints iterations/s of each and Agora's ratio to each OpenSpiel solver,
plus the NashConv all reach (they should agree: Agora's and OpenSpiel's Python solvers compute the
same policies). Each solver has no state shared with another; the order in which the three run
rotates from one (game, variant) to the next, so none always runs first.

    .venv/bin/python bench/cfr.py [--kuhn-iterations 2000] [--leduc-iterations 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyspiel  # noqa: E402
from open_spiel.python.algorithms import cfr as os_cfr  # noqa: E402
from open_spiel.python.algorithms import exploitability as os_exploitability  # noqa: E402

from bench.harness import side_orders  # noqa: E402
from solvers.cfr import CFRPlusSolver, CFRSolver, nash_conv  # noqa: E402
from solvers.games import kuhn_poker, leduc_poker  # noqa: E402


def rate(step, iterations: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kuhn-iterations", type=int, default=2000)
    parser.add_argument("--leduc-iterations", type=int, default=50)
    args = parser.parse_args()
    orders = iter(side_orders(["agora", "cpp", "python"], 4))  # one rotation per (game, variant)
    for name, build, iterations in [
        ("kuhn_poker", kuhn_poker, args.kuhn_iterations),
        ("leduc_poker", leduc_poker, args.leduc_iterations),
    ]:
        game, os_game = build(), pyspiel.load_game(name)
        for variant, ours_cls, cpp_cls, py_cls in [
            ("CFR", CFRSolver, pyspiel.CFRSolver, os_cfr.CFRSolver),
            ("CFR+", CFRPlusSolver, pyspiel.CFRPlusSolver, os_cfr.CFRPlusSolver),
        ]:
            ours, cpp, py = ours_cls(game), cpp_cls(os_game), py_cls(os_game)
            solvers = {"agora": ours, "cpp": cpp, "python": py}
            rates = {name: rate(solvers[name].evaluate_and_update_policy, iterations) for name in next(orders)}
            r_ours, r_cpp, r_py = rates["agora"], rates["cpp"], rates["python"]
            nc_ours = nash_conv(game, ours.average_policy())
            nc_cpp = pyspiel.nash_conv(os_game, cpp.average_policy())
            nc_py = os_exploitability.nash_conv(os_game, py.average_policy())
            print(
                f"{name} {variant} ({iterations + 1} it): agora {r_ours:.1f} it/s | openspiel C++ {r_cpp:.1f} it/s | "
                f"openspiel Python {r_py:.1f} it/s | agora/C++ = {r_ours / r_cpp:.3f} | agora/Python = "
                f"{r_ours / r_py:.2f} | "
                f"NashConv agora {nc_ours:.5f} C++ {nc_cpp:.5f} Python {nc_py:.5f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
