"""Held-out evaluation of a HILA campaign: the trained team against teams that differ only in when they defer.

Every team answers the same held-out problems with the same round-0 answers: the learner's, sampled in the
evaluation's play. The trained team then decides as it did in play; each baseline's later-round decisions come
from its rule (agents/scripted/deferral.py), applied by replaying the problem (`worlds.deferral.replay`) with the
expert's same reply:

- `never_defer`: EVAL an agent holding the plurality answer, else CREATE (its own answer again); never DEFER.
- `always_defer`: DEFER every round.
- `defer_when_disagree`: DEFER unless the team is unanimous, then EVAL.
- `oracle`: EVAL an agent whose answer is right, DEFER when none is (reads the true answer: the upper bound).

Per team: accuracy (Wilson 95% interval), deferral rate per decision (Wilson), reward and cost per problem
(mean, normal 95% interval), accuracy and deferral rate by difficulty, P(DEFER | team wrong) and
P(DEFER | team right), and the trained team's reward minus each baseline's, paired by problem (normal 95%
interval): the verdict says whether the trained team is above, below or not distinguishable.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from agents.scripted.deferral import AlwaysDefer, DeferWhenDisagree, NeverDefer, Oracle
from agora.trajectory import Episode
from campaigns.evaluation import mean_ci, wilson_interval
from campaigns.hila_groups import played_actions
from worlds.deferral.replay import ExpertReply, recorded_team, replay
from worlds.deferral.world import DeferralConfig, raw_env

TRAINED = "trained"


class OwnAnswer:
    """A rule that 'solves again' by repeating its current answer: baselines answer with the team's LLM answers,
    never with the scripted solver."""

    def solve(self, observation: dict[str, Any], rng: np.random.Generator) -> str:
        return str(observation["answers"][int(observation["self"])])


class NeverDeferRule(OwnAnswer, NeverDefer):
    pass


class AlwaysDeferRule(OwnAnswer, AlwaysDefer):
    pass


class DeferWhenDisagreeRule(OwnAnswer, DeferWhenDisagree):
    pass


class OracleRule(OwnAnswer, Oracle):
    pass


BASELINES = {
    "never_defer": NeverDeferRule,
    "always_defer": AlwaysDeferRule,
    "defer_when_disagree": DeferWhenDisagreeRule,
    "oracle": OracleRule,
}
TEAMS = (TRAINED, *BASELINES)


def rule_team(name: str, played: dict[tuple[int, str], Any]) -> Callable[[str, dict[str, Any], raw_env], Any]:
    """The `replay` callback of baseline `name`: round 0 as played, later rounds by the rule."""
    rule = BASELINES[name](BASELINES[name].Config(), seed=0)  # its decisions draw nothing
    rng = np.random.default_rng(0)

    def choose(agent: str, observation: dict[str, Any], world: raw_env) -> Any:
        if int(observation["round"]) == 0:
            return played.get((0, agent))
        return rule.decide(observation, rng)

    return choose


def team_worlds(
    episodes: list[Episode], config: DeferralConfig, expert_for: Callable[[Episode], ExpertReply]
) -> dict[str, list[raw_env]]:
    """team -> the finished world of each episode's problem as that team played it."""
    oracle_config = config.model_copy(update={"oracle_observations": True})
    out: dict[str, list[raw_env]] = {team: [] for team in TEAMS}
    for episode in episodes:
        played, expert = played_actions(episode), expert_for(episode)
        out[TRAINED].append(replay(config, episode.seed, recorded_team(played), expert))
        for name in BASELINES:
            out[name].append(
                replay(oracle_config if name == "oracle" else config, episode.seed, rule_team(name, played), expert)
            )
    return out


def team_metrics(name: str, worlds: list[raw_env]) -> dict[str, float]:
    """eval/<name>/*: accuracy, deferral rate, reward, cost with 95% intervals; by difficulty; calibration."""
    rows = [w.episode_metrics() for w in worlds]
    decisions = [d for w in worlds for d in w.decisions]
    correct = sum(r["correct"] for r in rows)
    defers = sum(d["action"] == "DEFER" for d in decisions)
    p = f"eval/{name}/"
    out = {p + "problems": float(len(rows)), p + "accuracy": correct / len(rows)}
    out[p + "accuracy_ci_low"], out[p + "accuracy_ci_high"] = wilson_interval(correct, len(rows))
    out[p + "deferral_rate"] = defers / len(decisions) if decisions else 0.0
    out[p + "deferral_rate_ci_low"], out[p + "deferral_rate_ci_high"] = wilson_interval(defers, len(decisions))
    for key in ("reward", "cost"):
        out[p + key], out[p + key + "_ci_low"], out[p + key + "_ci_high"] = mean_ci([r[key] for r in rows])
    for level in sorted({int(r["difficulty"]) for r in rows}):
        mine = [w for w in worlds if w.problem.difficulty == level]
        chosen = [d["action"] == "DEFER" for w in mine for d in w.decisions]
        out[p + f"accuracy_difficulty_{level}"] = float(np.mean([w.correct for w in mine]))
        out[p + f"deferral_rate_difficulty_{level}"] = float(np.mean(chosen)) if chosen else 0.0
    for right, key in ((False, "p_defer_given_team_wrong"), (True, "p_defer_given_team_right")):
        chosen = [d["action"] == "DEFER" for d in decisions if d["team_right_before"] == right]
        if chosen:
            out[p + key] = float(np.mean(chosen))
    return out


