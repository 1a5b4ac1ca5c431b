"""Where episodes are played: in this process (`backend: local`) or on Ray rollout workers (`backend: ray`).

A Ray run starts `workers` actors (`RolloutWorker`), each holding its own copy of the policies (a model
per worker, or a client of an inference server) built from a picklable `Job`. The episode indices of
the run are cut into shards; every worker plays its shards with the batched rollout engine, with the
run's root seed, so an episode's seeds, and so its transcript, are the same whichever worker plays it
and whatever else that worker plays (`agora.rollout`: every request carries its own seed). The driver
merges what comes back: episodes, per-seat counters and token counts. Workers never write to MLflow.

A worker that dies (its process killed, its node lost) is replaced, as RLlib restarts failed env
runners, and the shards it had not returned are played again from their seeds by the new worker; the
run counts the restarts (`perf/worker_restarts`). After `max_restarts` restarts the run stops with a
`WorkerError` and keeps every episode that had come back. An error raised by the world or a policy
inside a worker is not a fault: it is raised in the driver as it would be locally.

Cells (`RayCells`, `CellWorker`) are the same machinery for tasks that are not shards of one run: each
worker builds a `CellJob` once (a base model whose LoRA versions are swapped in, scripted versions) and
plays the cells it is given, e.g. the games of a league's or PSRO's payoff-matrix cell from that cell's
seeds, so a matrix is the same whichever worker plays which cell.

Ray is imported only here and only when a Ray backend is asked for.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agora.errors import AgoraError, plural
from agora.policy import policy_tags
from agora.rollout import TICK_LISTENER, Rollout, SeatCounters
from agora.trajectory import Episode

PROBE_SECONDS = 5.0  # how long a cluster's address has to accept a connection before `connect` says so
FREE_SECONDS = 10.0  # how long a pool waits for the cluster's resources to be free before it says so
IN_FLIGHT = 2  # shards queued per worker: the next one is there when the current one returns
SHARDS_PER_WORKER = 4  # default shard count per worker (smaller shards lose less to a fault)
RAY_CLIENT_PORT = 10001
RAY_GCS_PORT = 6379


class ExecutionSpec(BaseModel):
    """`execution:` in a scenario or campaign file (and `--backend`, `--workers`, `--address` on the command line)."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["local", "ray"] = Field("local", description="local: this process; ray: Ray rollout workers")
    workers: int = Field(2, ge=1, le=4096, description="Ray rollout workers (actors), each with its own policies")
    cpus_per_worker: float = Field(1.0, gt=0, le=1024, description="CPUs Ray reserves for each worker")
    gpus_per_worker: float = Field(0.0, ge=0, le=64, description="GPUs Ray reserves per worker (0.5: two share one)")
    address: str | None = Field(
        None,
        description="Ray cluster to join: `auto` (the one `ray start` runs on this node), `host:port` or "
        "`ray://host:port`; absent: start a local Ray instance for the run",
    )
    max_restarts: int = Field(3, ge=0, le=1000, description="worker restarts allowed in a run before it stops")
    episodes_per_task: int | None = Field(
        None,
        ge=1,
        description="episodes a worker plays per task (default: the run cut into 4 tasks per worker, at least "
        "`concurrency` episodes each)",
    )

    @model_validator(mode="after")
    def ray_keys_need_ray(self) -> ExecutionSpec:
        if self.backend == "local" and self.address is not None:
            raise ValueError("`address` joins a Ray cluster: set backend: ray too (or remove address)")
        return self


class WorkerError(AgoraError):
    """Ray rollout workers that died more often than `execution.max_restarts` allows, or a cluster that
    cannot host them: the run stops (its finished episodes are kept)."""


class Job(Protocol):
    """What a worker plays: built once per worker (`build`, e.g. loading a model) and then asked for shards.
    `environment()` names the variables of this process the workers need too (a server agent's API key:
    a worker on another node does not have it), which are set in each worker's process."""

    def build(self) -> Rollout: ...

    def environment(self) -> dict[str, str]: ...


class Change(Protocol):
    """A change to every worker's rollout between runs (`RayRollout.apply`): new LoRA weights, an iteration's
    group seeds. A restarted worker gets the job and then the latest change of each `key`, in order."""

    key: str

    def apply(self, rollout: Rollout) -> None: ...


@dataclass
class Shard:
    """What a worker returns for one task."""

    episodes: list[Episode]
    counters: dict[str, SeatCounters]
    tokens: int  # tokens the worker's policies generated for it
    seconds: float
    pid: int = 0  # the worker's process


