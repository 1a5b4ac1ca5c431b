"""Judged group rewards on negotiation groups: ArenaRL's tournament vs SPO's round robin, and the LLM judge vs the
outcome.

Groups: `--groups` initial states x `--group-size` rollouts of alice (scripted `random`) against
`fair`, played by the rollout engine, so that returns differ within a group.

1. With the outcome judge, on the same groups: judge calls of ArenaRL (2G - 2) and SPO (G(G-1)/2)
   and their ratio, and how well the tournament's ranking matches the round robin's (Kendall's
   tau-b between ArenaRL rank rewards and SPO win rates, per group, averaged).
2. The LLM judge (default: the embedded SmolLM2-135M-Instruct) on the first `--llm-pairs` pairs of
   rollouts whose returns differ: agreement with the outcome judge (P > 1/2 on the higher return),
   model calls and seconds; then the same pairs again (reversed), answered from the cache: reported
   as look-ups (no ratio: a look-up is not comparable with a model call). The warm-up prompt, which
   loads the model, is no measured pair and the judge caches whole prompts only (no KV).

    .venv/bin/python bench/judges.py [--groups 40] [--group-size 8] [--llm-pairs 16] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from agora.rollout import (
    GroupRollout,  # noqa: E402
    episode_seed,  # noqa: E402
)
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from trainers.judges import JudgeConfig, LLMJudge, OutcomeJudge  # noqa: E402
from trainers.tournament import arena_tournament, judged_groups, spo_win_rates  # noqa: E402


def negotiation_groups(groups: int, group_size: int, seed: int = 0):
    scenario = resolve_scenario(
        {
            "name": "judges",
            "world": {"id": "negotiation", "max_turns": 4},
            "agents": {"alice": {"policy": "random"}, "bob": {"policy": "fair"}},
            "episodes": 1,
            "seed": seed,
        }
    )
    seats = build_policies(scenario, seed=seed)
    ids = {s: scenario.seats[s].entry.name for s in seats}
    seeds = [episode_seed(seed, g) for g in range(groups)]
    rollout = GroupRollout(
        scenario.make_world, seats, ids, seed=seed, concurrency=64, seeds=seeds, group_size=group_size
    )
    return list(judged_groups(rollout.run(groups * group_size), ["alice"]).values())


def cached_pass_line(model_calls: int, cache_hits: int, seconds: float) -> str:
    """The second pass over the same pairs, reversed: every order was scored in the first pass, so it is
    answered by dictionary look-ups. It is reported as what it is; a ratio to model calls would compare a
    look-up with a forward pass and say nothing about the judge."""
    return (
        f"the same pairs reversed: answered from the judge's cache ({model_calls} model calls, {cache_hits} "
        f"look-ups in {seconds * 1000:.1f} ms; a look-up, not a faster judge); P(a>b) + P(b>a) = 1 on every pair"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--llm-pairs", type=int, default=16)
    parser.add_argument("--model", default=JudgeConfig().model)
    args = parser.parse_args()

    groups = negotiation_groups(args.groups, args.group_size)
    arena_judge, spo_judge, taus = OutcomeJudge(), OutcomeJudge(), []
    for group in groups:
        arena = arena_tournament(group, arena_judge).rewards
        spo = spo_win_rates(group, spo_judge)
        if np.ptp(spo) > 0:
            taus.append(kendalltau(arena, spo).statistic)
    g = args.group_size
    print(f"{len(groups)} groups of {g} (alice random vs fair, negotiation max_turns 4); outcome judge")
    print(
        f"judge calls: ArenaRL {arena_judge.calls} ({arena_judge.calls / len(groups):.0f}/group = 2G-2), "
        f"SPO {spo_judge.calls} ({spo_judge.calls / len(groups):.0f}/group = G(G-1)/2); SPO/ArenaRL = "
        f"{spo_judge.calls / arena_judge.calls:.2f}x"
    )
    print(
        f"Kendall tau-b(ArenaRL rank reward, SPO win rate), mean over {len(taus)} groups with distinct returns: "
        f"{np.mean(taus):.3f} (min {np.min(taus):.3f})"
    )

    pairs = []
    for group in groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = group[i], group[j]
                if a.episode.returns["alice"] != b.episode.returns["alice"] and len(pairs) < args.llm_pairs:
                    pairs.append((a, b))
    judge = LLMJudge(JudgeConfig(id="llm", model=args.model))
    judge.first_preferred([("warm-up", "load")])  # loads the model; one prompt, not counted below
    judge.model_calls = 0
    start = time.perf_counter()
    p = judge.compare(pairs)
    seconds = time.perf_counter() - start
    outcome = OutcomeJudge().compare(pairs)
    agree = np.mean([(pi > 0.5) == (o > 0.5) for pi, o in zip(p, outcome)])
    print(
        f"LLM judge ({args.model}) on {len(pairs)} pairs with different returns: agrees with the outcome on "
        f"{agree:.2f}, "
        f"mean |P - 1/2| = {np.mean(np.abs(np.array(p) - 0.5)):.3f}, {judge.model_calls} model calls in "
        f"{seconds:.1f} s "
        f"({seconds / len(pairs):.2f} s/comparison, {seconds / max(judge.model_calls, 1):.2f} s/model call)"
    )
    calls, hits = judge.model_calls, judge.cache_hits
    start = time.perf_counter()
    q = judge.compare([(b, a) for a, b in pairs])
    again = time.perf_counter() - start
    assert np.allclose(np.array(p) + np.array(q), 1.0)
    print(cached_pass_line(judge.model_calls - calls, judge.cache_hits - hits, again))


if __name__ == "__main__":
    main()
