"""MLflow tracking: the only module that imports mlflow.

The embedded store is `sqlite:///<project>/mlflow/mlflow.db` with artifacts under
`<project>/mlflow/artifacts`. The URI comes from, in order: an explicit argument (CLI flag or
scenario `tracking.uri`), `$MLFLOW_TRACKING_URI`, the embedded store. Metrics are buffered and
written with `log_batch` (at most one call per 1000 values or per few seconds), never one
synchronous call per value.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from agora.errors import AgoraError
from agora.interrupts import uninterrupted
from mlflow import MlflowClient

logging.getLogger("mlflow").setLevel(logging.WARNING)  # no schema-migration chatter in users' terminals
logging.getLogger("alembic").setLevel(logging.WARNING)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLUSH_SECONDS = 5.0
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000


def store_dir() -> Path:
    """The embedded store folder: the project's `mlflow/` (or ./mlflow outside a checkout)."""
    root = PROJECT_ROOT if (PROJECT_ROOT / "mlflow").is_dir() else Path.cwd()
    return root / "mlflow"


def default_uri() -> str:
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def resolve_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store live beside its database; servers decide for themselves."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"world": {"max_turns": 10}} -> {"world.max_turns": "10"} (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class StoreClient:
    """An MlflowClient whose every call completes before Ctrl-C or SIGTERM takes effect (agora/interrupts.py)."""

    def __init__(self, uri: str):
        self._client = MlflowClient(tracking_uri=uri)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with uninterrupted():
                return method(*args, **kwargs)

        return call


class Tracker:
    """One MLflow run: params, tags, buffered metrics, artifacts, tables and figures."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, tags: dict[str, str] | None = None):
        self.uri = resolve_uri(uri)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = StoreClient(self.uri)
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found
                else self.client.create_experiment(experiment, artifact_location=artifact_root(self.uri))
            )
            all_tags = {"mlflow.source.git.commit": git_commit() or "unknown", **(tags or {})}
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id
        except Exception as exc:  # mlflow raises many types for an unreachable or broken store
            raise AgoraError(f"cannot open the MLflow store at {self.uri}: {exc}") from None
        self._metrics: list[Metric] = []
        self._last_flush = time.monotonic()
        self._logged_up_to: dict[str, int | None] | None = (
            None  # attached runs: first key of a batch -> last step logged before
        )

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, v) for k, v in flatten(params).items()]
        for lo in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[lo : lo + PARAMS_PER_BATCH])

    def log_campaign_config(self, config: dict[str, Any], source: str | None) -> None:
        """A campaign's resolved config as params and `campaign/resolved.json`, and its file as an artifact."""
        self.log_params(config)
        if source:
            self.log_artifact(source, "campaign")
        self.log_text(json.dumps(config, indent=2), "campaign/resolved.json")

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Buffer metrics; they are written in batches."""
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._metrics) >= METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        """Log one step's metrics as one batch and write them now; in a reattached run (a resumed
        campaign), skip a step the killed process already logged (the batch's first key tells)."""
        if not metrics:
            return
        marker = next(iter(metrics))
        if self._logged_up_to is not None and marker not in self._logged_up_to:
            self._logged_up_to[marker] = self.last_step(marker)
        last = self._logged_up_to.get(marker) if self._logged_up_to is not None else None
        if last is None or step > last:
            self.log_metrics(metrics, step=step)
            self.flush()

    def flush(self) -> None:
        for lo in range(0, len(self._metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=self._metrics[lo : lo + METRICS_PER_BATCH])
        self._metrics = []
        self._last_flush = time.monotonic()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, columns: dict[str, list[Any]], artifact_file: str) -> None:
        self.client.log_table(self.run_id, columns, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_file_from(self, write: Any, artifact_file: str) -> None:
        """Log a file produced by `write(path)` (e.g. a JSONL writer) under `artifact_file`."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            write(path)
            self.log_artifact(path, str(Path(artifact_file).parent) if "/" in artifact_file else None)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

    @classmethod
    def attach(cls, uri: str | None, run_id: str) -> Tracker:
        """Continue an existing run (a resumed campaign): same run id, set RUNNING again.
        `previous_status` and `tags` say how it was left."""
        self = cls.__new__(cls)
        self.uri = resolve_uri(uri)
        try:
            self.client = StoreClient(self.uri)
            run = self.client.get_run(run_id)
        except Exception as exc:
            raise AgoraError(f"cannot reopen MLflow run {run_id} in {self.uri}: {exc}") from None
        self.run_id, self.previous_status, self.tags = run_id, run.info.status, dict(run.data.tags)
        self.experiment_id = run.info.experiment_id
        self.client.update_run(run_id, status="RUNNING")
        self._metrics, self._last_flush, self._logged_up_to = [], time.monotonic(), {}
        return self

    def last_step(self, key: str) -> int | None:
        """The highest step logged for metric `key` (None when never logged)."""
        self.flush()
        history = self.client.get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=None)

    def running_runs(self, tag: str, value: str) -> dict[str, dict[str, str]]:
        """run id -> tags of this experiment's RUNNING runs whose tag `tag` equals `value`."""
        experiment = self.client.get_run(self.run_id).info.experiment_id
        runs = self.client.search_runs([experiment], f"tags.`{tag}` = '{value}' and attributes.status = 'RUNNING'")
        return {run.info.run_id: dict(run.data.tags) for run in runs}

    def mark_killed(self, run_id: str, reason: str) -> None:
        """Mark another run KILLED (e.g. left RUNNING by a process that was killed), saying why in a tag."""
        self.client.set_tag(run_id, "agora.stale", reason)
        self.client.set_terminated(run_id, status="KILLED")


def serve_ui(uri: str | None = None, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Replace this process by the MLflow UI over the store, so that signals reach it directly."""
    uri = resolve_uri(uri)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if root := artifact_root(uri):
        cmd += ["--default-artifact-root", root]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
