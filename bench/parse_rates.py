"""Parse-failure rates of the embedded model in every world, decoding under the reply grammar and freely.

For each LLM scenario shipped (one per world; the democratic economy's workers made LLMs), one run
plays the same episodes (same seeds, fresh
policies per side) twice: LLM seats `constrained: true` (the default) and `constrained: false`,
and prints per side the parse-failure rate (unparseable replies / replies), the fallback rate
(turns ended by the world's fallback action / turns), generated tokens and seconds.

    .venv/bin/python bench/parse_rates.py [--episodes 2] [--only negotiation ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agora.rollout import Rollout, SeatCounters  # noqa: E402
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402

SCENARIOS = {
    "negotiation": "negotiation.yaml",
    "werewolf": "werewolf.yaml",
    "deferral": "deferral.yaml",
    "economy": "economy.yaml",
    "economy (democratic)": "economy_democratic.yaml",
    "matrix": "matrix.yaml",
    "online learning": "online_learning.yaml",
}
# The democratic economy ships with scripted voters: here its workers are LLMs, fewer and for fewer steps.
OVERRIDES = {
    "economy (democratic)": {
        "world": {"num_workers": 4, "steps": 16, "tax_period": 4, "warmup": 2},
        "agents": {"planner": {"policy": "us_federal"}, "worker_*": {"policy": "llm", "max_new_tokens": 24}},
    }
}


def side(path: Path, episodes: int, constrained: bool, override: dict) -> tuple[SeatCounters, int, float]:
    data = yaml.safe_load(path.read_text())
    data["world"].update(override.get("world", {}))
    data["agents"] = override.get("agents", data["agents"])
    for spec in data["agents"].values():
        if spec.get("policy") == "llm":
            spec["constrained"] = constrained
    data["episodes"] = episodes
    scenario = resolve_scenario(data, source=str(path))
    policies = build_policies(scenario)
    ids = {a: s.entry.name for a, s in scenario.seats.items()}
    rollout = Rollout(
        scenario.make_world,
        policies,
        ids,
        seed=scenario.spec.seed,
        concurrency=scenario.spec.concurrency,
        max_retries=scenario.spec.max_retries,
        record_observations=False,
    )
    start = time.perf_counter()
    rollout.run(episodes)
    seconds = time.perf_counter() - start
    text = [c for c in rollout.counters.values() if c.text_attempts]
    tokens = sum(p.stats.generated_tokens for p in {id(p): p for p in policies.values()}.values())
    return SeatCounters.total(text), tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--only", choices=list(SCENARIOS), action="append")
    args = parser.parse_args()
    print(f"embedded model, {args.episodes} episode(s) per world and side, the scenario files' other settings")
    print(f"{'world':22}{'side':13}{'replies':>9}{'parse-fail':>12}{'fallback':>10}{'tokens':>8}{'seconds':>9}")
    for world in args.only or SCENARIOS:
        for constrained in (True, False):
            path = ROOT / "scenarios" / SCENARIOS[world]
            counts, tokens, seconds = side(path, args.episodes, constrained, OVERRIDES.get(world, {}))
            print(
                f"{world:22}{'constrained' if constrained else 'free':13}{counts.text_attempts:>9}"
                f"{counts.parse_failure_rate:>12.2f}{counts.fallback_rate:>10.2f}{tokens:>8}{seconds:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
