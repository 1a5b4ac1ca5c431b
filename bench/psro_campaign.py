"""PSRO campaigns on rock-paper-scissors from (rock, rock): each meta-solver with the exact and the
trained (tabular policy-gradient) oracle, through the real campaign runner (rollouts, oracles).

Prints the exploitability of the meta-mixture per iteration, the stop reason, wall time, and per
meta-solver the trained/exact ratio of final exploitability and of time. Fairness: both oracles
first run a one-iteration campaign with a root seed no measured campaign uses (imports, first
calls), and the order of the two oracles alternates from one meta-solver to the next.

    .venv/bin/python bench/psro_campaign.py [--iterations 6] [--threshold 0.05]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.campaign import load_campaign  # noqa: E402
from bench.harness import side_orders, warmup_seed  # noqa: E402

FILE = Path(__file__).resolve().parent.parent / "scenarios" / "campaigns" / "rps_psro.yaml"


SEED = 0  # every measured campaign's root seed


def campaign(oracle: str, solver: str, iterations: int, threshold: float, seed: int):
    """One campaign of the shipped file with this oracle and meta-solver: (result, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            "meta_solver": solver,
            "oracle.id": oracle,
            "iterations": iterations,
            "threshold": threshold,
            "seed": seed,
            "checkpoint.dir": tmp,
        }
        start = time.perf_counter()
        result = load_campaign(FILE, overrides).run(track=False)
        return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=0.05)
    args = parser.parse_args()
    solvers = ("nash", "uniform", "replicator", "alpharank")
    for oracle in ("exact", "train"):  # warm-up, unmeasured, on another seed; iterations
        campaign(oracle, "nash", 2, 0.0, warmup_seed([SEED]))  # 2: one best response
    for solver, order in zip(solvers, side_orders(["exact", "train"], len(solvers))):
        final = {}
        for oracle in order:
            result, seconds = campaign(oracle, solver, args.iterations, args.threshold, SEED)
            curve = " -> ".join(f"{h['pop/exploitability']:.4f}" for h in result.history.values())
            final[oracle] = (result.last_metrics["pop/exploitability"], seconds)
            print(
                f"{solver:10s} {oracle:5s} oracle: exploitability {curve} | stopped on {result.stop_reason} | "
                f"{seconds:.1f} s"
            )
        (e_exact, t_exact), (e_train, t_train) = final["exact"], final["train"]
        print(
            f"{solver:10s} train/exact: final exploitability {e_train:.4f} / {e_exact:.4f}, time "
            f"x{t_train / t_exact:.1f}"
        )


if __name__ == "__main__":
    main()
