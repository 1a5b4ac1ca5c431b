"""Werewolf throughput: scripted games/s and the LLM scenario's generated tokens/s.

Scripted (`scenarios/werewolf_scripted.yaml`): the same seeds played two ways in one process,
the plain PettingZoo loop (agent_iter -> policy -> step, the world alone) and the rollout
engine as `agora run` uses it (trajectory records included), at concurrency 1 and at the
scenario's concurrency; prints games/s, ms per game and the engine/world time ratio, and checks
that all three played the same games (scripted draws are keyed by the decision). Each side gets
fresh policies; every side first plays up to 20 warm-up games on a root seed no measured game uses,
and repeat r runs the sides in an order rotated by r (medians printed).

LLM (`scenarios/werewolf.yaml`, greedy): the same games with every pending LLM turn of all
games batched into one call (concurrency = games) and one game at a time (concurrency 1, one
prompt per call); prints generated tokens/s of both, each side's prefix-cache hit fraction and
the ratio. Fairness (bench/harness.py): each side of each repeat gets fresh policies (an empty
prefix cache; the model's weights are shared), the warm-up is one short prompt on a throw-away
policy before any side (both sides run the same code, so it warms them alike and plays no
game), and repeat r runs the sides in an order rotated by r.

    .venv/bin/python bench/werewolf.py [--games 1000] [--llm-games 4] [--max-new-tokens 24] [--max-days 2]
    [--repeats 2] [--model PATH]
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
from bench.harness import (  # noqa: E402
    cache_hit_fraction,
    format_repeats,
    is_cold,
    median,
    model_policies,
    side_orders,
    tally_prompts,
    warmup_seed,
)

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


def scripted_sides(scenario, games: int) -> dict:
    """The three ways of playing the scripted games, each with its own fresh policies: name -> () -> (seconds,
    winners)."""
    concurrency = scenario.spec.concurrency

    def world_alone():
        policies = build_policies(scenario)
        start = time.perf_counter()
        winners = plain_loop(scenario, policies, games)
        return time.perf_counter() - start, winners

    def engine(c):
        def run():
            episodes, seconds, _ = rollout(scenario, build_policies(scenario), games, c)
            return seconds, [e.info["winner"] for e in episodes]

        return run

    return {
        "world alone (PettingZoo loop)": world_alone,
        "rollout engine (concurrency 1)": engine(1),
        f"rollout engine (concurrency {concurrency})": engine(concurrency),
    }


def scripted(games: int, repeats: int = 2) -> None:
    data = yaml.safe_load((SCENARIOS / "werewolf_scripted.yaml").read_text())
    scenario = resolve_scenario({**data, "episodes": games})
    warm = resolve_scenario({**data, "episodes": games, "seed": warmup_seed([scenario.spec.seed])})
    for side in scripted_sides(warm, min(games, 20)).values():  # warm-up: every side alike, other seeds
        side()
    sides = scripted_sides(scenario, games)
    runs: dict[str, list] = {name: [] for name in sides}
    for order in side_orders(list(sides), repeats):
        for name in order:
            runs[name].append(sides[name]())
    names = list(sides)
    plain_s, engine_1_s, engine_s = (median([r[0] for r in runs[name]]) for name in names)
    winners, winners_1, winners_c = (runs[name][0][1] for name in names)
    concurrency = scenario.spec.concurrency
    same = sum(a == b == w for a, b, w in zip(winners_1, winners_c, winners))
    same = min([same] + [sum(a == b for a, b in zip(winners, r[1])) for name in names for r in runs[name]])
    village = sum(w == "village" for w in winners) / games
    print(f"scripted werewolf ({scenario.spec.name}), {games} games, village win rate {village:.2f}")
    print(f"{'':36}{'seconds':>9}{'games/s':>10}{'ms/game':>9}")
    for name, seconds in zip(names, (plain_s, engine_1_s, engine_s)):
        print(f"{name:36}{seconds:>9.2f}{games / seconds:>10.1f}{1000 * seconds / games:>9.2f}")
    for name in names:
        print(f"  {name} seconds per repeat: {format_repeats([r[0] for r in runs[name]], 2)}")
    print(
        f"engine/world time ratio: {engine_1_s / plain_s:.2f}x (concurrency 1), {engine_s / plain_s:.2f}x "
        f"(concurrency {concurrency})"
        f"   same winners on all three: {same}/{games}"
    )
    if same != games:
        raise SystemExit("the engine and the plain loop played different games")


SIDES = ("batched", "one game at a time")


def llm_side(scenario, games: int, concurrency: int):
    """One side: fresh policies (an empty prefix cache), all `games` at `concurrency`:
    (generated tokens, calls, seconds, parse-failure rate, prompt tally, transcripts)."""
    policies = build_policies(scenario)
    assert is_cold(policies), "a side must start with an empty prefix cache"
    tally = tally_prompts(policies)
    episodes, seconds, engine = rollout(scenario, policies, games, concurrency)
    models = model_policies(policies)
    attempts = sum(c.text_attempts for c in engine.counters.values())
    failures = sum(c.parse_failures for c in engine.counters.values()) / max(attempts, 1)
    tokens, calls = sum(p.stats.generated_tokens for p in models), sum(p.stats.calls for p in models)
    return tokens, calls, seconds, failures, tally, [[(s.agent, s.text) for s in e.steps] for e in episodes]


def llm(games: int, max_new_tokens: int, max_days: int, repeats: int = 2, model: str | None = None) -> float:
    """Batched vs one game at a time on the same LLM games; prints both and returns the tokens/s ratio."""
    data = yaml.safe_load((SCENARIOS / "werewolf.yaml").read_text())
    for spec in data["agents"].values():
        if spec["policy"] == "llm":
            spec.update(temperature=0.0, max_new_tokens=max_new_tokens)
            if model:
                spec["model"] = model
    data["world"]["max_days"] = max_days
    scenario = resolve_scenario({**data, "episodes": games})
    warm = model_policies(build_policies(scenario))[0]  # throw-away: loads the shared model, first kernels
    warm.act([ActRequest(0, "warmup", None, [{"role": "user", "content": "Hi"}])])
    concurrency = {"batched": games, "one game at a time": 1}
    runs: dict[str, list] = {name: [] for name in SIDES}
    orders = side_orders(list(SIDES), repeats)
    for order in orders:
        for name in order:
            runs[name].append(llm_side(scenario, games, concurrency[name]))
    print(
        f"LLM werewolf ({scenario.spec.name}), {games} games, max_days {max_days}, greedy, max_new_tokens "
        f"{max_new_tokens}, {repeats} repeat(s), orders: {' | '.join(', '.join(o) for o in orders)}; "
        "fresh policies per side"
    )
    print(f"{'':28}{'tokens':>8}{'calls':>7}{'seconds':>9}{'tokens/s':>10}{'parse-fail':>11}{'cache-hit':>11}")
    rates = {}
    for name in SIDES:
        tokens, calls, _, failures, _, _ = runs[name][0]
        seconds = median([r[2] for r in runs[name]])
        hits = sum(cache_hit_fraction(r[4]) for r in runs[name]) / len(runs[name])
        rates[name] = tokens / seconds
        label = f"batched (concurrency {games})" if name == "batched" else name
        print(f"{label:28}{tokens:>8}{calls:>7}{seconds:>9.1f}{rates[name]:>10.2f}{failures:>11.2f}{hits:>11.3f}")
    for name in SIDES:
        print(f"  {name} seconds per repeat: {format_repeats([r[2] for r in runs[name]])}")
    reference = runs["batched"][0][5]
    same = min(sum(a == b for a, b in zip(reference, r[5])) for name in SIDES for r in runs[name])
    ratio = rates["batched"] / rates["one game at a time"]
    print(f"tokens/s ratio (batched / one at a time): {ratio:.2f}x   identical transcripts: {same}/{games}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", type=int, default=1000, help="scripted games")
    parser.add_argument("--llm-games", type=int, default=4, help="LLM games (0 skips the LLM part)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--max-days", type=int, default=2, help="LLM games end as a draw after this many days")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each side (scripted and LLM), in rotated orders"
    )
    parser.add_argument("--model", default=None, help="the LLM seats' model (default: the scenario's)")
    args = parser.parse_args()
    scripted(args.games, args.repeats)
    if args.llm_games:
        llm(args.llm_games, args.max_new_tokens, args.max_days, args.repeats, args.model)


if __name__ == "__main__":
    main()
