"""Batched rollout engine vs one generate call per agent turn, on the same negotiation episodes.

Both sides play the same seeds with the same model and greedy decoding in one process; the
sequential side is the plain PettingZoo loop most language-game frameworks use (agent_iter,
one prompt -> one generate -> parse). Prints throughput of both, their ratio, and checks that
the transcripts are identical.

    .venv/bin/python bench/rollout.py [--episodes 16] [--concurrency 8] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.policy import ActRequest  # noqa: E402
from agora.rollout import RETRY_MESSAGE, Rollout, episode_seed  # noqa: E402
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from agora.world import ParseError, demonstration  # noqa: E402

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "negotiation.yaml"


def sequential(scenario, policies, episodes: int, max_retries: int):
    """One generate call per agent turn, episode after episode."""
    transcripts, tokens = [], 0
    for index in range(episodes):
        seed = episode_seed(scenario.spec.seed, index)
        world = scenario.make_world()
        world.reset(seed=seed)
        rng = np.random.default_rng(seed)
        transcript = []
        for agent in world.agent_iter():
            obs, _, termination, truncation, _ = world.last()
            if termination or truncation:
                world.step(None)
                continue
            messages = [{"role": "user", "content": world.prompt(agent, obs)}]
            for attempt in range(max_retries + 1):
                request = ActRequest(index, agent, obs, messages, world.action_space(agent), demonstration(world, agent))
                response = policies[agent].act([request])[0]
                if response.action is not None:  # scripted seat: acts on the observation
                    action = response.action
                    break
                tokens += len(response.completion_ids)
                try:
                    action = world.parse(agent, response.text)
                    break
                except ParseError as error:
                    messages = [*messages, {"role": "assistant", "content": response.text},
                                {"role": "user", "content": RETRY_MESSAGE.format(error=error)}]
            else:
                action = world.fallback_action(agent, rng)
            text = response.text or world.render_action(agent, action)
            transcript.append((agent, text, world.render_action(agent, action)))
            world.step(action)
        transcripts.append(transcript)
    return transcripts, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    args = parser.parse_args()

    data = yaml.safe_load(args.scenario.read_text())
    for spec in data["agents"].values():
        if spec["policy"] == "llm":
            spec.update(temperature=0.0, max_new_tokens=args.max_new_tokens)
    data.update(episodes=args.episodes, concurrency=args.concurrency)
    scenario = resolve_scenario(data)
    policies = build_policies(scenario)
    unique = list({id(p): p for p in policies.values()}.values())
    ids = {a: s.entry.name for a, s in scenario.seats.items()}
    next(p for p in unique if p.expensive).act([ActRequest(0, "warmup", None, [{"role": "user", "content": "Hi"}])])

    before = sum(p.stats.generated_tokens for p in unique)
    rollout = Rollout(scenario.make_world, policies, ids, seed=scenario.spec.seed,
                      concurrency=args.concurrency, max_retries=scenario.spec.max_retries, record_observations=False)
    start = time.perf_counter()
    episodes = rollout.run(args.episodes)
    batched_s = time.perf_counter() - start
    batched_tokens = sum(p.stats.generated_tokens for p in unique) - before
    world = scenario.make_world()
    batched = [[(s.agent, s.text, world.render_action(s.agent, s.action)) for s in e.steps] for e in episodes]

    start = time.perf_counter()
    seq, seq_tokens = sequential(scenario, policies, args.episodes, scenario.spec.max_retries)
    seq_s = time.perf_counter() - start

    same = sum(a == b for a, b in zip(batched, seq))
    print(f"world {scenario.world_entry.name}, {args.episodes} episodes, greedy, max_new_tokens {args.max_new_tokens}")
    print(f"{'':24}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'episodes/min':>14}")
    for name, tokens, seconds in (("batched (concurrency %d)" % args.concurrency, batched_tokens, batched_s),
                                  ("sequential (1 per turn)", seq_tokens, seq_s)):
        print(f"{name:24}{tokens:>8}{seconds:>10.1f}{tokens / seconds:>10.1f}{60 * args.episodes / seconds:>14.2f}")
    print(f"speed-up (episodes/min): {seq_s / batched_s:.2f}x   tokens/s ratio: {(batched_tokens / batched_s) / (seq_tokens / seq_s):.2f}x")
    failures = sum(c.parse_failures for c in rollout.counters.values())
    attempts = sum(c.text_attempts for c in rollout.counters.values())
    print(f"identical transcripts: {same}/{args.episodes}   LLM parse-failure rate: {failures / max(attempts, 1):.2f}")
    if same != args.episodes:
        raise SystemExit("transcripts differ between batched and sequential play")


if __name__ == "__main__":
    main()
