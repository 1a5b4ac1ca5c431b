"""The deferral world's records: episode metrics and facts, the run report (accuracy and deferral
calibration), and the accuracy-vs-cost figure of a comparison of policies.

`DeferralRecords` is a mixin of `raw_env` (worlds/deferral/world.py); it reads the finished
episode's `problem`, `team`, `decisions`, `answer_history`, `expert_answers`, `costs`, `illegal`,
`team_answer` and `correct`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from agora.world import Report
from worlds.deferral.rules import team_would_be_right


class DeferralRecords:
    """Episode metrics, episode info and the run report of the deferral world."""

    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "accuracy": "team accuracy",
        "reward": "mean reward",
        "deferral_rate": "deferral rate (per decision)",
        "expert_calls": "expert calls per problem",
        "cost": "cost per problem",
        "round0_correct": "right in round 0",
        "p_defer_given_team_wrong": "P(defer | team wrong)",
        "p_defer_given_team_right": "P(defer | team right)",
    }

    def episode_metrics(self) -> dict[str, float]:
        """Per episode: `correct`, `deferrals` and `deferral_rate` (of the team's decisions), `creates`,
        `cost` and `reward` (means per team agent), `expert_calls`, `round0_correct` (the team's strict
        plurality after round 0 was right), `illegal`, `difficulty`."""
        decisions = len(self.decisions)
        defers = sum(d["action"] == "DEFER" for d in self.decisions)
        n = len(self.team)
        round0 = self.answer_history[0] if self.answer_history else []
        return {
            "correct": float(self.correct),
            "deferrals": float(defers),
            "deferral_rate": defers / decisions if decisions else 0.0,
            "creates": float(sum(d["action"] == "CREATE" for d in self.decisions)),
            "cost": sum(self.costs.values()) / n,
            "reward": float(self.correct) - sum(self.costs.values()) / n,
            "expert_calls": float(len(self.expert_answers)),
            "round0_correct": float(team_would_be_right(round0, self.problem.answer)),
            "illegal": float(self.illegal),
            "difficulty": float(self.problem.difficulty),
        }

    def episode_info(self) -> dict[str, Any]:
        return {
            "problem": asdict(self.problem),
            "answers_by_round": self.answer_history,
            "decisions": self.decisions,
            "expert_answers": self.expert_answers,
            "team_answer": self.team_answer,
            "correct": self.correct,
            "costs": self.costs,
        }

    def run_report(self, episodes: list) -> Report:
        """Accuracy by difficulty and kind, deferral calibration, and a figure of both.

        Calibration of deferral, pooled over every decision of the run: P(DEFER | team would be wrong)
        and P(DEFER | team would be right), where 'right' means the true answer held a strict
        plurality of the answers when the round began.
        """
        from matplotlib.figure import Figure

        infos = [e.info for e in episodes if e.info.get("problem")]
        if not infos:
            return Report()
        metrics: dict[str, float] = {}
        by_difficulty: dict[int, list[float]] = {}
        defer_by_difficulty: dict[int, list[float]] = {}
        for info in infos:
            d = info["problem"]["difficulty"]
            by_difficulty.setdefault(d, []).append(float(info["correct"]))
            defer_by_difficulty.setdefault(d, []).extend(float(x["action"] == "DEFER") for x in info["decisions"])
        for d, values in sorted(by_difficulty.items()):
            metrics[f"eval/accuracy/difficulty_{d}"] = float(np.mean(values))
        for kind in {i["problem"]["kind"] for i in infos}:
            metrics[f"eval/accuracy/{kind}"] = float(
                np.mean([i["correct"] for i in infos if i["problem"]["kind"] == kind])
            )
        decisions = [x for info in infos for x in info["decisions"]]
        wrong = [x["action"] == "DEFER" for x in decisions if not x["team_right_before"]]
        right = [x["action"] == "DEFER" for x in decisions if x["team_right_before"]]
        metrics["eval/accuracy"] = float(np.mean([i["correct"] for i in infos]))
        if wrong:
            metrics["eval/p_defer_given_team_wrong"] = float(np.mean(wrong))
        if right:
            metrics["eval/p_defer_given_team_right"] = float(np.mean(right))
        figure = Figure(figsize=(8, 3.5))
        left, rightax = figure.subplots(1, 2)
        levels = sorted(by_difficulty)
        left.bar([str(d) for d in levels], [np.mean(by_difficulty[d]) for d in levels], color="tab:blue")
        left.set(xlabel="difficulty", ylabel="team accuracy", ylim=(0, 1), title="accuracy by difficulty")
        rightax.bar(
            ["team would be wrong", "team would be right"],
            [np.mean(wrong) if wrong else 0.0, np.mean(right) if right else 0.0],
            color=["tab:red", "tab:green"],
        )
        rightax.set(ylabel="P(DEFER)", ylim=(0, 1), title=f"deferral calibration ({len(decisions)} decisions)")
        figure.tight_layout()
        table = {
            "episode": [e.index for e in episodes for _ in e.info.get("decisions", [])],
            **{
                key: [x[key] for e in episodes for x in e.info.get("decisions", [])]
                for key in ("round", "agent", "action", "team_right_before", "own_right_before")
            },
        }
        return Report(
            metrics=metrics,
            figures={"deferral/accuracy_and_calibration.png": figure},
            tables={"deferral/decisions.json": table},
        )


def tradeoff_figure(rows: list[dict[str, Any]]):
    """Team accuracy against the mean cost paid per agent, one point per policy (rows: name, accuracy, cost)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4))
    ax = figure.subplots()
    for row in rows:
        ax.scatter(row["cost"], row["accuracy"], s=40)
        ax.annotate(row["name"], (row["cost"], row["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    costs = [row["cost"] for row in rows]
    ax.set_xlim(min(costs) - 0.05, max(costs) * 1.3 + 0.05)  # room for the labels
    ax.set(
        xlabel="mean cost paid per agent (deferrals and creates)",
        ylabel="team accuracy",
        ylim=(0, 1.05),
        title="accuracy vs deferral cost",
    )
    ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure
