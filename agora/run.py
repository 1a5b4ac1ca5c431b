"""`agora run`: play a validated scenario with batched rollouts and record it in MLflow.

Everything that can fail because of the user (the file, the model, the store's address) fails
before the MLflow run is created, so a bad scenario writes nothing. Whatever happens once the run
exists, it ends FINISHED, KILLED (Ctrl-C or SIGTERM, from its creation to its last episode) or
FAILED (an error, which is then raised), with every finished episode logged: the end-of-run
logging is never cut short by a signal (`agora.interrupts.finishing`), each of its pieces is
tried even when another fails, and what the store refuses is saved locally (`agora.tracking`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

import agora
from agora.errors import AgoraError, StoreError
from agora.interrupts import finishing, interruptible, uninterrupted
from agora.overview import overview_pieces
from agora.policy import Policy, policy_tags
from agora.replay import review_sample, write_replays
from agora.rollout import Rollout, SeatCounters, policy_seed
from agora.scenario import ResolvedScenario
from agora.trajectory import TRAJECTORIES, Episode, world_prompt, write_jsonl
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


def summarize(
    episodes: list[Episode], counters: dict[str, SeatCounters], *, tokens: int, seconds: float
) -> dict[str, float]:
    """Run-level metrics: world metrics and returns averaged over episodes, parse figures from the seats'
    `counters`, speed figures from the `tokens` generated in `seconds` of play."""
    summary: dict[str, float] = {}
    values: dict[str, list[float]] = defaultdict(list)
    for episode in episodes:
        for name, value in episode.metrics.items():
            values[f"eval/{name}"].append(value)
        for agent, value in episode.returns.items():
            values[f"eval/return/{agent}"].append(value)
    summary.update({name: float(np.mean(v)) for name, v in values.items()})
    text_counters = [c for c in counters.values() if c.text_attempts or c.unanswered]
    for agent, seat in sorted(counters.items()):
        if seat.text_attempts or seat.unanswered:
            summary[f"parse/failure_rate/{agent}"] = seat.parse_failure_rate
            summary[f"parse/fallback_rate/{agent}"] = seat.fallback_rate
            summary[f"parse/retries/{agent}"] = seat.retries
            if seat.unanswered:
                summary[f"parse/unanswered/{agent}"] = seat.unanswered
    pooled = SeatCounters.total(text_counters)
    summary["parse/failure_rate"] = pooled.parse_failure_rate
    summary["parse/fallback_rate"] = pooled.fallback_rate
    summary["parse/unanswered"] = pooled.unanswered
    summary["perf/episodes"] = len(episodes)
    summary["perf/seconds"] = seconds
    summary["perf/generated_tokens"] = tokens
    summary["perf/tokens_per_s"] = tokens / seconds if seconds else 0.0
    summary["perf/episodes_per_min"] = 60 * len(episodes) / seconds if seconds else 0.0
    return summary


def transcript_table(episodes: list[Episode]) -> dict[str, list]:
    """One row per turn, for MLflow's table view: `prompt` is the world's prompt as the agent read it
    (no chat-template tokens; the token ids are in the trajectories), empty for a seat that acted on
    the observation."""
    columns: dict[str, list] = defaultdict(list)
    for episode in episodes:
        for step in episode.steps:
            columns["episode"].append(episode.index)
            columns["turn"].append(step.turn)
            columns["agent"].append(step.agent)
            columns["policy"].append(episode.policies[step.agent])
            columns["prompt"].append(world_prompt(step))
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
    """Play the scenario's episodes, recorded in an MLflow run unless `track` (default: the scenario's
    `tracking.enabled`) is off. Ctrl-C or SIGTERM returns the finished episodes (`interrupted`); an
    error (also one in the world's report) is raised after the run is marked FAILED; StoreError
    when the store refused some data (then saved locally)."""
    spec = scenario.spec
    track = spec.tracking.enabled if track is None else track
    if track:
        from agora.tracking import check_store, resolve_uri

        check_store(resolve_uri(tracking_uri or spec.tracking.uri))  # a wrong address is told before any work
    rollout = start_rollout(scenario)  # model errors surface here (in the workers too), before any MLflow write
    policy_ids = {agent: seat.entry.name for agent, seat in scenario.seats.items()}
    tracker = None

    def record(episode: Episode) -> None:
        if on_episode:
            on_episode(episode)

    interrupted, error = False, None
    try:
        if track:
            with uninterrupted():  # a signal while the run is created waits until `tracker` can end it
                tracker = open_run(scenario, policy_ids, tracking_uri, rollout.tags)
            log_config(tracker, scenario)
        rollout.run(spec.episodes, on_episode=record)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException as exc:  # any error ends the run FAILED, then is raised
        error = exc
    finally:
        rollout.close()
    episodes = sorted(rollout.episodes, key=lambda e: e.index)
    with interruptible(), finishing(f"finishing: logging {len(episodes)} episodes..."):
        summary = summarize(episodes, rollout.counters, tokens=rollout.tokens, seconds=rollout.seconds)
        report = Report()
        summary.update(rollout.perf())
        if episodes and error is None:
            try:
                report = run_report(scenario.make_world(), episodes)
            except Exception as exc:  # a world's bug: the run fails, its episodes are still logged
                error = exc
        summary.update(report.metrics)
        overview = overview_pieces(tracker, scenario, episodes, summary, interrupted) if tracker else []
        problems = log_end(tracker, episodes, summary, report, overview, spec.tracking.traces) if tracker else []
        error = error or next((exc for _, exc in problems), None)
        if tracker:
            with contextlib.suppress(StoreError):  # the tracker keeps what failed, told below
                tracker.end("FAILED" if error else "KILLED" if interrupted else "FINISHED")
    if error is not None:
        raise failed(error, tracker, episodes, problems)
    if tracker and tracker.failures:
        raise StoreError(tracker.failure_report())
    return RunResult(
        tracker.run_id if tracker else None,
        tracker.uri if tracker else None,
        episodes,
        summary,
        dict(rollout.counters),
        interrupted,
        report,
    )


def worker_environment(scenario: ResolvedScenario) -> dict[str, str]:
    """What Ray workers playing `scenario`'s seats need from this process's environment (`Job.environment`):
    the seats' API keys (`api_key_env` of server agents), unset where the workers run, and a kernel pinned
    for every LLM (AGORA_SKINNY_LINEAR, `agora.kernels`)."""
    names = {getattr(seat.config, "api_key_env", None) for seat in scenario.seats.values()}
    names.add("AGORA_SKINNY_LINEAR")
    return {name: os.environ[name] for name in sorted(n for n in names if n) if name in os.environ}


@dataclass(frozen=True)
class ScenarioJob:
    """A scenario's rollout, built where it is played: here, or in each Ray worker (`agora.execution`)."""

    scenario: ResolvedScenario

    def build(self) -> Rollout:
        spec = self.scenario.spec
        return Rollout(
            self.scenario.make_world,
            build_policies(self.scenario),
            {agent: seat.entry.name for agent, seat in self.scenario.seats.items()},
            seed=spec.seed,
            concurrency=spec.concurrency,
            max_retries=spec.max_retries,
        )

    def environment(self) -> dict[str, str]:
        return worker_environment(self.scenario)


class LocalRollout:
    """A scenario played in this process: the Rollout, with what `agora.execution.RayRollout` also tells."""

    def __init__(self, job: ScenarioJob):
        self.rollout = job.build()
        self.policies = list({id(p): p for p in self.rollout.seats.values()}.values())
        self.tags = policy_tags(self.rollout.seats)
        self.run, self.counters, self.episodes = self.rollout.run, self.rollout.counters, self.rollout.episodes

    @property
    def seconds(self) -> float:
        return self.rollout.seconds

    @property
    def tokens(self) -> int:
        return sum(p.stats.generated_tokens for p in self.policies)

    def perf(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


def start_rollout(scenario: ResolvedScenario):
    """The scenario's rollout on its `execution` backend, its policies built (in this process, or in
    every Ray worker): a LocalRollout or an `agora.execution.RayRollout`."""
    execution = scenario.spec.execution
    if execution.backend == "local":
        return LocalRollout(ScenarioJob(scenario))
    for agent, seat in scenario.seats.items():
        if seat.entry.load().interactive:
            raise AgoraError(
                f"agents.{seat.key}: policy {seat.entry.name} (seat {agent}) reads this terminal, which Ray workers "
                "do not have: play it with execution.backend: local"
            )
    from agora.execution import RayRollout

    return RayRollout(ScenarioJob(scenario), execution, concurrency=scenario.spec.concurrency)


def open_run(
    scenario: ResolvedScenario,
    policy_ids: dict[str, str],
    tracking_uri: str | None,
    extra: dict[str, str] | None = None,
):
    """A new MLflow run for the scenario, tagged with what it plays, its overrides and key metrics (and `extra`)."""
    from agora.listing import listing_tags
    from agora.tracking import Tracker

    spec = scenario.spec
    headline = [f"eval/{key}" for key in getattr(scenario.world_entry.load(), "metric_labels", {})]
    tags = {
        "agora.world": scenario.world_entry.name,
        "agora.agents": ", ".join(f"{a}={p}" for a, p in policy_ids.items()),
        "agora.seed": str(spec.seed),
        "agora.version": agora.__version__,
        "agora.scenario": scenario.source or spec.name,
        **listing_tags(scenario.overrides, headline),
        **(extra or {}),
    }
    return Tracker(tracking_uri or spec.tracking.uri, spec.tracking.experiment or spec.name, spec.name, tags)


def log_config(tracker, scenario: ResolvedScenario) -> None:
    """The resolved scenario as params and `scenario/resolved.json`, and its file as an artifact."""
    config = scenario.resolved_config()
    tracker.log_params(config)
    if scenario.source:
        tracker.log_artifact(scenario.source, "scenario")
    tracker.log_text(json.dumps(config, indent=2), "scenario/resolved.json")


def log_end(
    tracker,
    episodes: list[Episode],
    summary: dict[str, float],
    report: Report,
    extra: Sequence[tuple[str, Callable[[], None]]] = (),
    traced: int = 100,
) -> list[tuple[str, Exception]]:
    """Log a run's end (summary, transcripts, trajectories, the first `traced` episodes as MLflow traces
    and HTML replays (`review_sample`), the world's report, and the `extra` pieces), every piece tried
    even when an earlier one failed: what the store refuses is saved locally by the tracker, which
    remembers it; other errors (bugs) are returned as (piece, error). Run it inside `finishing()`, so
    that no signal cuts it short, then `tracker.end(status)`."""
    pieces = [("summary metrics", lambda: tracker.log_metrics(summary, step=0))]
    if episodes:
        pieces.append(("transcripts.json", lambda: tracker.log_table(transcript_table(episodes), "transcripts.json")))
        pieces.append(
            (
                TRAJECTORIES,
                lambda: tracker.log_file_from(lambda path: write_jsonl(episodes, path), TRAJECTORIES),
            )
        )
    if shown := review_sample(episodes, traced):
        pieces.append(("traces", lambda: tracker.log_traces(shown)))
        pieces.append(
            ("replays", lambda: tracker.log_folder_from(lambda folder: write_replays(shown, folder), "replays"))
        )
    problems = []
    for what, piece in pieces + report_pieces(tracker, report) + list(extra):
        try:
            piece()
        except StoreError:
            pass  # the tracker kept the data and the reason
        except Exception as exc:
            problems.append((what, exc))
    return problems


def failed(error: BaseException, tracker, episodes: list[Episode], problems: list[tuple[str, Exception]]):
    """The error that failed a run, told with what became of the run: its original message and
    traceback are kept (a user's mistake stays an AgoraError for the CLI to print)."""
    if tracker is None:
        return error
    if tracker.failures:
        outcome = tracker.failure_report()
    else:
        outcome = f"run {tracker.run_id} marked FAILED; {len(episodes)} finished episodes logged"
    outcome = "\n  ".join([outcome, *(f"could not log {what}: {exc!r}" for what, exc in problems if exc is not error)])
    if isinstance(error, StoreError):
        return StoreError(outcome)
    if isinstance(error, AgoraError):
        return AgoraError(f"{error}\n  {outcome}")
    if hasattr(error, "add_note"):  # Python 3.11+: shown under the traceback
        error.add_note(outcome)
    return error


def log_report(tracker, report: Report) -> None:
    """A world's report into the run: series as metric histories, tables, figures and texts as artifacts."""
    for _, piece in report_pieces(tracker, report):
        piece()


def report_pieces(tracker, report: Report) -> list[tuple[str, Callable[[], None]]]:
    """Each part of a world's report as (name, log it): series as metric histories, tables, figures and
    texts as artifacts; apart, so that one that fails does not cost the others."""

    def series(name: str, points: list) -> Callable[[], None]:
        def log() -> None:
            for step, value in points:
                tracker.log_metrics({name: value}, step=int(step))

        return log

    pieces = [(name, series(name, points)) for name, points in report.series.items()]
    pieces += [(f, lambda f=f, c=c: tracker.log_table(c, f)) for f, c in report.tables.items()]
    pieces += [(f, lambda f=f, fig=fig: tracker.log_figure(fig, f)) for f, fig in report.figures.items()]
    pieces += [(f, lambda f=f, t=t: tracker.log_text(t, f)) for f, t in report.texts.items()]
    return pieces
