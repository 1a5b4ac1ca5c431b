"""GiGPO vs GRPO on a multi-turn negotiation: does step-level credit help where states recur?

    python bench/learning/gigpo.py                   # both arms at the default budget
    python bench/learning/gigpo.py iterations=2      # KEY=VALUE overrides reach every arm's campaign

`scenarios/campaigns/negotiation_grpo.yaml` with up to four turns (the learner opens and decides again on turn 2)
against `fair`, constrained decoding on. Two arms at the same budget (iterations, initial states, rollouts per state,
optimiser steps, learning rate, seed, LoRA initialisation):

- grpo: one advantage per trajectory, (R - mean) / std over the rollouts of one initial state;
- gigpo: + omega * A^S, the step-level advantage of GiGPO (arXiv 2505.10978): steps of one initial state's rollouts
  that reach the same anchor state are compared by their discounted return (gamma 0.95, verl-agent's ALFWorld
  setting). The anchor is the observation without its chat history (`anchor_fields: [counts, values, offer, turn]`):
  with the history every state after the first is unique and A^S vanishes. States recur here because `fair` is
  deterministic: every rollout whose opening offer `fair` rejects faces the same counter-offer on turn 2.

Budget (`BUDGET`): 4 iterations x 4 initial states x 8 rollouts per arm, 32 held-out games per opponent, sized for the
2-core CPU; a GPU-sized comparison would raise `iterations`, `groups_per_iteration` and `world.max_turns`
(overrides). Both evaluated on the same held-out seeds against `fair` and `greedy`; paired after - before and
gigpo - grpo differences by seed (t intervals). MLflow: experiment `bench-learning`, run `gigpo-vs-grpo`, with each
arm's campaign run (gigpo's logs `train/anchor_singletons`, the share of steps alone in their anchor group).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import Arm, command_line, compare  # noqa: E402

FILE = "scenarios/campaigns/negotiation_grpo.yaml"
BUDGET = {
    "world.max_turns": 4,
    "iterations": 4,
    "groups_per_iteration": 4,
    "group_size": 8,
    "learner.constrained": True,
    "evaluation.episodes": 32,
    "evaluation.opponents": {"fair": {"policy": "fair"}, "greedy": {"policy": "greedy"}},
}
GIGPO = {
    "estimator": "gigpo",
    "gamma": 0.95,
    "step_weight": 1.0,
    "anchor_fields": ["counts", "values", "offer", "turn"],
}


def step_groups(runner, result) -> dict[str, float]:
    """The mean over iterations of GiGPO's step-group statistics (absent for GRPO)."""
    out = {}
    for key in ("train/anchor_singletons", "train/anchor_groups", "train/zero_variance_groups"):
        values = [m[key] for m in result.history.values() if key in m]
        if values:
            out[key.removeprefix("train/")] = sum(values) / len(values)
    return out


def arms(file: str = FILE) -> list[Arm]:
    """GRPO, and GiGPO with an abstracted anchor state; everything else equal (`BUDGET`)."""
    gigpo = {f"trainer.{k}": v for k, v in GIGPO.items()}
    return [
        Arm("grpo", file, {**BUDGET, "name": "gigpo-bench-grpo", "trainer.estimator": "grpo"}, step_groups),
        Arm("gigpo", file, {**BUDGET, "name": "gigpo-bench-gigpo", **gigpo}, step_groups),
    ]


def main() -> None:
    parser = command_line(__doc__, FILE, "negotiation GRPO")
    args = parser.parse_args()
    compare(
        "gigpo-vs-grpo",
        arms(args.file),
        overrides=args.overrides,
        uri=args.tracking_uri,
        baseline="grpo",
        extra=("agreement",),
        title="GiGPO vs GRPO, negotiation (4 turns) vs fair",
    )


if __name__ == "__main__":
    main()
