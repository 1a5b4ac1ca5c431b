"""What reviewing costs: `agora run` with and without episodes as MLflow traces and HTML replays.

The same scripted scenario (same seed, so the same episodes) is run into a fresh sqlite store per
side and repeat: `tracking.traces: 0` (no traces, no replays) and `tracking.traces: N` (every
episode). Sides alternate in rotated order per repeat; every repeat is printed, then the median
wall time of each side, the ratio and the cost per traced episode.

    .venv/bin/python bench/review_logging.py [--episodes 100] [--repeats 3] [--scenario negotiation_scripted.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agora.run import run_scenario  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from bench.harness import side_orders  # noqa: E402


def play(data: dict, episodes: int, traces: int, folder: Path) -> tuple[float, int]:
    """Seconds for one tracked run of `episodes` episodes with `traces` of them traced; turns played."""
    spec = {**data, "episodes": episodes, "tracking": {**data.get("tracking", {}), "traces": traces}}
    spec["tracking"].pop("uri", None)
    scenario = resolve_scenario(spec)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    run_scenario(scenario, tracking_uri=uri)  # creates and migrates the store: not timed
    start = time.perf_counter()
    result = run_scenario(scenario, tracking_uri=uri)
    return time.perf_counter() - start, sum(len(e.steps) for e in result.episodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="negotiation_scripted.yaml")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = yaml.safe_load((ROOT / "scenarios" / args.scenario).read_text())
    sides = {"no traces": 0, "traces + replays": args.episodes}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for repeat, order in enumerate(side_orders(list(sides), args.repeats)):
        for name in order:
            with tempfile.TemporaryDirectory() as folder:
                took, turns = play(data, args.episodes, sides[name], Path(folder))
            seconds[name].append(took)
            print(f"repeat {repeat} {name:>16}: {took:6.2f} s ({args.episodes} episodes, {turns} turns)")
    plain, traced = (statistics.median(seconds[name]) for name in sides)
    print(f"median: no traces {plain:.2f} s, traces + replays {traced:.2f} s: {traced / plain:.2f}x")
    print(f"cost per traced episode: {1000 * (traced - plain) / args.episodes:.1f} ms")


if __name__ == "__main__":
    main()
