"""MLflow tracking: with `agora.traces` (episodes as MLflow traces), the only module that imports mlflow.

The embedded store is `sqlite:///<project>/mlflow/mlflow.db` with artifacts under
`<project>/mlflow/artifacts`. The URI comes from, in order: an explicit argument (CLI flag or
scenario `tracking.uri`), `$MLFLOW_TRACKING_URI`, the embedded store. Metrics are buffered and
written with `log_batch` (at most one call per 1000 values or per few seconds), never one
synchronous call per value.

Store faults never lose what a run produced. A store write that fails (a full disk, a read-only
artifact folder, a server gone) saves what it was given under `./agora-unsaved-<run id>/`
(`metrics.jsonl`, `params.json`, `tags.json`, `traces.jsonl`, each artifact under its own name) and raises
`StoreError`, whose message names that folder; `agora run` still tries the rest of its
end-of-run logging and the run's status. A sqlite store is created and migrated under a file lock
(`<db>.lock`), so runs started together on a fresh store do not race (unlocked, 13 of 13 such
pairs failed and 3 left a half-migrated store); an http server is probed with a short timeout
first, so a wrong address is reported in seconds, not after MLflow's retries (about 4 minutes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from agora.errors import AgoraError, StoreError
from agora.interrupts import uninterrupted

if TYPE_CHECKING:
    from mlflow.entities import Metric


try:
    import fcntl
except ImportError:  # Windows: no flock; stores there are not shared by concurrent runs
    fcntl = None

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLUSH_SECONDS = 5.0
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
PROBE_SECONDS = 5.0  # how long an http tracking server has to accept a connection
EXPERIMENT_TRIES = 3  # get-or-create attempts when other processes create the same experiment
NOTE_TAG = "mlflow.note.content"  # the run's description: markdown the UI shows atop the run's page
MAX_NOTE_CHARS = 8000  # MLflow's limit on a tag's value


def store_dir() -> Path:
    """The embedded store folder: the project's `mlflow/` (or ./mlflow outside a checkout)."""
    root = PROJECT_ROOT if (PROJECT_ROOT / "mlflow").is_dir() else Path.cwd()
    return root / "mlflow"


