"""Does GRPO learn to bargain, not only to answer? Negotiation against `fair` and `greedy`, constrained decoding on.

    python bench/learning/grpo_bargain.py                  # both arms at the default budget (about 25 min on 2 cores)
    python bench/learning/grpo_bargain.py iterations=2     # KEY=VALUE overrides reach every arm's campaign

`scenarios/campaigns/negotiation_grpo.yaml` (the learner opens, the opponent accepts or counters, then time is up),
with every reply decoded under the world's reply grammar (`learner.constrained: true`), so every reply parses and the
format cannot be what GRPO learns: what is left is which offer to make. Two arms at the same budget (iterations,
initial states, rollouts per state, optimiser steps, seed, LoRA initialisation), trained against `fair` (accepts an
offer worth at least half its pool value) or against `greedy` (accepts at least 80%); both evaluated against both on
the same held-out seeds, before and after training. The untrained learner on the same seeds is the baseline: the
table's after - before columns are paired by seed (t intervals). Logged to MLflow (experiment `bench-learning`, run
`grpo-bargain`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import Arm, command_line, compare  # noqa: E402

FILE = "scenarios/campaigns/negotiation_grpo.yaml"
BUDGET = {
    "iterations": 8,
    "groups_per_iteration": 4,
    "group_size": 8,
    "learner.constrained": True,
    "evaluation.episodes": 48,
    "evaluation.opponents": {"fair": {"policy": "fair"}, "greedy": {"policy": "greedy"}},
}


def arms(file: str = FILE) -> list[Arm]:
    """GRPO trained against `fair`, and against `greedy`; everything else equal (`BUDGET`)."""
    return [
        Arm(
            f"vs-{opponent}",
            file,
            {**BUDGET, "name": f"grpo-bargain-vs-{opponent}", "opponents.bob": {"policy": opponent}},
        )
        for opponent in ("fair", "greedy")
    ]


def main() -> None:
    parser = command_line(__doc__, FILE, "negotiation GRPO")
    args = parser.parse_args()
    compare(
        "grpo-bargain",
        arms(args.file),
        overrides=args.overrides,
        uri=args.tracking_uri,
        extra=("agreement",),
        title="GRPO on negotiation, constrained decoding",
    )


if __name__ == "__main__":
    main()
