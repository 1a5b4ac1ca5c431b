"""Do werewolves trained with KTO on their games' outcomes deceive better? Werewolf against the rule-based village.

    python bench/learning/kto_werewolf.py                  # both arms, default budget (Budget)
    python bench/learning/kto_werewolf.py iterations=1     # KEY=VALUE overrides reach every arm's campaign

`scenarios/campaigns/werewolf_kto.yaml`: the learner plays both werewolves, the scripted `rule_based` players the
village (the seer claims and accuses, the village trusts the earliest undisproved claimant), every reply decoded
under the world's reply grammar (`learner.constrained: true`). KTO (arXiv 2402.01306), as CONSCIENTIA and MaKTO
train, labels a wolf's decisions by its game's outcome: desirable when the return is above its group's mean (same
initial state), undesirable when below, unlabelled on a tie, and minimises

    lambda_D (1 - sigma(beta (r - z0)))   (desirable),   lambda_U (1 - sigma(beta (z0 - r)))   (undesirable)

with r = log pi(y|x) - log pi_ref(y|x). Two arms at the same budget (iterations, initial states, games per state,
seed, LoRA initialisation, learning rate, sampling):

- kto: the file as written;
- grpo: the same games, GRPO's group advantages (return - group mean) / group std instead of labels: the same
  outcome signal with magnitudes, the usual policy-gradient use of it. Its optimiser steps per iteration
  (`mini_batches`) are set to KTO's expected count (labelled decisions / micro_batch_size), which varies with how
  many games of a group tie; the runs' train/optimizer_steps show both.

Both are evaluated on the same held-out seeds against the rule-based village, before and after training; the
untrained learner on those seeds is the baseline: after - before is paired by seed (t intervals), grpo - kto after
training too. Deception shows as the wolves' score and win rate rising and the village's vote accuracy (its votes
on a werewolf / its votes) and day-1 wolf detection falling. Logged to MLflow (experiment `bench-learning`, run
`kto-werewolf`).

Budget: the default arm plays 2 x 1 x 8 = 16 training games and 2 x 8 held-out games. Measured on the idle 2-core
machine (2026-12-03, docs/results.md): 8 games stepped together take about a minute (58 s), and KTO on ~1,000-token
werewolf prompts about 12 s per labelled decision (one decision a pass under `max_tokens_per_pass: 1200`, the
reference and the mismatched pair scored too): 82 labels took 989 s, so the labels, not the games, set the time
(the KTO arm: 21 min). Against the file's claiming seer the untrained wolves lose most games (the first training
group lost all 8: no label; the second won 2); `opponents.seer_0.seer_claims=false
evaluation.opponents.rule_based.seer_claims=false` (before `--arms`) is the quiet-seer village where words decide
more. The GRPO arm needs `micro_batch_size` of 2 or so on these prompts (16 ran out of 24 GB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import Arm, command_line, compare  # noqa: E402

FILE = "scenarios/campaigns/werewolf_kto.yaml"
BUDGET = {"learner.constrained": True}
SHARED = ("learning_rate", "max_grad_norm", "epochs", "micro_batch_size")
METRICS = ("vote_accuracy", "wolf_detection", "win/werewolves", "days")


def grpo_changes(data: dict, steps: int) -> dict:
    """The keys that turn the KTO file `data` into GRPO at the same budget, with `steps` optimiser steps an
    iteration."""
    trainer = {"id": "grpo", **{k: data["trainer"][k] for k in SHARED if k in data["trainer"]}}
    trainer.update({"statistics": "group", "std_normalize": True, "beta": 0.0, "mini_batches": steps})
    return {"trainer": trainer, "name": f"{data['name']}-grpo"}


def kto_steps(data: dict, decisions_per_game: float = 10.0, labelled: float = 0.8) -> int:
    """KTO's expected optimiser steps an epoch: ceil(labelled decisions / micro_batch_size), with
    `decisions_per_game` learner decisions a game (both wolves: a kill, a statement and a vote a day while alive,
    games of about 2.3 days) and a `labelled` share of them (groups whose games all end alike give none: with 8 games
    and wolves winning 1 in 5, 1 group in 6). GRPO's `mini_batches` are its steps an epoch; both make `epochs`
    passes."""
    games = data.get("groups_per_iteration", 4) * data.get("group_size", 8)
    return max(1, -(-int(games * decisions_per_game * labelled) // data["trainer"].get("micro_batch_size", 8)))


def arms(file: str = FILE) -> list[Arm]:
    """KTO as the file says, and GRPO with the same schedule, learning rate and optimiser steps (`grpo_changes`)."""
    data = yaml.safe_load(Path(file).read_text())
    return [Arm("kto", file, dict(BUDGET)), Arm("grpo", file, {**BUDGET, **grpo_changes(data, kto_steps(data))})]


def command() -> argparse.ArgumentParser:
    """The command line: `common.command_line` and `--arms`, whose names are checked, so that KEY=VALUE overrides
    written after `--arms` (which it would swallow) are refused instead of silently dropped."""
    parser = command_line(__doc__, FILE, "werewolf KTO")
    parser.add_argument(
        "--arms", nargs="+", default=["kto", "grpo"], choices=["kto", "grpo"], help="arms to run (after the overrides)"
    )
    return parser


def main() -> None:
    args = command().parse_args()
    chosen = [a for a in arms(args.file) if a.name in args.arms]
    compare(
        "kto-werewolf",
        chosen,
        overrides=args.overrides,
        uri=args.tracking_uri,
        baseline="kto" if len(chosen) > 1 else None,
        extra=METRICS,
        title="KTO vs GRPO werewolves against the rule-based village",
    )


if __name__ == "__main__":
    main()