@dataclass
class Totals:
    """Counts merged from every shard: what `Rollout` keeps for a local run."""

    counters: dict[str, SeatCounters] = field(default_factory=lambda: defaultdict(SeatCounters))
    tokens: int = 0
    seconds: float = 0.0

    def add(self, shard: Shard) -> None:
        for agent, counters in shard.counters.items():
            self.counters[agent] = SeatCounters.total([self.counters[agent], counters])
        self.tokens += shard.tokens


class RolloutWorker:
    """A Ray actor's body: one rollout (its own policies) playing the shards it is given."""

    def __init__(self) -> None:
        self.rollout: Rollout | None = None

    def setup(self, job: Job) -> dict[str, str]:
        """Build the job's rollout (load its models); returns the policies' run tags (`Policy.run_tags`)."""
        self.rollout = job.build()
        return policy_tags(self.rollout.seats)

    def apply(self, change: Change) -> None:
        change.apply(self.rollout)

    def pid(self) -> int:
        return os.getpid()

    def play(self, indices: Sequence[int]) -> Shard:
        """Play the episodes `indices`; what they took (counters, tokens, seconds) counts from zero."""
        rollout = self.rollout
        policies = list({id(p): p for p in rollout.seats.values()}.values())
        tokens = sum(p.stats.generated_tokens for p in policies)
        rollout.counters = defaultdict(SeatCounters)
        rollout.episodes = []
        start = time.perf_counter()
        episodes = rollout.run(len(indices), indices=list(indices))
        tokens = sum(p.stats.generated_tokens for p in policies) - tokens
        return Shard(episodes, dict(rollout.counters), tokens, time.perf_counter() - start, os.getpid())


