"""Werewolf throughput: scripted games/s and the LLM scenario's generated tokens/s.

Scripted (`scenarios/werewolf_scripted.yaml`): the same seeds played two ways in one process,
the plain PettingZoo loop (agent_iter -> policy -> step, the world alone) and the rollout
engine as `agora run` uses it (trajectory records included), at concurrency 1 and at the
scenario's concurrency; prints games/s, ms per game and the engine/world time ratio, and checks
that all three played the same games (scripted draws are keyed by the decision).

LLM (`scenarios/werewolf.yaml`, greedy): the same games with every pending LLM turn of all
games batched into one call (concurrency = games) and one game at a time (concurrency 1, one
prompt per call); prints generated tokens/s of both and their ratio.

    .venv/bin/python bench/werewolf.py [--games 1000] [--llm-games 4] [--max-new-tokens 24] [--max-days 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.policy import ActRequest  # noqa: E402
from agora.rollout import Rollout, episode_seed  # noqa: E402
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def plain_loop(scenario, policies, games: int) -> list[str]:
    """The world alone: PettingZoo's agent_iter loop, one policy call per turn."""
    winners = []
    for index in range(games):
        world = scenario.make_world()
        world.reset(seed=episode_seed(scenario.spec.seed, index))
        for agent in world.agent_iter():
            obs, _, termination, truncation, _ = world.last()
            if termination or truncation:
                world.step(None)
                continue
            world.step(policies[agent].act([ActRequest(index, agent, obs, [])])[0].action)
        winners.append(world.winner)
    return winners


def rollout(scenario, policies, games: int, concurrency: int):
    ids = {a: s.entry.name for a, s in scenario.seats.items()}
    engine = Rollout(
        scenario.make_world,
        policies,
        ids,
        seed=scenario.spec.seed,
        concurrency=concurrency,
        max_retries=scenario.spec.max_retries,
    )
    start = time.perf_counter()
    episodes = engine.run(games)
    return episodes, time.perf_counter() - start, engine


def scripted(games: int) -> None:
    data = yaml.safe_load((SCENARIOS / "werewolf_scripted.yaml").read_text())
    scenario = resolve_scenario({**data, "episodes": games})
    start = time.perf_counter()
    winners = plain_loop(scenario, build_policies(scenario), games)
    plain_s = time.perf_counter() - start
    # Scripted players key their draws by the decision, so every side must play the same games.
    episodes_1, engine_1_s, _ = rollout(scenario, build_policies(scenario), games, 1)
    concurrency = scenario.spec.concurrency
    episodes, engine_s, _ = rollout(scenario, build_policies(scenario), games, concurrency)
    same = sum(a.info["winner"] == b.info["winner"] == w for a, b, w in zip(episodes_1, episodes, winners))
    village = sum(w == "village" for w in winners) / games
    print(f"scripted werewolf ({scenario.spec.name}), {games} games, village win rate {village:.2f}")
    print(f"{'':36}{'seconds':>9}{'games/s':>10}{'ms/game':>9}")
    for name, seconds in (
        ("world alone (PettingZoo loop)", plain_s),
        ("rollout engine (concurrency 1)", engine_1_s),
        (f"rollout engine (concurrency {concurrency})", engine_s),
    ):
        print(f"{name:36}{seconds:>9.2f}{games / seconds:>10.1f}{1000 * seconds / games:>9.2f}")
    print(
        f"engine/world time ratio: {engine_1_s / plain_s:.2f}x (concurrency 1), {engine_s / plain_s:.2f}x "
        f"(concurrency {concurrency})"
        f"   same winners on all three: {same}/{games}"
    )
    if same != games:
        raise SystemExit("the engine and the plain loop played different games")


def llm(games: int, max_new_tokens: int, max_days: int) -> None:
    data = yaml.safe_load((SCENARIOS / "werewolf.yaml").read_text())
    for spec in data["agents"].values():
        if spec["policy"] == "llm":
            spec.update(temperature=0.0, max_new_tokens=max_new_tokens)
    data["world"]["max_days"] = max_days
    scenario = resolve_scenario({**data, "episodes": games})
    policies = build_policies(scenario)
    model = next(p for p in {id(p): p for p in policies.values()}.values() if p.expensive)
    model.act([ActRequest(0, "warmup", None, [{"role": "user", "content": "Hi"}])])
    rows, transcripts = [], []
    for concurrency in (games, 1):
        tokens, calls = model.stats.generated_tokens, model.stats.calls
        episodes, seconds, engine = rollout(scenario, policies, games, concurrency)
        tokens, calls = model.stats.generated_tokens - tokens, model.stats.calls - calls
        attempts = sum(c.text_attempts for c in engine.counters.values())
        failures = sum(c.parse_failures for c in engine.counters.values()) / max(attempts, 1)
        rows.append(
            (
                f"batched (concurrency {concurrency})" if concurrency > 1 else "one game at a time",
                tokens,
                calls,
                seconds,
                failures,
            )
        )
        transcripts.append([[(s.agent, s.text) for s in e.steps] for e in episodes])
    print(
        f"LLM werewolf ({scenario.spec.name}), {games} games, max_days {max_days}, greedy, max_new_tokens "
        f"{max_new_tokens}"
    )
    print(f"{'':28}{'tokens':>8}{'calls':>7}{'seconds':>9}{'tokens/s':>10}{'parse-fail':>11}")
    for name, tokens, calls, seconds, failures in rows:
        print(f"{name:28}{tokens:>8}{calls:>7}{seconds:>9.1f}{tokens / seconds:>10.2f}{failures:>11.2f}")
    (_, t1, _, s1, _), (_, t2, _, s2, _) = rows
    same = sum(a == b for a, b in zip(*transcripts))
    print(
        f"tokens/s ratio (batched / one at a time): {(t1 / s1) / (t2 / s2):.2f}x   identical transcripts: "
        f"{same}/{games}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=1000, help="scripted games")
    parser.add_argument("--llm-games", type=int, default=4, help="LLM games (0 skips the LLM part)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--max-days", type=int, default=2, help="LLM games end as a draw after this many days")
    args = parser.parse_args()
    scripted(args.games)
    if args.llm_games:
        llm(args.llm_games, args.max_new_tokens, args.max_days)


if __name__ == "__main__":
    main()
