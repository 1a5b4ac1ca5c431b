"""HiPER vs GRPO vs GiGPO on a long negotiation, at the same budget, on held-out seeds.

    python bench/learning/hiper.py                       # the three methods, scenarios/campaigns/negotiation_hiper.yaml
    python bench/learning/hiper.py --methods hiper grpo-plan   # + GRPO on the same plan-execute agent (an ablation)

Every method runs the campaign file's schedule from the same seed: the same iterations, initial states, rollouts per
state, optimizer steps, learning rate and LoRA initialisation; only the trainer (and, for the flat methods, the
learner's reply format) differs:

- hiper: the file as written (a plan-execute learner, hierarchical advantages, value heads);
- grpo / gigpo: the plain `llm` learner (the world's reply format), GRPO's group advantages (gigpo: + anchor-state
  step advantages with gamma 1), the same invalid-action penalty and loss settings;
- grpo-plan: GRPO's group advantages on the plan-execute learner (what the format alone does, without HAE).

Each campaign evaluates on the same held-out seeds before and after training; the script prints, per method, the
held-out score and win rate before and after with 95% intervals, the paired after - before differences and the paired
difference to HiPER per held-out seed (t intervals, `bench/learning/common.py`), and logs them, every held-out game
and a figure to MLflow (experiment `bench-learning`, run `hiper-vs-flat`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import Arm, command_line, compare  # noqa: E402

FILE = "scenarios/campaigns/negotiation_hiper.yaml"
PLAN_KEYS = ("policy", "subgoal_tokens", "subgoal_chars", "example_subgoal")
LOSS_KEYS = ("epsilon", "epsilon_high", "beta", "aggregation", "learning_rate", "weight_decay", "epochs")
LOSS_KEYS += ("mini_batches", "micro_batch_size", "max_grad_norm", "skip_fallbacks", "invalid_action_penalty")


def method_overrides(data: dict, method: str) -> dict:
    """The campaign-file keys that make `method` out of the HiPER file `data`."""
    if method == "hiper":
        return {}
    trainer = {"id": "grpo", **{k: v for k, v in data["trainer"].items() if k in LOSS_KEYS}}
    if method == "gigpo":
        trainer.update({"estimator": "gigpo", "gamma": data["trainer"].get("gamma", 1.0), "step_weight": 1.0})
    out = {"trainer": trainer, "name": f"{data['name']}-{method}"}
    if method in ("grpo", "gigpo"):
        out["learner"] = {k: v for k, v in data["learner"].items() if k not in PLAN_KEYS}
    return out


def main() -> None:
    parser = command_line(__doc__, FILE, "HiPER")
    parser.add_argument("--methods", nargs="+", default=["hiper", "grpo", "gigpo"])
    args = parser.parse_args()
    unknown = set(args.methods) - {"hiper", "grpo", "gigpo", "grpo-plan"}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}: hiper, grpo, gigpo, grpo-plan")
    data = yaml.safe_load(Path(args.file).read_text())
    arms = [Arm(m, args.file, method_overrides(data, m)) for m in args.methods]
    baseline = "hiper" if "hiper" in args.methods else None
    compare(
        "hiper-vs-flat",
        arms,
        overrides=args.overrides,
        uri=args.tracking_uri,
        baseline=baseline,
        extra=("agreement",),
        title="HiPER vs flat methods, negotiation vs greedy",
    )


if __name__ == "__main__":
    main()