def probe(address: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the Ray cluster at `address` (`host:port` or `ray://host:port`) does not accept a connection
    within `timeout` seconds; None when it does (or for `auto`, which Ray resolves itself)."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port or (RAY_CLIENT_PORT if parts.scheme == "ray" else RAY_GCS_PORT)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except ValueError as exc:
        return str(exc)
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


# Run in a child process, so that Ray's connection retries (about 20 s against a port that is open but
# not Ray's) are cut at `CLUSTER_SECONDS` and their logging stays out of the user's terminal.
GCS_PROBE = (
    "import sys\n"
    "from ray._private.services import canonicalize_bootstrap_address_or_die as address\n"
    "from ray._raylet import GcsClient\n"
    "GcsClient(address=address(sys.argv[1]))\n"
)
CLUSTER_SECONDS = 10.0


def answers_as_ray(address: str, timeout: float | None = None) -> str | None:
    """Why the Ray cluster at `address` (`auto` or `host:port`) does not answer as one within `timeout`
    seconds; None when it does. Ray Client addresses (`ray://`) are left to Ray."""
    if address.startswith("ray://"):
        return None
    timeout = CLUSTER_SECONDS if timeout is None else timeout
    env = {**os.environ, "RAY_BACKEND_LOG_LEVEL": "fatal"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", GCS_PROBE, address], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return f"no Ray cluster answered there within {timeout:g} s"
    if done.returncode:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"the probe exited with status {done.returncode}"
    return None


def init_ray(address: str, **options: Any) -> Any:
    """`ray.init` quietly (no dashboard, no worker logs in this terminal, errors only), keeping this process's
    SIGTERM handler: Ray's would exit at once instead of letting Agora end the run KILLED with its episodes."""
    import ray

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    options = {"log_to_driver": False, "logging_level": logging.ERROR, **options}
    if address == "local":
        options.setdefault("include_dashboard", False)
    try:
        return ray.init(address=address, **options)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def connect(spec: ExecutionSpec) -> bool:
    """Make sure this process is connected to Ray as `spec` asks and that the cluster can host the
    workers; True when this call started Ray (so the caller shuts it down after the run)."""
    import ray

    # The tasks of a dead worker and those cancelled by Ctrl-C are replayed or abandoned on purpose: Ray
    # would log each such result that nobody read as an "Unhandled error" in the user's terminal; its C++
    # core would log every retry of a connection.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    if ray.is_initialized():
        check_resources(spec, ray.cluster_resources())
        wait_for_free(spec)
        return False
    if spec.address is None:
        init_ray("local", num_cpus=max(os.cpu_count() or 1, math.ceil(spec.workers * spec.cpus_per_worker)))
    else:
        if why := probe(spec.address) or answers_as_ray(spec.address):
            raise WorkerError(
                f"cannot reach the Ray cluster at {spec.address}: {why} (is `ray start --head` running there?)"
            )
        try:
            init_ray(spec.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise WorkerError(f"cannot join the Ray cluster at {spec.address}: {first_line(exc)}") from None
    try:
        check_resources(spec, ray.cluster_resources())
        wait_for_free(spec)  # a joined cluster's CPUs may be held by other jobs
    except BaseException:
        ray.shutdown()
        raise
    return True


def check_resources(spec: ExecutionSpec, available: dict[str, float], *, free: bool = False) -> None:
    """A WorkerError when the cluster's resources (`ray.cluster_resources()`, or with `free` its
    `ray.available_resources()`) cannot host every worker at once (Ray would otherwise wait for them forever)."""
    for name, each in (("CPU", spec.cpus_per_worker), ("GPU", spec.gpus_per_worker)):
        need, have = spec.workers * each, available.get(name, 0.0)
        if need > have:
            held = " free (other workers hold the rest)" if free else ""
            raise WorkerError(
                f"{plural(spec.workers, 'worker')} x {each:g} {name} need {need:g} {name}s; the Ray cluster "
                f"has {have:g}{held}: lower execution.workers or execution.{name.lower()}s_per_worker"
            )


def wait_for_free(spec: ExecutionSpec, timeout: float | None = None) -> None:
    """Wait until the Ray cluster this process is connected to has the CPUs and GPUs for every worker free
    (workers just stopped give theirs back within moments); a WorkerError after `timeout` seconds, when other
    workers (another pool of the same run, another user) hold them, instead of Ray waiting forever."""
    import ray

    deadline = time.monotonic() + (FREE_SECONDS if timeout is None else timeout)
    while True:
        try:
            check_resources(spec, ray.available_resources(), free=True)
            return
        except WorkerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def merged_tags(tags: Sequence[dict[str, str]]) -> dict[str, str]:
    """The workers' run tags as one: a tag whose value differs between workers (a kernel each timed for
    itself, `linear_kernel: auto`) keeps every value, `a | b`."""
    out: dict[str, str] = {}
    for key in dict.fromkeys(k for t in tags for k in t):
        out[key] = " | ".join(dict.fromkeys(t[key] for t in tags if key in t))
    return out


def faults() -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker that is gone (killed, out of memory, its node lost) or whose results are:
    the worker is replaced and its tasks are played again."""
    from ray import exceptions as e

    return (e.RayActorError, e.OutOfMemoryError, e.NodeDiedError, e.ObjectLostError, e.WorkerCrashedError)


def shards(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


class CellJob(Protocol):
    """What a cell worker evaluates with: built once per worker (`build`, e.g. loading a base model whose
    LoRA versions are swapped in), then asked for cells (`Evaluator.play`); `environment()` as for a `Job`."""

    def build(self) -> Evaluator: ...

    def environment(self) -> dict[str, str]: ...


class Evaluator(Protocol):
    """A worker's built `CellJob`: plays one picklable cell task (e.g. the games of a payoff-matrix cell,
    seeded by the cell) and returns what the driver merges."""

    def play(self, cell: Any) -> Any: ...


class CellWorker:
    """A Ray actor's body: one evaluator (its own policies, kept between cells) playing the cells it is given."""

    def __init__(self) -> None:
        self.evaluator: Evaluator | None = None

    def setup(self, job: CellJob) -> dict[str, str]:
        self.evaluator = job.build()
        return {}

    def apply(self, change: Change) -> None:
        change.apply(self.evaluator)

    def pid(self) -> int:
        return os.getpid()

    def play(self, cell: Any) -> Any:
        return self.evaluator.play(cell)


class WorkerPool:
    """`spec.workers` Ray actors of class `worker` (setup, apply, pid, play), each set up with `job`: tasks go
    out with `dispatch`, changes with `apply`; a dead worker is restarted (set up again, every change replayed)
    and its unreturned tasks played again, up to `spec.max_restarts` restarts (`restarts`)."""

    what = "worker"  # in messages

    def __init__(self, job: Any, spec: ExecutionSpec, worker: type):
        import ray

        self.job, self.spec = job, spec
        self.restarts = 0
        self.tags: dict[str, str] = {}
        self.changes: dict[str, Any] = {}  # key -> the latest change of that key, in the object store
        self.started_ray = connect(spec)
        self.workers: list[Any] = []
        try:
            self.actor = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker)(worker)
            env = job.environment()
            if not spec.gpus_per_worker:  # Ray 2.60 leaves a 0-GPU actor every GPU: a model would load on one
                env = {**env, "CUDA_VISIBLE_DEVICES": ""}
            self.actor = self.actor.options(runtime_env={"env_vars": env})
            self.job_ref = ray.put(job)
            self.workers = [self.actor.remote() for _ in range(spec.workers)]
            tags = self._get([w.setup.remote(self.job_ref) for w in self.workers])
        except (*faults(), ray.exceptions.RuntimeEnvSetupError) as exc:
            self.close()
            raise WorkerError(f"a Ray {self.what} could not start: {first_line(exc)}") from None
        except (ImportError, ray.exceptions.RaySystemError) as exc:  # a node without Agora, or another version
            self.close()
            raise WorkerError(
                f"a Ray {self.what} could not load its job: {first_line(exc)} (every node needs the same "
                "Agora, installed as on this one)"
            ) from None
        except BaseException:
            self.close()
            raise
        self.tags = merged_tags(tags)

    def apply(self, change: Change) -> None:
        """Apply `change` to every worker (sent once through Ray's object store: a model's LoRA weights are
        not copied per worker) before the next tasks; restarted workers get it too."""
        import ray

        ref = ray.put(change)
        self.changes.pop(change.key, None)  # re-inserted last: changes are replayed in the order they came
        self.changes[change.key] = ref
        for slot, pending in enumerate([worker.apply.remote(ref) for worker in self.workers]):
            try:
                self._get(pending)
            except faults() as exc:
                self._restart(slot, exc, "")  # the new worker gets every change, this one included

    def perf(self) -> dict[str, float]:
        """The run's worker figures, logged with its `perf/*` metrics."""
        return {"perf/workers": float(self.spec.workers), "perf/worker_restarts": float(self.restarts)}

    def pids(self) -> list[int]:
        """The workers' process ids (tests kill one to check that the run survives it)."""
        import ray

        return ray.get([w.pid.remote() for w in self.workers])

    def dispatch(
        self,
        tasks: Sequence[Any],
        on_result: Callable[[int, Any, Any], None],
        *,
        size: Callable[[Any], int] = lambda task: 1,
        unit: str = "task",
    ) -> None:
        """Play every task on the workers (`IN_FLIGHT` queued per worker), `on_result(position, task, result)` as
        each returns. The tasks a dead worker had not returned go first to its replacement; past the restart limit
        a WorkerError tells how many `unit`s (`size` per task) were not played."""
        import ray

        todo = deque(enumerate(tasks))
        in_flight: dict[Any, tuple[int, tuple[int, Any]]] = {}
        queued = [0] * len(self.workers)  # tasks in flight per worker
        try:
            while todo or in_flight:
                for depth in range(1, IN_FLIGHT + 1):  # every worker gets a task before any gets a second
                    for slot in range(len(self.workers)):
                        if todo and queued[slot] < depth:
                            task = todo.popleft()
                            in_flight[self.workers[slot].play.remote(task[1])] = (slot, task)
                            queued[slot] += 1
                [ready], _ = ray.wait(list(in_flight), num_returns=1)
                slot, task = in_flight.pop(ready)
                queued[slot] -= 1
                try:
                    result = self._get(ready)
                except faults() as exc:
                    lost = [task] + [t for w, t in in_flight.values() if w == slot]  # the dead worker's queue
                    in_flight = {ref: (w, t) for ref, (w, t) in in_flight.items() if w != slot}
                    queued[slot] = 0
                    todo.extendleft(sorted(lost, key=lambda t: t[0], reverse=True))  # played again first
                    missing = sum(size(t) for _, t in todo) + sum(size(t) for _, (_, t) in in_flight.values())
                    self._restart(slot, exc, f"; not played: {plural(missing, unit)}; every finished one is kept")
                    continue
                on_result(*task, result)
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=False)

    def _restart(self, slot: int, exc: BaseException, unplayed: str) -> None:
        """Replace the dead worker `slot` (each try counted in `restarts`), or stop when no restart is left."""
        import ray

        while True:
            if self.restarts >= self.spec.max_restarts:
                raise WorkerError(
                    f"a Ray {self.what} died ({first_line(exc)}) after {plural(self.restarts, 'restart')}, the "
                    f"limit (execution.max_restarts: {self.spec.max_restarts}){unplayed}"
                )
            self.restarts += 1
            ray.kill(self.workers[slot], no_restart=True)
            wait_for_free(self.spec.model_copy(update={"workers": 1}))  # a lost node may have taken the room
            self.workers[slot] = self.actor.remote()
            try:
                self._get(self.workers[slot].setup.remote(self.job_ref))
                self._get([self.workers[slot].apply.remote(ref) for ref in self.changes.values()])
                return
            except faults() as again:
                exc = again

    def _get(self, refs):
        """`ray.get`, with an error raised by a world or a policy inside a worker raised as itself (a
        user's mistake stays an AgoraError), and a dead worker as Ray's RayActorError."""
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if cause is None:
                raise
            raise cause from None

    def close(self) -> None:
        """Stop the workers, and the local Ray instance when this pool started it."""
        import ray

        for worker in self.workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # already gone
                pass
        self.workers = []
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False