def default_uri() -> str:
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def resolve_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store live beside its database; servers decide for themselves."""
    if db := sqlite_path(uri):
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def unreachable(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the http(s) tracking server at `uri` does not accept a connection within `timeout`
    seconds (None when it does, or when `uri` is not an http URI). MLflow itself retries a dead
    address for about 4 minutes before it says so."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except ValueError as exc:  # a port that is not a number or out of range
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def check_store(uri: str) -> None:
    """Raise AgoraError now, before any work, when the store at `uri` cannot be used: a sqlite
    database whose folder is a file or not writable, or an http server that does not answer."""
    if db := sqlite_path(uri):
        if db.is_dir():
            raise AgoraError(f"tracking URI {uri}: {db} is a folder, not a database file")
        folder = db.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise AgoraError(f"tracking URI {uri}: {folder} is a file, so the store's folder cannot be made there")
        if not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise AgoraError(f"tracking URI {uri}: {db if db.exists() else folder} is not writable")
    elif why := unreachable(uri):
        raise AgoraError(f"cannot reach the MLflow server at {uri}: {why} (is it running? see `agora ui`)")


@contextlib.contextmanager
def store_lock(uri: str):
    """Hold `<db>.lock` beside a sqlite store: creating and migrating the store, and creating an
    experiment, is one process at a time. Other stores do this themselves."""
    db = sqlite_path(uri)
    if db is None or fcntl is None:
        yield
        return
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_client(uri: str) -> StoreClient:
    """A client over the store at `uri`, which is created or migrated (under the store lock) if needed.
    Never stopped half-way by a signal: a half-applied migration would break the store for good."""
    if db := sqlite_path(uri):
        db.parent.mkdir(parents=True, exist_ok=True)
    with uninterrupted(), store_lock(uri):
        return StoreClient(uri)


def experiment_id(client: StoreClient, uri: str, name: str) -> str:
    """The id of experiment `name`, created if missing. Another process creating it at the same
    moment is no failure (the store refuses a second experiment of that name): its experiment is used."""
    for attempt in range(EXPERIMENT_TRIES):
        with uninterrupted(), store_lock(uri):
            found = client.get_experiment_by_name(name)
            if found:
                return found.experiment_id
            try:
                return client.create_experiment(name, artifact_location=artifact_root(uri))
            except Exception:  # most likely created meanwhile by a process that does not take the lock
                if attempt == EXPERIMENT_TRIES - 1:
                    raise
        time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def one_line(exc: BaseException) -> str:
    """An exception as one short line for a message (MLflow's can carry whole SQL statements)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def inside(folder: Path, artifact_file: str) -> Path:
    """`folder/artifact_file`, never outside `folder` (no `..` or absolute parts)."""
    parts = [p for p in PurePosixPath(artifact_file).parts if p not in ("..", "/", ".")]
    path = folder.joinpath(*parts) if parts else folder / "unnamed"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    """Append `records` to a JSON-lines file; its name."""
    with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path.name


def merge_json(path: Path, values: dict[str, str]) -> str:
    """Add `values` to the JSON object in `path`; its name."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    path.write_text(json.dumps({**old, **values}, ensure_ascii=False, indent=1), "utf-8", "backslashreplace")
    return path.name


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


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (what MLflow's description renders); `|` and line breaks in
    cells escaped."""

    def cell(value: Any) -> str:
        return " ".join(str(value).split()).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


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
        from mlflow import MlflowClient  # imported on first use: `agora env` and `--help` stay fast

        # no schema-migration chatter in users' terminals (set after the import, which configures these loggers)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self._client = MlflowClient(tracking_uri=uri)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with uninterrupted():
                return method(*args, **kwargs)

        return call


class Tracker:
    """One MLflow run: params, tags, buffered metrics, artifacts, tables and figures.

    Every write that the store refuses is saved under `unsaved` (`./agora-unsaved-<run id>/`) and
    raises `StoreError`; `failures` lists what failed, `failure_report()` says it in one message.
    Create it as `with uninterrupted(): tracker = Tracker(...)`, so that a signal arriving while the
    run is created is raised only once the caller holds the tracker that can end the run."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, tags: dict[str, str] | None = None):
        self.uri = resolve_uri(uri)
        check_store(self.uri)
        try:
            self.client = open_client(self.uri)
            found = self.experiment_id = experiment_id(self.client, self.uri, experiment)
            all_tags = {"mlflow.source.git.commit": git_commit() or "unknown", **(tags or {})}
            self.run_id = self.client.create_run(found, run_name=run_name, tags=all_tags).info.run_id
        except Exception as exc:  # mlflow raises many types for an unreachable or broken store
            raise AgoraError(f"cannot open the MLflow store at {self.uri}: {one_line(exc)}") from None
        self.start_logging()
        self._logged_up_to: dict[str, int | None] | None = (
            None  # attached runs: first key of a batch -> last step logged before
        )

    def start_logging(self) -> None:
        """The write state of a run just created or reattached: empty buffer, no failure yet."""
        self._metrics: list[Metric] = []
        self._last_flush = time.monotonic()
        self.failures: list[str] = []  # what the store refused, one line each
        self.unsaved = Path.cwd() / f"agora-unsaved-{self.run_id}"  # where that was saved instead
        self.saved_locally: list[str] = []  # file names in `unsaved`
        self.dead = False  # a server that stopped answering: skip it, save locally at once
        self.ended: str | None = None  # the final status, once the store has taken it
        self.unended: str | None = None  # why the final status could not be set

    def attempt(self, what: str, write: Callable[[], Any], keep: Callable[[Path], str]) -> None:
        """Do the store write `write`; if the store refuses it, `keep(folder)` saves the same data in
        `unsaved` (returning the file's name) and StoreError is raised naming it."""
        if not self.dead:
            try:
                write()
                return
            except Exception as exc:  # sqlite, filesystem and HTTP errors all end up here
                self.failures.append(f"{what}: {one_line(exc)}")
                self.dead = unreachable(self.uri) is not None
        else:
            self.failures.append(f"{what}: the server no longer answers")
        try:
            self.unsaved.mkdir(parents=True, exist_ok=True)
            name = keep(self.unsaved)
            if name not in self.saved_locally:
                self.saved_locally.append(name)
        except Exception as exc:
            self.failures.append(f"{what} could not be saved locally either: {one_line(exc)}")
        raise StoreError(self.failure_report())

    def failure_report(self) -> str:
        """What the store refused, where that data is now, and the run's final status (when known)."""
        shown = "; ".join(self.failures[:3]) + (
            f"; and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        )
        text = f"the MLflow store at {self.uri} failed: {shown}"
        if self.saved_locally:
            text += f"\n  saved locally instead: {self.unsaved}/ ({', '.join(self.saved_locally)})"
        if self.ended:
            text += f"\n  run {self.run_id} marked {self.ended}"
        elif self.unended:
            text += f"\n  run {self.run_id}: {self.unended}"
        return text

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        values = flatten(params)
        items = [Param(k, v) for k, v in values.items()]

        def write() -> None:
            for lo in range(0, len(items), PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=items[lo : lo + PARAMS_PER_BATCH])

        self.attempt("log params", write, lambda folder: merge_json(folder / "params.json", values))

    def log_campaign_config(self, config: dict[str, Any], source: str | None) -> None:
        """A campaign's resolved config as params and `campaign/resolved.json`, and its file as an artifact."""
        self.log_params(config)
        if source:
            self.log_artifact(source, "campaign")
        self.log_text(json.dumps(config, indent=2), "campaign/resolved.json")

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        values = {k: str(v) for k, v in tags.items()}
        self.attempt(
            "set tags",
            lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in values.items()]),
            lambda folder: merge_json(folder / "tags.json", values),
        )

    def set_note(self, markdown: str) -> None:
        """The run's description (`mlflow.note.content`): markdown shown atop the run's page in the UI.
        Cut at a line under MLflow's 8000-character limit on tags, saying so."""
        if len(markdown) > MAX_NOTE_CHARS:
            cut = "\n\n(cut here: the full tables are the run's artifacts)"
            markdown = markdown[: MAX_NOTE_CHARS - len(cut)].rsplit("\n", 1)[0] + cut
        self.set_tags({NOTE_TAG: markdown})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Buffer metrics; they are written in batches."""
        from mlflow.entities import Metric

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
        """Write the buffered metrics; those the store refuses go to `unsaved/metrics.jsonl`. A signal
        between two batches leaves the unwritten ones buffered (written by the next flush)."""
        metrics, self._metrics = self._metrics, []
        self._last_flush = time.monotonic()
        sent = 0

        def write() -> None:
            nonlocal sent
            while sent < len(metrics):
                self.client.log_batch(self.run_id, metrics=metrics[sent : sent + METRICS_PER_BATCH])
                sent = min(sent + METRICS_PER_BATCH, len(metrics))

        def keep(folder: Path) -> str:
            records = [
                {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp} for m in metrics[sent:]
            ]
            return append_jsonl(folder / "metrics.jsonl", records)

        try:
            self.attempt("log metrics", write, keep)
        except KeyboardInterrupt:
            self._metrics = metrics[sent:] + self._metrics
            raise

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        name = str(PurePosixPath(artifact_path or "") / Path(path).name)

        def keep(folder: Path) -> str:
            shutil.copyfile(path, inside(folder, name))
            return name

        self.attempt(f"log {name}", lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), keep)

    def log_text(self, text: str, artifact_file: str) -> None:
        def keep(folder: Path) -> str:
            inside(folder, artifact_file).write_text(text, encoding="utf-8", errors="backslashreplace")
            return artifact_file

        self.attempt(f"log {artifact_file}", lambda: self.client.log_text(self.run_id, text, artifact_file), keep)

    def log_table(self, columns: dict[str, list[Any]], artifact_file: str, *, replace: bool = False) -> None:
        """A table artifact that MLflow's UI shows as a table. MLflow appends rows to a table of that name
        already logged; `replace` writes the table whole instead (a table rebuilt from a campaign's state
        every iteration, whose rows a resumed campaign must not log twice)."""

        def write() -> None:
            folder = str(PurePosixPath(artifact_file).parent) if "/" in artifact_file else None
            logged = {a.path for a in self.client.list_artifacts(self.run_id, folder)} if replace else set()
            if artifact_file not in logged:
                self.client.log_table(self.run_id, columns, artifact_file)
                return
            import pandas as pd

            with tempfile.TemporaryDirectory() as tmp:  # the file MLflow writes, in its format, over the old one
                path = Path(tmp) / PurePosixPath(artifact_file).name
                pd.DataFrame(columns).to_json(path, orient="split", index=False, date_format="iso")
                self.client.log_artifact(self.run_id, str(path), folder)

        def keep(folder: Path) -> str:
            text = json.dumps(columns, ensure_ascii=False)
            inside(folder, artifact_file).write_text(text, encoding="utf-8", errors="backslashreplace")
            return artifact_file

        self.attempt(f"log {artifact_file}", write, keep)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        def keep(folder: Path) -> str:
            figure.savefig(inside(folder, artifact_file))
            return artifact_file

        self.attempt(f"log {artifact_file}", lambda: self.client.log_figure(self.run_id, figure, artifact_file), keep)

    def log_file_from(self, write: Any, artifact_file: str) -> None:
        """Log a file produced by `write(path)` (e.g. a JSONL writer) under `artifact_file`; when the
        store or the temporary folder refuses it, `write` goes straight to `unsaved`."""
        folder = str(PurePosixPath(artifact_file).parent) if "/" in artifact_file else None

        def store() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / PurePosixPath(artifact_file).name
                write(path)
                self.client.log_artifact(self.run_id, str(path), folder)

        def keep(unsaved: Path) -> str:
            write(inside(unsaved, artifact_file))
            return artifact_file

        self.attempt(f"log {artifact_file}", store, keep)

    def log_folder_from(self, write: Callable[[Path], None], artifact_path: str) -> None:
        """Log the files `write(folder)` puts in a folder under `artifact_path`, in one call (e.g. one
        replay per episode); when the store refuses them, `write` goes straight to `unsaved`."""

        def store() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                write(Path(tmp))
                self.client.log_artifacts(self.run_id, tmp, artifact_path)

        def keep(unsaved: Path) -> str:
            folder = inside(unsaved, artifact_path)
            folder.mkdir(parents=True, exist_ok=True)
            write(folder)
            return f"{artifact_path}/"

        self.attempt(f"log {artifact_path}/", store, keep)

    def log_traces(self, episodes: list[Any], group: str = "") -> None:
        """Each episode as one MLflow trace linked to this run (`agora.traces`; `group` names a set of a
        run's episodes), written in one batch; when the store refuses them, they are saved as
        `traces.jsonl` (MLflow's trace JSON, one a line)."""
        from agora.traces import episode_trace, write_traces

        start = time.time_ns()  # untimed (old) episodes 1 ms apart: the Traces list, sorted by time, is in order
        traces = [
            episode_trace(episode, self.run_id, self.experiment_id, start + 1_000_000 * n, group)
            for n, episode in enumerate(episodes)
        ]

        def write() -> None:
            with uninterrupted():
                write_traces(self.uri, self.experiment_id, traces)

        def keep(folder: Path) -> str:
            return append_jsonl(folder / "traces.jsonl", [trace.to_dict() for trace in traces])

        self.attempt(f"log {len(traces)} traces", write, keep)

    def end(self, status: str = "FINISHED") -> None:
        """Write the buffered metrics and set the run's final status, trying both whatever fails.
        A run some of whose data the store refused ends FAILED, not FINISHED, tagged with where
        that data was saved; StoreError (after both) when anything failed."""
        with contextlib.suppress(StoreError):
            self.flush()
        if self.failures and status == "FINISHED":
            status = "FAILED"
        if self.saved_locally and not self.dead:
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "agora.unsaved", str(self.unsaved))
        try:
            if self.dead:
                raise ConnectionError("the server no longer answers")
            self.client.set_terminated(self.run_id, status=status)
            self.ended = status
        except Exception as exc:
            self.unended = f"its status could not be set to {status} (it may show as RUNNING): {one_line(exc)}"
            self.failures.append(f"set the run's status: {one_line(exc)}")
        if self.failures:
            raise StoreError(self.failure_report())

    @classmethod
    def attach(cls, uri: str | None, run_id: str) -> Tracker:
        """Continue an existing run (a resumed campaign): same run id, set RUNNING again.
        `previous_status` and `tags` say how it was left."""
        self = cls.__new__(cls)
        self.uri = resolve_uri(uri)
        check_store(self.uri)
        try:
            self.client = open_client(self.uri)
            run = self.client.get_run(run_id)
        except Exception as exc:
            raise AgoraError(f"cannot reopen MLflow run {run_id} in {self.uri}: {exc}") from None
        self.run_id, self.previous_status, self.tags = run_id, run.info.status, dict(run.data.tags)
        self.experiment_id = run.info.experiment_id
        self.client.update_run(run_id, status="RUNNING")
        self.start_logging()
        self._logged_up_to = {}
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
    check_store(uri)
    if sqlite_path(uri):
        open_client(uri)  # create or migrate the store under its lock, not racing a run started meanwhile
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if root := artifact_root(uri):
        cmd += ["--default-artifact-root", root]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
