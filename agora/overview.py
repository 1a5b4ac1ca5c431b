"""What a reviewer sees first: a run's summary as labelled rows (`agora run`'s table), as the MLflow run's
description (markdown), and its episodes as one table.

MLflow lists a run's metrics by name and shows each one's last value. Per-episode values logged as metric
histories would show the last episode's value (`episode/agreement 0`) among the run's means, so they go
into `episodes.json` instead (one row per episode: seed, policies, returns, the world's metrics), and the
run's metrics are only the run-level ones (`eval/*` means, `parse/*`, `perf/*`, the world's report).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from agora.errors import plural
from agora.scenario import ResolvedScenario
from agora.trajectory import Episode

RATES = {
    "parse/failure_rate": "parse-failure rate",
    "parse/fallback_rate": "fallback rate",
    "perf/tokens_per_s": "generated tokens/s",
    "perf/episodes_per_min": "episodes/min",
    "perf/workers": "Ray rollout workers",
    "perf/worker_restarts": "worker restarts",
}


def summary_rows(scenario: ResolvedScenario, summary: dict[str, float]) -> list[tuple[str, str, float]]:
    """(label, metric key, value) of the run-level metrics a user reads first: the world's labelled metrics
    (its `metric_labels`), the seats' mean scores, parse and speed figures, then the world's other means."""
    world_labels = getattr(scenario.world_entry.load(), "metric_labels", {})
    labels = {f"eval/{key}": label for key, label in world_labels.items()} | RATES
    for agent, seat in scenario.seats.items():
        labels[f"eval/score/{agent}"] = f"mean score {agent} ({seat.entry.name})"
    if not summary.get("perf/generated_tokens"):
        labels.pop("perf/tokens_per_s")  # no model in this run
    shown = [k for k in labels if k in summary]
    shown += sorted(
        k for k in summary if k.startswith("eval/") and k not in labels and not k.startswith("eval/return/")
    )
    return [(labels.get(key, key.removeprefix("eval/")), key, summary[key]) for key in shown]


def number(value: float) -> str:
    """A metric's value as the summary prints it: 3 decimals, or thousands separators when large."""
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def run_note(scenario: ResolvedScenario, summary: dict[str, float], *, interrupted: bool = False) -> str:
    """The run's MLflow description (markdown): what was played (world, seats, episodes, seed), the summary
    table of `agora run` with each metric's key, the seats' mean returns, and where the details are."""
    from agora.tracking import markdown_table

    spec, played = scenario.spec, int(summary.get("perf/episodes", 0))
    episodes = (
        f"{played} of {plural(spec.episodes, 'episode')} (interrupted)" if interrupted else plural(played, "episode")
    )
    where = spec.execution
    lines = [
        f"**{scenario.world_entry.name}** · {episodes} · seed {spec.seed}"
        + (f" · scenario `{scenario.source}`" if scenario.source else "")
        + (f" · {plural(where.workers, 'Ray worker')}" if where.backend == "ray" else ""),
        "",
    ]
    seats = []
    for agent, seat in scenario.seats.items():
        model = getattr(seat.config, "model", None)
        mean = summary.get(f"eval/return/{agent}")
        seats.append([agent, seat.entry.name + (f" ({model})" if model else ""), "-" if mean is None else number(mean)])
    lines += [markdown_table(["seat", "policy", "mean return"], seats), ""]
    rows = [[label, number(value), f"`{key}`"] for label, key, value in summary_rows(scenario, summary)]
    lines += [markdown_table(["metric (mean over episodes)", "value", "MLflow metric"], rows), ""]
    lines.append(
        "Per episode: `episodes.json` (seed, returns, the world's metrics); every turn: `transcripts.json`; "
        "token-level records: `trajectories.jsonl.gz`."
    )
    return "\n".join(lines)


def episode_table(episodes: list[Episode]) -> dict[str, list[Any]]:
    """One row per episode (MLflow table): index, seed, each seat's policy and return, the world's metrics
    (empty where an episode lacks one)."""
    seats = list(dict.fromkeys(a for e in episodes for a in [*e.policies, *e.returns]))
    metrics = list(dict.fromkeys(k for e in episodes for k in e.metrics))
    columns: dict[str, list[Any]] = defaultdict(list)
    for episode in episodes:
        columns["episode"].append(episode.index)
        columns["seed"].append(episode.seed)
        for agent in seats:
            columns[f"policy/{agent}"].append(episode.policies.get(agent))
        for agent in seats:
            columns[f"return/{agent}"].append(episode.returns.get(agent))
        for name in metrics:
            columns[name].append(episode.metrics.get(name))
    return dict(columns)


def overview_pieces(
    tracker, scenario: ResolvedScenario, episodes: list[Episode], summary: dict[str, float], interrupted: bool
) -> list[tuple[str, Callable[[], None]]]:
    """The run's end-of-run overview as `log_end` pieces: `episodes.json` and the description."""
    pieces = [("description", lambda: tracker.set_note(run_note(scenario, summary, interrupted=interrupted)))]
    if episodes:
        pieces.insert(0, ("episodes.json", lambda: tracker.log_table(episode_table(episodes), "episodes.json")))
    return pieces
