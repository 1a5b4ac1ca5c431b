"""`agora runs`: the newest runs of an MLflow store with their key metrics, and the tags that say which metrics
those are (`agora.headline`) and what the command line overrode (`agora.overrides`). Reads through
`agora.tracking.StoreClient`, and never creates a store by listing it. `run_episodes` reads a run's episodes back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from agora.errors import AgoraError
from agora.tracking import StoreClient, one_line, sqlite_path, unreachable
from agora.trajectory import TRAJECTORIES, Episode, read_jsonl

OVERRIDES_TAG = "agora.overrides"  # the command line's `key=value` overrides, as given (a JSON list)
HEADLINE_TAG = "agora.headline"  # the run's key metrics, a JSON list of metric keys (what `agora runs` shows)
HEADLINE_METRICS = 3
FALLBACK_AREAS = ("eval/", "pop/", "cfr/", "train/")  # where a run without the tag has its key metrics


def listing_tags(overrides: Sequence[str], headline: Sequence[str]) -> dict[str, str]:
    """The tags `agora runs` reads back: the run's key metric keys and the overrides it was started with."""
    tags = {HEADLINE_TAG: json.dumps(list(headline)[:HEADLINE_METRICS])} if headline else {}
    if overrides:
        tags[OVERRIDES_TAG] = json.dumps(list(overrides))
    return tags


@dataclass
class RunRow:
    """One run as `agora runs` lists it (times in ms since the epoch, as MLflow keeps them)."""

    run_id: str
    experiment: str
    name: str
    status: str
    start_ms: int | None
    end_ms: int | None
    metrics: dict[str, float] = field(default_factory=dict)  # its key metrics, in the headline's order


def store_exists(uri: str) -> bool:
    """Whether there is a store at `uri` to read (a local one that was never written is not; servers always are)."""
    if db := sqlite_path(uri):
        return db.is_file() and db.stat().st_size > 0
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(parts.path if parts.scheme else uri).is_dir()
    return True


def check_not_a_database_path(uri: str) -> None:
    """A plain path to a file, or one ending `.db` (`/tmp/x/mlflow.db`), is an sqlite store written without its
    scheme: MLflow would take it for a file store's folder. AgoraError saying how to write it."""
    if "://" in uri or Path(uri).is_dir():
        return
    if Path(uri).is_file() or uri.endswith(".db"):
        fixed = f"sqlite:///{Path(uri).expanduser().resolve()}"
        raise AgoraError(f"{uri} is a file, not a store URI; for an sqlite store write --tracking-uri {fixed}")


def key_metrics(metrics: dict[str, float], tags: dict[str, str]) -> dict[str, float]:
    """The run's headline metrics (its `agora.headline` tag), else its first few evaluation-like ones."""
    try:
        keys = [k for k in json.loads(tags.get(HEADLINE_TAG, "[]")) if k in metrics]
    except (ValueError, TypeError):
        keys = []
    if not keys:
        ranked = sorted(
            (FALLBACK_AREAS.index(area), k)
            for k in metrics
            for area in FALLBACK_AREAS
            if k.startswith(area) and "/return/" not in k and "/score/" not in k
        )
        keys = [k for _, k in ranked[:HEADLINE_METRICS]]
    return {k: metrics[k] for k in keys}


def list_runs(uri: str, experiment: str | None = None, limit: int = 20) -> list[RunRow] | None:
    """The newest `limit` runs of the store at `uri` (of `experiment` only, when given); None when there is no
    store there: a missing sqlite file is never created by listing it. AgoraError for an unknown experiment
    or a store that cannot be read, or a plain path to a database file (MLflow would read it as a folder)."""
    check_not_a_database_path(uri)
    if not store_exists(uri):
        return None
    if why := unreachable(uri):
        raise AgoraError(f"cannot reach the MLflow server at {uri}: {why}")
    try:
        client = StoreClient(uri)
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
        if experiment is not None:
            found = {i: n for i, n in experiments.items() if n == experiment}
            if not found:
                names = ", ".join(sorted(experiments.values())) or "none"
                raise AgoraError(f"no experiment named {experiment!r} in {uri}; experiments: {names}")
            experiments = found
        runs = client.search_runs(list(experiments), max_results=limit, order_by=["attributes.start_time DESC"])
    except AgoraError:
        raise
    except Exception as exc:  # mlflow raises many types for a broken or foreign store
        raise AgoraError(f"cannot read the MLflow store at {uri}: {one_line(exc)}") from None
    return [
        RunRow(
            run.info.run_id,
            experiments.get(run.info.experiment_id, run.info.experiment_id),
            run.info.run_name or "",
            run.info.status,
            run.info.start_time,
            run.info.end_time,
            key_metrics(run.data.metrics, run.data.tags),
        )
        for run in runs
    ]


def run_episodes(run_id: str, tracking_uri: str | None = None) -> list[Episode]:
    """The episodes an `agora run` logged (its `trajectories.jsonl.gz`, token ids and log-probabilities
    included), read back from the store at `tracking_uri` (default as everywhere: $MLFLOW_TRACKING_URI,
    else the embedded store): what a trainer's `update(episodes, seats)` takes, to train offline on a
    run's games. AgoraError for a store that cannot be read, an unknown run, or a run without them."""
    import tempfile

    from agora.tracking import resolve_uri

    uri = resolve_uri(tracking_uri)
    check_not_a_database_path(uri)
    if not store_exists(uri):
        raise AgoraError(f"no MLflow store at {uri}")
    if why := unreachable(uri):
        raise AgoraError(f"cannot reach the MLflow server at {uri}: {why}")
    client = StoreClient(uri)
    try:
        client.get_run(run_id)
    except Exception as exc:  # mlflow raises many types for a malformed or unknown id
        raise AgoraError(f"no run {run_id!r} in {uri}: {one_line(exc)}") from None
    with tempfile.TemporaryDirectory(prefix="agora-episodes-") as folder:
        try:
            path = client.download_artifacts(run_id, TRAJECTORIES, folder)
        except Exception as exc:
            raise AgoraError(f"run {run_id} has no {TRAJECTORIES} (not an `agora run`?): {one_line(exc)}") from None
        return list(read_jsonl(path))