def evaluation_metrics(worlds: dict[str, list[raw_env]]) -> dict[str, float]:
    """Every team's `team_metrics`, and eval/trained_minus_<baseline>/reward: the paired difference (95% CI)."""
    out: dict[str, float] = {}
    for name, team in worlds.items():
        out.update(team_metrics(name, team))
    trained = np.array([w.episode_metrics()["reward"] for w in worlds[TRAINED]])
    for name in BASELINES:
        theirs = np.array([w.episode_metrics()["reward"] for w in worlds[name]])
        p = f"eval/trained_minus_{name}/reward"
        out[p], out[p + "_ci_low"], out[p + "_ci_high"] = mean_ci(list(trained - theirs))
    return out


def verdict(metrics: dict[str, float], name: str) -> str:
    """Whether the trained team's reward is above baseline `name`'s: the paired difference's 95% interval."""
    p = f"eval/trained_minus_{name}/reward"
    if metrics[p + "_ci_low"] > 0:
        return "trained above"
    if metrics[p + "_ci_high"] < 0:
        return "trained below"
    return "not distinguishable"


def interval(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.3f} [{metrics[key + '_ci_low']:.2f}, {metrics[key + '_ci_high']:.2f}]"


def verdict_rows(metrics: dict[str, float]) -> list[list[str]]:
    """One row per team: accuracy, deferral rate, cost, reward (95% CIs), trained - this (paired), verdict."""
    rows = []
    for name in TEAMS:
        p = f"eval/{name}/"
        row = [name, interval(metrics, p + "accuracy"), interval(metrics, p + "deferral_rate")]
        row += [interval(metrics, p + "cost"), interval(metrics, p + "reward")]
        if name == TRAINED:
            row += ["-", "-"]
        else:
            row += [interval(metrics, f"eval/trained_minus_{name}/reward"), verdict(metrics, name)]
        rows.append(row)
    return rows


VERDICT_COLUMNS = ["team", "accuracy", "deferral rate", "cost", "reward", "trained - this (paired)", "verdict"]


def evaluations_figure(evaluations: list[dict[str, Any]]):
    """Left: every team's held-out reward (95% CI) at each evaluation ({step, after, metrics}: before training, after
    each inner and outer phase). Right: each team's deferral rate by difficulty at the last one (calibration)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    points = [e["metrics"] for e in evaluations]
    for team in TEAMS:
        key = f"eval/{team}/reward"
        y = [m[key] for m in points]
        err = [[m[key] - m[key + "_ci_low"] for m in points], [m[key + "_ci_high"] - m[key] for m in points]]
        left.errorbar(range(len(points)), y, yerr=err, marker="o", capsize=3, label=team)
    left.set_xticks(range(len(points)), [e["after"] for e in evaluations], rotation=30, ha="right")
    left.set(title="held-out reward per problem (95% CI)", ylabel="1[correct] - costs")
    left.legend(fontsize=8)
    last = points[-1] if points else {}
    levels = sorted({k.rsplit("_", 1)[1] for k in last if "/deferral_rate_difficulty_" in k})
    width = 0.8 / len(TEAMS)
    for t, team in enumerate(TEAMS):
        values = [last.get(f"eval/{team}/deferral_rate_difficulty_{d}", 0.0) for d in levels]
        right.bar([k + t * width for k in range(len(levels))], values, width=width, label=team)
    right.set_xticks([k + 0.4 - width / 2 for k in range(len(levels))], [f"difficulty {d}" for d in levels])
    right.set(title="deferral rate by difficulty (last evaluation)", ylabel="P(DEFER) per decision", ylim=(0, 1))
    return figure


def level_figure(history: dict[int, dict[str, float]], level: str):
    """The metrics `<level>/*` (inner or outer) against the campaign step, one panel each."""
    from matplotlib.figure import Figure

    keys = sorted({k for m in history.values() for k in m if k.startswith(level + "/")})
    columns = max(1, min(3, len(keys)))
    rows = max(1, -(-len(keys) // columns))
    figure = Figure(figsize=(4 * columns, 3 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, key in zip(axes, keys):
        points = sorted((s, m[key]) for s, m in history.items() if key in m)
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o")
        ax.set(title=key, xlabel="step")
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    figure.suptitle(f"{level} loop")
    return figure
