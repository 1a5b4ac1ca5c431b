"""Held-out evaluation of a train campaign's learner: scores and win rates with 95% intervals, the learning curve."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agora.campaign import CampaignResult
from agora.rollout import Rollout, SeatCounters, policy_seed
from agora.run import build_policies
from agora.trajectory import Episode


def mean_ci(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and its normal-approximation 95% interval, mean -/+ z * s / sqrt(n)."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    half = z * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return m, m - half, m + half


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (draws count as half a success)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def episode_outcome(episode: Episode, learner_seats: list[str]) -> tuple[float, float]:
    """(the learner's score: its seats' mean return, win: 1 if it beats every other seat, 0.5 if it ties the best,
    else 0)."""
    mine = float(np.mean([episode.returns[s] for s in learner_seats]))
    others = [r for s, r in episode.returns.items() if s not in learner_seats]
    best_other = max(others) if others else mine
    return mine, 1.0 if mine > best_other else 0.5 if mine == best_other else 0.0


def evaluation_metrics(name: str, episodes: list[Episode], learner_seats: list[str]) -> dict[str, float]:
    """eval/<opponent>/score (learner's mean return, 95% CI), win_rate (beats every other seat; a tie
    with the best counts half; Wilson 95% CI) and the world's episode metrics averaged."""
    scores, wins = [], 0.0
    values: dict[str, list[float]] = {}
    for episode in episodes:
        mine, won = episode_outcome(episode, learner_seats)
        scores.append(mine)
        wins += won
        for key, value in episode.metrics.items():
            values.setdefault(key, []).append(value)
    score, low, high = mean_ci(scores)
    win_low, win_high = wilson_interval(wins, len(episodes))
    out = {
        f"eval/{name}/score": score,
        f"eval/{name}/score_ci_low": low,
        f"eval/{name}/score_ci_high": high,
        f"eval/{name}/win_rate": wins / len(episodes),
        f"eval/{name}/win_rate_ci_low": win_low,
        f"eval/{name}/win_rate_ci_high": win_high,
    }
    out.update({f"eval/{name}/{key}": float(np.mean(v)) for key, v in values.items()})
    return out


def learning_curve(result: CampaignResult, opponents: list[str]):
    """The learner's mean training reward per iteration, and its evaluation score (95% CI) per opponent."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    rewards = {i: m.get("train/reward/learner", float("nan")) for i, m in result.history.items()}
    steps = sorted(rewards)
    left.plot(steps, [rewards[s] for s in steps], marker="o")
    left.set(title="training reward (learner, mean per iteration)", xlabel="iteration", ylabel="return")
    for name in opponents:
        points = sorted((s, m) for s, m in result.evaluations.items() if f"eval/{name}/score" in m)
        x = [s for s, _ in points]
        y = [m[f"eval/{name}/score"] for _, m in points]
        low = [m[f"eval/{name}/score"] - m[f"eval/{name}/score_ci_low"] for _, m in points]
        high = [m[f"eval/{name}/score_ci_high"] - m[f"eval/{name}/score"] for _, m in points]
        right.errorbar(x, y, yerr=[low, high], marker="o", capsize=4, label=name)
    right.set(title="held-out evaluation score (95% CI)", xlabel="iteration", ylabel="learner's mean score")
    right.legend(title="opponent")
    return figure


def evaluate(
    campaign: Any,
    model: Any,
    tokenizer: Any,
    played: dict[str, list[Episode]] | None = None,
    *,
    episodes: int | None = None,
    temperature: float | None = None,
) -> dict[str, float]:
    """Play the held-out seeds against each fixed opponent of `campaign` (a train campaign) with the learner's
    current weights; the sampler is reseeded, so every evaluation draws alike. Returns eval/<opponent>/* metrics;
    the episodes go into `played` (opponent -> episodes) when it is given. `episodes` (default
    `evaluation.episodes`) and the learner's sampling `temperature` (default its own) may be set by the kind."""
    spec, out = campaign.spec, {}
    config = campaign.learner_config
    if temperature is not None:
        config = config.model_copy(update={"temperature": temperature})
    for name, scenario in campaign.evaluations.items():
        learner = campaign.learner_for(
            config, seed=policy_seed(spec.evaluation.seed, "learner"), model=model, tokenizer=tokenizer
        )
        mine = campaign.eval_seats
        fixed = build_policies(scenario, skip=mine, seed=spec.evaluation.seed)
        seats = {**{s: learner for s in mine}, **fixed}
        ids = {s: "learner" if s in mine else scenario.seats[s].entry.name for s in seats}
        rollout = Rollout(
            scenario.make_world,
            seats,
            ids,
            seed=spec.evaluation.seed,
            concurrency=spec.concurrency,
            max_retries=spec.max_retries,
        )
        model.eval()
        done = rollout.run(episodes or spec.evaluation.episodes)
        out.update(evaluation_metrics(name, done, mine))
        if played is not None:
            played[name] = done
        counts = SeatCounters.total(c for s, c in rollout.counters.items() if s in mine)
        out[f"eval/{name}/parse_failure_rate"] = counts.parse_failure_rate
        out[f"eval/{name}/fallback_rate"] = counts.fallback_rate
    return out


def is_interval_bound(key: str) -> bool:
    """`eval/<opponent>/*_ci_low|high`: in the evaluation table, not metrics of their own (one chart per bound)."""
    return key.endswith(("_ci_low", "_ci_high"))


def evaluation_table(evaluations: dict[int, dict[str, float]], opponents: list[str]) -> dict[str, list[Any]]:
    """Every held-out evaluation (MLflow table): one row per step and opponent, the score and win rate with
    their 95% intervals, then the world's metrics and parse rates (empty where a row lacks one)."""
    rows = []
    for step, metrics in sorted(evaluations.items()):
        for name in opponents:
            prefix = f"eval/{name}/"
            mine = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
            if mine:
                rows.append({"step": step, "opponent": name, **mine})
    first = ["step", "opponent", "score", "score_ci_low", "score_ci_high", "win_rate", "win_rate_ci_low"]
    first.append("win_rate_ci_high")
    keys = first + sorted({k for row in rows for k in row} - set(first))
    return {key: [row.get(key) for row in rows] for key in keys} if rows else {}
