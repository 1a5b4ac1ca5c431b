"""The same scenario through the local sampler (agents/llm.py) and through llama.cpp's server (agents/server.py).

Negotiation, the embedded SmolLM2-135M-Instruct as alice against the scripted `fair`, greedy decoding,
the same seeds on both sides. The `local` side samples in-process with transformers (the cached fp32 copy
of the embedded GGUF, batched across episodes); the `server` side sends each turn to
`python -m llama_cpp.server` serving the embedded GGUF itself (Q4_1, llama.cpp's kernels, one request at a
time: llama-cpp-python's server does not batch), started here on a free port with as many threads as torch
uses. Prints each repeat's generated tokens/s per side, the median of each and their ratio (server / local),
and both sides' parse-failure rates. Fairness (bench/harness.py): fresh policies per side and repeat, a
warm-up of both sides on a seed no measured side plays, the sides' order rotated per repeat.

    .venv/bin/python bench/backends.py [--episodes 8] [--concurrency 8] [--max-new-tokens 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.rollout import Rollout  # noqa: E402
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from bench.harness import format_repeats, median, model_policies, side_orders, warmup_seed  # noqa: E402
from tests.servers import MODEL, LlamaServer  # noqa: E402

KEY_ENV = "AGORA_BENCH_SERVER_KEY"


def scenario(side: str, url: str, args, seed: int):
    """The scenario file of one side: only alice's agent differs."""
    if side == "local":
        alice = {"policy": "llm", "temperature": 0.0, "max_new_tokens": args.max_new_tokens, "device": "cpu"}
    else:
        alice = {
            "policy": "server",
            "base_url": url,
            "api_key_env": KEY_ENV,
            "api": "llama.cpp",
            "model": MODEL,
            "temperature": 0.0,
            "max_tokens": args.max_new_tokens,
            "max_concurrency": args.concurrency,
            "logprobs": False,  # the local side records them for free; llama-cpp-python computes them in Python
            "timeout_s": 600.0,
        }
    return resolve_scenario(
        {
            "name": f"backends-{side}",
            "world": {"id": "negotiation", "max_turns": 4},
            "agents": {"alice": alice, "bob": {"policy": "fair"}},
            "episodes": args.episodes,
            "seed": seed,
            "concurrency": args.concurrency,
            "tracking": {"enabled": False},
        }
    )


def play(side: str, url: str, args, seed: int, episodes: int) -> tuple[float, int, float]:
    """(seconds, generated tokens, parse-failure rate) of one side on fresh policies."""
    resolved = scenario(side, url, args, seed)
    policies = build_policies(resolved)
    rollout = Rollout(
        resolved.make_world,
        policies,
        {a: s.entry.name for a, s in resolved.seats.items()},
        seed=seed,
        concurrency=args.concurrency,
        max_retries=1,
    )
    start = time.perf_counter()
    rollout.run(episodes)
    seconds = time.perf_counter() - start
    tokens = sum(p.stats.generated_tokens for p in model_policies(policies))
    return seconds, tokens, rollout.counters["alice"].parse_failure_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    threads = torch.get_num_threads()
    server = LlamaServer.start(threads=threads)
    os.environ[KEY_ENV] = server.key
    try:
        seed = 0
        print(
            f"negotiation vs fair, {args.episodes} episodes, greedy, max {args.max_new_tokens} new tokens, "
            f"concurrency {args.concurrency}, {threads} threads per side"
        )
        for side in ("local", "server"):  # warm-up: imports, first kernels, the server's first prompt
            play(side, server.url, args, warmup_seed([seed]), 1)
        rates: dict[str, list[float]] = {"local": [], "server": []}
        failures: dict[str, float] = {}
        for order in side_orders(["local", "server"], args.repeats):
            for side in order:
                seconds, tokens, failure = play(side, server.url, args, seed, args.episodes)
                rates[side].append(tokens / seconds)
                failures[side] = failure
                print(f"  {side:6s} {tokens:5d} tokens in {seconds:6.1f} s = {tokens / seconds:6.1f} tokens/s")
    finally:
        server.stop()
    for side in ("local", "server"):
        print(f"{side:6s} generated tokens/s: {format_repeats(rates[side])}; parse-failure rate {failures[side]:.2f}")
    print(f"ratio server / local: {median(rates['server']) / median(rates['local']):.2f}x")


if __name__ == "__main__":
    main()
