"""`agora run`: play a validated scenario with batched rollouts and record it in MLflow.

Everything that can fail because of the user (the file, the model) fails before the MLflow run
is created, so a bad scenario writes nothing. An interrupted run keeps every finished episode:
they are logged and the run is marked KILLED.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

import agora
from agora.policy import Policy
from agora.rollout import Rollout, SeatCounters, policy_seed
from agora.scenario import ResolvedScenario
from agora.trajectory import Episode, write_jsonl
from agora.world import Report, run_report


@dataclass
class RunResult:
    run_id: str | None
    tracking_uri: str | None
    episodes: list[Episode]
    summary: dict[str, float]
    counters: dict[str, SeatCounters]
    interrupted: bool = False
    report: Report | None = None  # the world's end-of-run report (figures, tables, series)


def build_policies(
    scenario: ResolvedScenario, *, skip: Sequence[str] = (), seed: int | None = None
) -> dict[str, Policy]:
    """One policy per seat but those in `skip`, seeded from `seed` (default the scenario's) and the seat's key;
    seats with identical specs share one instance (and one batched call)."""
    root = scenario.spec.seed if seed is None else seed
    shared: dict[str, Policy] = {}
    seats: dict[str, Policy] = {}
    for agent, seat in scenario.seats.items():
        if agent in skip:
            continue
        spec = json.dumps([seat.entry.name, seat.config.model_dump(mode="json")], sort_keys=True)
        if spec not in shared:
            shared[spec] = seat.entry.load()(seat.config, seed=policy_seed(root, seat.key))
        seats[agent] = shared[spec]
    return seats


def summarize(episodes: list[Episode], rollout: Rollout, policies: list[Policy]) -> dict[str, float]:
    """Run-level metrics: world metrics and returns averaged over episodes, parse and speed figures."""
    summary: dict[str, float] = {}
    values: dict[str, list[float]] = defaultdict(list)
    for episode in episodes:
        for name, value in episode.metrics.items():
            values[f"eval/{name}"].append(value)
        for agent, value in episode.returns.items():
            values[f"eval/return/{agent}"].append(value)
    summary.update({name: float(np.mean(v)) for name, v in values.items()})
    text_counters = [c for c in rollout.counters.values() if c.text_attempts]
    for agent, counters in sorted(rollout.counters.items()):
        if counters.text_attempts:
            summary[f"parse/failure_rate/{agent}"] = counters.parse_failure_rate
            summary[f"parse/fallback_rate/{agent}"] = counters.fallback_rate
            summary[f"parse/retries/{agent}"] = counters.retries
    pooled = SeatCounters.total(text_counters)
    summary["parse/failure_rate"] = pooled.parse_failure_rate
    summary["parse/fallback_rate"] = pooled.fallback_rate
    tokens = sum(p.stats.generated_tokens for p in policies)
    summary["perf/episodes"] = len(episodes)
    summary["perf/seconds"] = rollout.seconds
    summary["perf/generated_tokens"] = tokens
    summary["perf/tokens_per_s"] = tokens / rollout.seconds if rollout.seconds else 0.0
    summary["perf/episodes_per_min"] = 60 * len(episodes) / rollout.seconds if rollout.seconds else 0.0
    return summary


def transcript_table(episodes: list[Episode]) -> dict[str, list]:
    """One row per turn, for MLflow's table view."""
    columns: dict[str, list] = defaultdict(list)
    for episode in episodes:
        for step in episode.steps:
            columns["episode"].append(episode.index)
            columns["turn"].append(step.turn)
            columns["agent"].append(step.agent)
            columns["policy"].append(episode.policies[step.agent])
            columns["prompt"].append(step.prompt)
            columns["text"].append(step.text)
            columns["action"].append(json.dumps(step.action))
            columns["reward"].append(step.reward)
            columns["fallback"].append(step.fallback)
            columns["parse_failures"].append(len(step.failed_attempts))
    return dict(columns)


def run_scenario(
    scenario: ResolvedScenario,
    *,
    tracking_uri: str | None = None,
    track: bool | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> RunResult:
    spec = scenario.spec
    policies = build_policies(scenario)  # model errors surface here, before any MLflow write
    unique = list({id(p): p for p in policies.values()}.values())
    policy_ids = {agent: seat.entry.name for agent, seat in scenario.seats.items()}
    rollout = Rollout(
        scenario.make_world,
        policies,
        policy_ids,
        seed=spec.seed,
        concurrency=spec.concurrency,
        max_retries=spec.max_retries,
    )
    tracker = None
    if spec.tracking.enabled if track is None else track:
        from agora.tracking import Tracker

        tags = {
            "agora.world": scenario.world_entry.name,
            "agora.agents": ", ".join(f"{a}={p}" for a, p in policy_ids.items()),
            "agora.seed": str(spec.seed),
            "agora.version": agora.__version__,
            "agora.scenario": scenario.source or spec.name,
        }
        tracker = Tracker(tracking_uri or spec.tracking.uri, spec.tracking.experiment or spec.name, spec.name, tags)
        config = scenario.resolved_config()
        tracker.log_params(config)
        if scenario.source:
            tracker.log_artifact(scenario.source, "scenario")
        tracker.log_text(json.dumps(config, indent=2), "scenario/resolved.json")

    def record(episode: Episode) -> None:
        if tracker:
            metrics = {f"episode/{k}": v for k, v in episode.metrics.items()}
            metrics.update({f"episode/return/{a}": r for a, r in episode.returns.items()})
            tracker.log_metrics(metrics, step=episode.index)
        if on_episode:
            on_episode(episode)

    interrupted = False
    try:
        rollout.run(spec.episodes, on_episode=record)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if tracker:
            episodes = sorted(rollout.episodes, key=lambda e: e.index)
            _finish(tracker, episodes, summarize(episodes, rollout, unique), None, "FAILED")
        raise
    episodes = sorted(rollout.episodes, key=lambda e: e.index)
    summary = summarize(episodes, rollout, unique)
    report = run_report(scenario.make_world(), episodes) if episodes else Report()
    summary.update(report.metrics)
    if tracker:
        _finish(tracker, episodes, summary, report, "KILLED" if interrupted else "FINISHED")
    return RunResult(
        tracker.run_id if tracker else None,
        tracker.uri if tracker else None,
        episodes,
        summary,
        dict(rollout.counters),
        interrupted,
        report,
    )


def _finish(tracker, episodes: list[Episode], summary: dict[str, float], report: Report | None, status: str) -> None:
    tracker.log_metrics(summary, step=0)
    if episodes:
        tracker.log_table(transcript_table(episodes), "transcripts.json")
        tracker.log_file_from(lambda path: write_jsonl(episodes, path), "trajectories.jsonl")
    if report:
        log_report(tracker, report)
    tracker.end(status)


def log_report(tracker, report: Report) -> None:
    """A world's report into the run: series as metric histories, tables, figures and texts as artifacts."""
    for name, points in report.series.items():
        for step, value in points:
            tracker.log_metrics({name: value}, step=int(step))
    for file, columns in report.tables.items():
        tracker.log_table(columns, file)
    for file, figure in report.figures.items():
        tracker.log_figure(figure, file)
    for file, text in report.texts.items():
        tracker.log_text(text, file)
