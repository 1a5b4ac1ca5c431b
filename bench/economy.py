"""Time per step of the economy world as the number of workers grows, through the rollout engine.

Scripted side: best-response workers and the hill-climbing planner, N = 100, 1000, 10000 (one
episode per repeat, the fastest of `--repeats` counts; observations recorded as in `agora run`).
LLM side: the embedded SmolLM2 model as every worker (greedy, short generations), the scripted
planner, N = 4, 8, 16, 32; all workers' turns of a step go to the model in one `act` call
(checked: calls per step). Prints time per step, time per worker-step, and the ratio of the
per-worker cost at the largest N to the smallest (flat scaling: <= 1.5). The engine's GC policy
(collections between ticks only) is what keeps the scripted side flat: automatic full
collections gave x1.6 at N = 10,000.

    .venv/bin/python bench/economy.py [--steps 10] [--repeats 3] [--llm-steps 2] [--max-new-tokens 8] [--skip-llm]

On a CPU shared with other jobs, run it with OMP_NUM_THREADS=1: oversubscribed torch threads spin
and made one generate call ~4x slower on our shared 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.scripted.economy import BestResponseWorker, HillClimbingPlanner  # noqa: E402
from agora.rollout import Rollout  # noqa: E402
from worlds.economy.rules import PLANNER, EconomyConfig  # noqa: E402
from worlds.economy.world import raw_env  # noqa: E402


def play(n: int, steps: int, worker_policy, planner_policy, *, max_retries: int = 0) -> tuple[float, Rollout]:
    """Seconds to play one episode of `steps` steps with `n` workers."""
    config = EconomyConfig(num_workers=n, steps=steps, warmup=min(1, steps - 1), tax_period=max(1, steps // 4))
    seats = {PLANNER: planner_policy, **{f"worker_{i}": worker_policy for i in range(n)}}
    ids = {agent: "bench" for agent in seats}
    rollout = Rollout(lambda: raw_env(config), seats, ids, seed=n, concurrency=1, max_retries=max_retries)
    start = time.perf_counter()
    rollout.run(1)
    return time.perf_counter() - start, rollout


def report(title: str, rows: list[tuple[int, float, int]], extra: dict[int, str] | None = None) -> None:
    print(title)
    print(f"{'N':>7}{'steps':>7}{'s/step':>10}{'ms/worker-step':>16}")
    for n, seconds, steps in rows:
        note = f"   {extra[n]}" if extra and n in extra else ""
        print(f"{n:>7}{steps:>7}{seconds / steps:>10.4f}{1e3 * seconds / steps / n:>16.4f}{note}")
    (n0, s0, k0), (n1, s1, k1) = rows[0], rows[-1]
    ratio = (s1 / k1 / n1) / (s0 / k0 / n0)
    print(
        f"per-worker cost ratio N={n1} / N={n0}: {ratio:.2f}  ({'flat' if ratio <= 1.5 else 'NOT flat'}: limit 1.5)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="steps per scripted episode")
    parser.add_argument(
        "--repeats", type=int, default=3, help="episodes per N; the fastest counts (the machine may be shared)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--llm-sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--llm-steps", type=int, default=2, help="steps per LLM episode")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-llm", action="store_true")
    args = parser.parse_args()

    worker, planner = (
        BestResponseWorker(BestResponseWorker.Config(), seed=0),
        HillClimbingPlanner(HillClimbingPlanner.Config(), seed=0),
    )
    play(args.sizes[0], 5, worker, planner)  # warm-up: imports, caches
    rows = [
        (n, min(play(n, args.steps, worker, planner)[0] for _ in range(args.repeats)), args.steps) for n in args.sizes
    ]
    report("scripted workers (best response) + hill-climbing planner, through the rollout engine", rows)

    if args.skip_llm:
        return
    from agents.llm import LLMConfig, LLMPolicy

    llm = LLMPolicy(
        LLMConfig(
            model=args.model, temperature=0.0, max_new_tokens=args.max_new_tokens, max_batch_size=64, device=args.device
        ),
        seed=0,
    )
    play(args.llm_sizes[0], 1, llm, planner)  # warm-up
    rows, notes = [], {}
    for n in args.llm_sizes:
        calls, tokens = llm.stats.calls, llm.stats.generated_tokens
        seconds, rollout = play(n, args.llm_steps, llm, planner)
        counters = [c for c in rollout.counters.values() if c.text_attempts]
        attempts = sum(c.text_attempts for c in counters)
        failures = sum(c.parse_failures for c in counters)
        notes[n] = (
            f"generate calls/step {(llm.stats.calls - calls) / args.llm_steps:.1f}, "
            f"tokens {llm.stats.generated_tokens - tokens}, parse failures {failures}/{attempts}"
        )
        rows.append((n, seconds, args.llm_steps))
    import torch

    title = (
        f"LLM workers ({args.model}, greedy, max_new_tokens {args.max_new_tokens}, device {llm.device}, torch "
        f"threads {torch.get_num_threads()})"
    )
    report(title + " + hill-climbing planner", rows, notes)


if __name__ == "__main__":
    main()
