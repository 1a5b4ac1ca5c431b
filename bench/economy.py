"""Time per step of the economy world as the number of workers grows, through the rollout engine.

Scripted side: best-response workers and the hill-climbing planner, N = 100, 1000, 10000 (one
episode per repeat, the fastest of `--repeats` counts; observations recorded as in `agora run`).
LLM side: the embedded SmolLM2 model as every worker (greedy, short generations), the scripted
planner, N = 4, 8, 16, 32; all workers' turns of a step go to the model in one `act` call
(checked: calls per step). Prints time per step, time per worker-step, and the ratio of the
per-worker cost at the largest N to the smallest (flat scaling: <= 1.5). The engine's GC policy
(collections between ticks only) is what keeps the scripted side flat: automatic full
collections gave x1.6 at N = 10,000.

Fairness (bench/harness.py): every measured episode gets fresh policies (the LLM side: a new
policy with an empty prefix cache per N, sharing the loaded model), so no N reuses the KV of
another's prompts; the warm-ups play on throw-away policies with a seed no measured episode
uses (measured episodes are seeded with their N); each N prints its prefix-cache hit fraction.

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
from bench.harness import cache_hit_fraction, tally_prompts, warmup_seed  # noqa: E402
from worlds.economy.rules import PLANNER, EconomyConfig  # noqa: E402
from worlds.economy.world import raw_env  # noqa: E402


def play(
    n: int, steps: int, worker_policy, planner_policy, *, seed: int | None = None, max_retries: int = 0
) -> tuple[float, Rollout]:
    """Seconds to play one episode of `steps` steps with `n` workers (seeded `n` unless `seed` is given)."""
    config = EconomyConfig(num_workers=n, steps=steps, warmup=min(1, steps - 1), tax_period=max(1, steps // 4))
    seats = {PLANNER: planner_policy, **{f"worker_{i}": worker_policy for i in range(n)}}
    ids = {agent: "bench" for agent in seats}
    root = n if seed is None else seed
    rollout = Rollout(lambda: raw_env(config), seats, ids, seed=root, concurrency=1, max_retries=max_retries)
    start = time.perf_counter()
    rollout.run(1)
    return time.perf_counter() - start, rollout


def scripted_policies():
    """Fresh best-response workers and hill-climbing planner (no state carried from another episode)."""
    return (
        BestResponseWorker(BestResponseWorker.Config(), seed=0),
        HillClimbingPlanner(HillClimbingPlanner.Config(), seed=0),
    )


def scripted_rows(sizes: list[int], steps: int, repeats: int) -> list[tuple[int, float, int]]:
    """(N, fastest seconds, steps) per size; a warm-up episode first on a seed no size uses."""
    play(sizes[0], min(5, steps), *scripted_policies(), seed=warmup_seed(sizes))
    return [(n, min(play(n, steps, *scripted_policies())[0] for _ in range(repeats)), steps) for n in sizes]


def llm_rows(sizes: list[int], steps: int, make_llm) -> tuple[list[tuple[int, float, int]], dict[int, str], list]:
    """(N, seconds, steps) per size and a note per size; each size with a fresh policy from `make_llm()`
    (an empty prefix cache), after a warm-up step on a throw-away one with a seed no size uses.
    Also returns the policies, one per size."""
    play(sizes[0], 1, make_llm(), scripted_policies()[1], seed=warmup_seed(sizes))
    rows, notes, policies = [], {}, []
    for n in sizes:
        llm = make_llm()
        tally = tally_prompts({"worker": llm})
        seconds, rollout = play(n, steps, llm, scripted_policies()[1])
        counters = [c for c in rollout.counters.values() if c.text_attempts]
        attempts = sum(c.text_attempts for c in counters)
        failures = sum(c.parse_failures for c in counters)
        notes[n] = (
            f"generate calls/step {llm.stats.calls / steps:.1f}, tokens {llm.stats.generated_tokens}, "
            f"parse failures {failures}/{attempts}, prefix-cache hit {cache_hit_fraction(tally):.3f}"
        )
        rows.append((n, seconds, steps))
        policies.append(llm)
    return rows, notes, policies


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

    rows = scripted_rows(args.sizes, args.steps, args.repeats)
    report("scripted workers (best response) + hill-climbing planner, through the rollout engine", rows)

    if args.skip_llm:
        return
    from agents.llm import LLMConfig, LLMPolicy

    config = LLMConfig(
        model=args.model, temperature=0.0, max_new_tokens=args.max_new_tokens, max_batch_size=64, device=args.device
    )
    rows, notes, policies = llm_rows(args.llm_sizes, args.llm_steps, lambda: LLMPolicy(config, seed=0))
    llm = policies[0]
    import torch

    title = (
        f"LLM workers ({args.model}, greedy, max_new_tokens {args.max_new_tokens}, device {llm.device}, torch "
        f"threads {torch.get_num_threads()})"
    )
    report(title + " + hill-climbing planner", rows, notes)


if __name__ == "__main__":
    main()
