"""Do judged group rewards beat plain returns? SPO and ArenaRL with an LLM judge against GRPO on returns, negotiation.

    python bench/learning/spo_judge.py                     # the three arms at the default budget
    python bench/learning/spo_judge.py iterations=2        # KEY=VALUE overrides reach every arm's campaign

`scenarios/campaigns/negotiation_spo.yaml` (the learner opens, `fair` accepts an offer worth at least half its pool
value or counters, then time is up), every reply decoded under the world's reply grammar (`learner.constrained:
true`: every reply parses, so neither the judge nor the return can reward the format). Three arms at the same budget
(iterations, initial states, rollouts per state, optimiser steps, learning rate, seed, LoRA initialisation) that
differ only in the trajectory reward of the GRPO group (`trainer.group_reward`, `trainer.judge`):

- `outcome`: the return (`group_reward: return`), the baseline;
- `spo-llm`: the SPO win rate r_i = 1/(G-1) sum_{j != i} P(i > j) ("A Minimaximalist Approach to Reinforcement
  Learning from Human Feedback", arXiv 2401.04056), P from the `llm` judge: the embedded model reads `RUBRIC` and
  both transcripts, in both orders; G(G-1)/2 comparisons, G(G-1) prompts per group;
- `arena-llm`: ArenaRL's anchor-seeded single elimination rank reward 1 - rank/(G-1) ("ArenaRL: Scaling RL for
  Open-Ended Agents via Tournament-based Relative Ranking", arXiv 2601.06487) from the same judge; 2G-2
  comparisons, 4G-4 prompts per group (rollout 0, the anchor, decoded greedily).

Read on the same held-out seeds before and after training (`bench/learning/common.py`): the game score and win rate,
after - before and arm - outcome paired by seed. Then the judged quality (`judged_pairs`): the same judge's
P(trained transcript > untrained transcript) on each held-out seed, its mean (a paired win rate, 0.5 = no
preference; a reply that did not change is exactly 0.5) with a t interval; and, as a diagnostic of the judge, its
agreement with the outcome on the pairs whose scores differ: the share of them where the judge prefers the one with
the higher score (a judge at P = 0.5 counts half). The trainer logs only the judge's costs (`train/judge_calls`,
model calls, cache hits), so the agreement is measured on these held-out pairs, not on the training groups.
Logged to MLflow (experiment `bench-learning`, run `spo-judge`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import Arm, command_line, compare, fmt, t_interval  # noqa: E402

FILE = "scenarios/campaigns/negotiation_spo.yaml"
RUBRIC = (
    "You are a strict judge of negotiations. Two transcripts A and B of the same negotiation, over the same items "
    "and from the same starting position, follow. Lines of the player being judged are marked with '(judged)'. "
    "The judged player negotiates well when it gets a good deal that the other side accepts: it keeps as much of "
    "the items as it can for itself while the other side still says yes. A proposal that the other side rejects "
    "or counters, or no deal at all, is worse than an accepted one. Decide in which transcript the judged player "
    "negotiates better. Answer with one letter: A or B."
)
JUDGE = {"id": "llm", "rubric": RUBRIC}
# What every arm shares (on top of the file): the file's own schedule (5 iterations x 2 initial states x 8 rollouts,
# 2 optimizer steps each), 32 held-out games and constrained decoding. Sized for about 17 minutes of all three arms on
# an idle 2-core CPU, estimated from the idle figures of the GRPO proof and the judge bench: ~29 s per iteration of
# 16 episodes, ~0.55 s per held-out game, ~15 s to load per arm; 0.43 s per judge prompt, SPO 560 prompts, ArenaRL 280,
# the judged quality <= 64 per arm: 3 x 185 s + (560 + 280 + 192) x 0.43 s = 1000 s.
BUDGET = {
    "iterations": 5,
    "groups_per_iteration": 2,
    "group_size": 8,
    "learner.constrained": True,
    "evaluation.episodes": 32,
    "evaluation.opponents": {"fair": {"policy": "fair"}},
    "opponents.bob": {"policy": "fair"},
}
# What makes each arm: the trajectory reward of the GRPO group and the judge behind it.
REWARDS = {
    "outcome": {"trainer.group_reward": "return", "trainer.judge": {"id": "outcome"}},
    "spo-llm": {"trainer.group_reward": "spo", "trainer.judge": JUDGE},
    "arena-llm": {"trainer.group_reward": "arena", "trainer.judge": JUDGE},
}


def judged_pairs(judge, before: list, after: list, seats: list[str]) -> list[dict[str, float]]:
    """Per held-out seed both evaluations played: p = the judge's P(after > before) for `seats` (the transcripts of
    the trained and the untrained learner), and the score of each (the seats' mean return)."""
    from campaigns.evaluation import episode_outcome
    from trainers.judges import Candidate

    theirs = {e.seed: e for e in before}
    games = [(e, theirs[e.seed]) for e in after if e.seed in theirs]
    p = judge.compare([(Candidate(a, tuple(seats)), Candidate(b, tuple(seats))) for a, b in games])
    return [
        {"seed": a.seed, "p": pa, "score": episode_outcome(a, seats)[0], "score_before": episode_outcome(b, seats)[0]}
        for (a, b), pa in zip(games, p)
    ]


def judge_agreement(pairs: list[dict[str, float]]) -> tuple[float, int]:
    """Among pairs whose scores differ: the mean of 1 if the judge prefers the higher score (sign(p - 1/2) =
    sign(score - score_before)), 1/2 if p = 1/2, else 0; and how many such pairs there were (nan for none)."""
    marks = [
        0.5 if r["p"] == 0.5 else float((r["p"] > 0.5) == (r["score"] > r["score_before"]))
        for r in pairs
        if r["score"] != r["score_before"]
    ]
    return (float(np.mean(marks)) if marks else float("nan")), len(marks)


def judge_costs(history: dict[int, dict[str, float]]) -> dict[str, float]:
    """The training judge's comparisons (summed over iterations), model calls and cache hits (running totals: the
    last iteration's), from the trainer's `train/judge_*` metrics; zeros for an arm without a judge."""
    last = history[max(history)] if history else {}
    return {
        "judge_calls": float(sum(m.get("train/judge_calls", 0.0) for m in history.values())),
        "judge_model_calls": float(last.get("train/judge_model_calls_total", 0.0)),
        "judge_cache_hits": float(last.get("train/judge_cache_hits_total", 0.0)),
    }


class JudgedQuality:
    """An `Arm.collect` hook: the judge's preference for the trained learner's held-out transcripts over the
    untrained ones' (`judged_pairs`, per opponent) and the training judge's costs. One judge, so one model load
    and one answer cache, serves every arm."""

    def __init__(self, judge: dict[str, Any] = JUDGE):
        from trainers.judges import JudgeConfig, build_judge

        self.judge = build_judge(JudgeConfig(**judge))

    def __call__(self, runner, result) -> dict[str, Any]:
        first, last = min(runner.played_at), max(runner.played_at)
        seats = runner.campaign.eval_seats
        out: dict[str, Any] = judge_costs(result.history)
        for name, after in runner.played_at[last].items():
            pairs = judged_pairs(self.judge, runner.played_at[first][name], after, seats)
            mean, low, high = t_interval(r["p"] for r in pairs)
            agreement, decided = judge_agreement(pairs)
            out |= {f"judged/{name}": mean, f"judged_low/{name}": low, f"judged_high/{name}": high}
            out |= {f"judge_agreement/{name}": agreement, f"judge_decided/{name}": float(decided)}
            out[f"pairs/{name}"] = pairs
        return out


def quality_lines(rows: list[dict]) -> list[str]:
    """Markdown: per arm and opponent, the judge's P(trained > untrained) on the held-out seeds (95% t interval),
    its agreement with the score and the training judge's costs."""
    lines = [
        "| arm | opponent | judged P(after > before) | judge agrees with score (pairs) | train judge calls | "
        "model calls | cache hits |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        extra = row["extra"]
        for name in row["after"]:
            judged = (extra[f"judged/{name}"], extra[f"judged_low/{name}"], extra[f"judged_high/{name}"])
            agree = f"{extra[f'judge_agreement/{name}']:.2f} ({extra[f'judge_decided/{name}']:.0f})"
            costs = " | ".join(f"{extra[k]:.0f}" for k in ("judge_calls", "judge_model_calls", "judge_cache_hits"))
            lines.append(f"| {row['arm']} | {name} | {fmt(judged)} | {agree} | {costs} |")
    return lines


def arms(file: str = FILE, collect=None) -> list[Arm]:
    """The three arms: `BUDGET` and the arm's `REWARDS` keys on the same file."""
    return [Arm(name, file, {**BUDGET, "name": f"spo-judge-{name}", **keys}, collect) for name, keys in REWARDS.items()]


def main() -> None:
    parser = command_line(__doc__, FILE, "negotiation SPO")
    args = parser.parse_args()
    out = compare(
        "spo-judge",
        arms(args.file, JudgedQuality()),
        overrides=args.overrides,
        uri=args.tracking_uri,
        baseline="outcome",
        extra=("agreement",),
        title="GRPO on returns vs SPO / ArenaRL with an LLM judge, negotiation vs fair",
    )
    print("\n".join(quality_lines(out["rows"])))


if __name__ == "__main__":
    main()