class RayRollout(WorkerPool):
    """The driver's side of a Ray run: plays episodes on `spec.workers` RolloutWorkers and keeps what
    `Rollout` keeps for a local run (`episodes`, `counters`, `seconds`; plus `tokens` and `restarts`)."""

    what = "rollout worker"

    def __init__(self, job: Job, spec: ExecutionSpec, *, concurrency: int = 8):
        self.concurrency = concurrency
        self.episodes: list[Episode] = []
        self.totals = Totals()
        self.played_by: dict[int, int] = defaultdict(int)  # worker process id -> episodes it returned
        super().__init__(job, spec, RolloutWorker)

    @property
    def counters(self) -> dict[str, SeatCounters]:
        return self.totals.counters

    @property
    def seconds(self) -> float:
        return self.totals.seconds

    @property
    def tokens(self) -> int:
        return self.totals.tokens

    def task_size(self, episodes: int) -> int:
        if self.spec.episodes_per_task:
            return self.spec.episodes_per_task
        return max(self.concurrency, math.ceil(episodes / (SHARDS_PER_WORKER * len(self.workers))), 1)

    def run(
        self,
        episodes: int,
        *,
        first_index: int = 0,
        on_episode: Callable[[Episode], None] | None = None,
        on_tick: Callable[[int, int], None] | None = None,
    ) -> list[Episode]:
        """Play episodes first_index... on the workers (as `Rollout.run`); each returned shard's episodes
        go to `on_episode` as they come back, and `on_tick(turns, tokens)` (default: the `ticks_to` listener)
        gets the totals so far."""
        start, done = time.perf_counter(), len(self.episodes)
        on_tick = on_tick or TICK_LISTENER.get()
        turns0, tokens0 = sum(c.decisions for c in self.counters.values()), self.tokens

        def merge(position: int, shard: list[int], result: Shard) -> None:
            self.totals.add(result)
            self.played_by[result.pid] += len(result.episodes)
            self.episodes.extend(result.episodes)  # kept with their counts, even if a callback is interrupted
            for episode in result.episodes if on_episode else ():
                on_episode(episode)
            if on_tick:
                on_tick(sum(c.decisions for c in self.counters.values()) - turns0, self.tokens - tokens0)

        collecting = gc.isenabled()
        gc.disable()  # as in `Rollout.run`: unpickled episodes pile up; full collections would re-scan them
        try:
            tasks = shards(range(first_index, first_index + episodes), self.task_size(episodes))
            self.dispatch(tasks, merge, size=len, unit="episode")
        finally:
            if collecting:
                gc.enable()
            self.totals.seconds += time.perf_counter() - start
        return sorted(self.episodes[done:], key=lambda e: e.index)


class RayCells(WorkerPool):
    """The driver's side of cells evaluated on `spec.workers` CellWorkers (payoff-matrix cells of a league or
    PSRO): each worker builds `job` once and keeps it between `play` calls."""

    what = "cell worker"

    def __init__(self, job: CellJob, spec: ExecutionSpec):
        super().__init__(job, spec, CellWorker)

    def play(self, cells: Sequence[Any], on_result: Callable[[Any, Any], None] | None = None) -> list[Any]:
        """Every cell's result, in the order of `cells` (`on_result(cell, result)` as each comes back)."""
        results: dict[int, Any] = {}

        def keep(position: int, cell: Any, result: Any) -> None:
            results[position] = result
            if on_result:
                on_result(cell, result)

        self.dispatch(list(cells), keep, unit="cell")
        return [results[k] for k in range(len(cells))]
