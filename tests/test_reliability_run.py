"""`agora run` ends FINISHED, KILLED or FAILED with every finished episode's data, whatever happens:
a signal at each phase (run created, end-of-run logging, twice), a run that fails, a store that
breaks (full disk, read-only artifacts, a dead server, a wrong address) and a fresh store opened by
two processes at once. Faults are injected in-process; one store is shared to keep this fast."""

from __future__ import annotations

import errno
import json
import multiprocessing
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from agora import interrupts
from agora.errors import AgoraError, StoreError
from agora.run import run_scenario
from agora.scenario import resolve_scenario
from agora.trajectory import read_jsonl
from mlflow import MlflowClient

EPISODES = 6


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one costs seconds); each test uses its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A temporary working folder: where data the store refused is saved (`agora-unsaved-<run id>/`)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def matrix(name: str, episodes: int = EPISODES):
    """Scripted rock-paper-scissors: fast, with a world report (a figure) to log at the end."""
    return resolve_scenario(
        {
            "name": name,
            "world": {"id": "matrix", "rounds": 3},
            "episodes": episodes,
            "seed": 0,
            "concurrency": 2,
            "agents": {"player_0": {"policy": "mixed"}, "player_1": {"policy": "tit_for_tat"}},
        }
    )


def play(scenario, **kwargs):
    """run_scenario, where an interrupt escaping it fails the test (pytest would stop the session)."""
    try:
        return run_scenario(scenario, **kwargs)
    except KeyboardInterrupt:
        pytest.fail("a KeyboardInterrupt escaped run_scenario: the run was left RUNNING")


def the_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def logged_episodes(client: MlflowClient, run) -> list[int]:
    """The episode indices of the run's `episodes.json` table."""
    with tempfile.TemporaryDirectory() as tmp:  # not load_table: it searches the default store, not `client`'s
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "episodes.json", tmp)).read_text())
    return sorted(row[table["columns"].index("episode")] for row in table["data"])


def assert_complete(client: MlflowClient, run, status: str, episodes: int = EPISODES) -> None:
    """The run ended with `status` and holds every finished episode's data and the run's summary."""
    assert run.info.status == status
    assert logged_episodes(client, run) == list(range(episodes))
    metrics = run.data.metrics
    assert metrics["perf/episodes"] == episodes and "parse/failure_rate" in metrics
    assert "eval/return/player_0" in metrics and "eval/regret_per_round/player_0" in metrics
    assert {"episodes.json", "transcripts.json", "trajectories.jsonl.gz", "figures/regret_curve.png"} <= artifacts(
        client, run.info.run_id
    )


# A fresh store opened by two processes at once


def open_tracker(uri: str, barrier, results) -> None:
    from agora.tracking import Tracker

    barrier.wait()
    try:
        tracker = Tracker(uri, "race", "r")
        tracker.log_metrics({"m": 1.0})
        tracker.end()
        results.put("ok")
    except BaseException as exc:  # reported to the parent, which fails the test with it
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_a_fresh_store_opened_by_two_processes_at_once_works_for_both(tmp_path):
    """Unlocked, 13 of 13 such pairs failed one process and 3 left a half-migrated store."""
    import agora.tracking  # noqa: F401 - imported once here, not in each forked process

    context = multiprocessing.get_context("fork")
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=open_tracker, args=(uri, barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [results.get(timeout=5) for _ in processes] == ["ok", "ok"]
    client = MlflowClient(uri)  # and the store works afterwards
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


# Signals


def signal_after(monkeypatch, method: str, times: int = 1, before: bool = False) -> None:
    """Make Tracker.`method` receive `times` SIGINTs (through Agora's handler), after its store write
    (or `before` it), the first time it is called."""
    from agora.tracking import Tracker

    original, sent = getattr(Tracker, method), []

    def with_signal(self, *args, **kwargs):
        if not before:
            original(self, *args, **kwargs)
        if not sent:
            sent.append(method)
            for _ in range(times):
                interrupts.interrupt(signal.SIGINT, None)
        if before:
            original(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, method, with_signal)


def test_a_signal_right_after_the_run_is_created_ends_it_killed(store, monkeypatch):
    signal_after(monkeypatch, "log_params")  # the first write after the run exists
    result = play(matrix("signal-at-start"), tracking_uri=store)
    assert result.interrupted and result.episodes == []
    client, run = the_run(store, "signal-at-start")
    assert run.info.run_id == result.run_id and run.info.status == "KILLED"
    assert run.data.metrics["perf/episodes"] == 0


def test_a_signal_during_end_of_run_logging_is_noted_and_the_logging_completes(store, monkeypatch, capsys):
    """Before: the run stayed RUNNING without trajectories, eval/parse/perf metrics or the buffered
    episode metrics."""
    signal_after(monkeypatch, "log_table", before=True)  # transcripts.json: the middle of the logging
    result = play(matrix("signal-at-end"), tracking_uri=store)
    assert not result.interrupted and len(result.episodes) == EPISODES  # every episode had finished
    assert f"finishing: logging {EPISODES} episodes..." in capsys.readouterr().err
    client, run = the_run(store, "signal-at-end")
    assert_complete(client, run, "FINISHED")


def test_a_signal_during_the_episodes_keeps_the_finished_ones(store):
    seen = []

    def interrupt_at_third_episode(episode):
        seen.append(episode.index)
        if len(seen) == 3:
            interrupts.interrupt(signal.SIGINT, None)

    result = play(matrix("signal-in-episodes"), tracking_uri=store, on_episode=interrupt_at_third_episode)
    assert result.interrupted and len(result.episodes) == 3
    client, run = the_run(store, "signal-in-episodes")
    assert_complete(client, run, "KILLED", episodes=3)


def test_a_second_signal_during_clean_up_quits_at_once_without_a_traceback(store, monkeypatch, capsys):
    """The first signal there is noted; the next one quits with 130 (os._exit: no traceback, no
    exception through the clean-up) and says what was not kept."""
    exits = []

    def exit_now(code):
        exits.append(code)
        raise SystemExit(code)  # stands in for os._exit, which would end the test process

    monkeypatch.setattr(interrupts.os, "_exit", exit_now)
    signal_after(monkeypatch, "log_table", times=2, before=True)
    with pytest.raises(SystemExit):
        play(matrix("two-signals-at-end"), tracking_uri=store)
    err = capsys.readouterr().err
    assert exits == [130] and "finishing: logging" in err and "interrupted again: quitting now" in err


def test_a_signal_held_by_a_store_write_is_noted_by_the_clean_up_that_follows(capsys):
    with interrupts.finishing("finishing: test"):
        interrupts.interrupt(signal.SIGTERM, None)  # inside finishing(): a note, never an exception
    with interrupts.uninterrupted():
        interrupts.interrupt(signal.SIGINT, None)  # held
        with interrupts.finishing("finishing: held"):
            pass
    err = capsys.readouterr().err  # the held one was answered by the clean-up, not raised after it
    assert "finishing: test (interrupt again" in err and "finishing: held" in err


# A run that fails


def test_a_failing_run_is_marked_failed_and_its_error_is_not_hidden(store, here, monkeypatch):
    """A text seat fails before any decision finished (the summary once divided by zero) and the store
    then refuses the summary (a full disk): the seat's error is raised, not the store's, the run is
    FAILED, and the summary is saved locally."""
    from agents.human import HumanPolicy
    from agora.policy import ActResponse

    def unparseable_then_gone(self, request):
        if len(request.messages) > 1:  # asked again after the parse failure
            raise RuntimeError("the expert's terminal went away")
        return ActResponse("no idea")

    monkeypatch.setattr(HumanPolicy, "ask", unparseable_then_gone)
    full = OSError(errno.ENOSPC, "No space left on device")
    refuse(monkeypatch, ("log_batch",), full, when=lambda kwargs: "metrics" in kwargs).append(True)
    scenario = resolve_scenario(
        {
            "name": "fails-mid-decision",
            "world": {"id": "deferral", "kinds": {"closed": 1.0}, "difficulties": [2]},
            "agents": {"agent_*": {"policy": "always_defer"}, "expert": {"policy": "human"}},
            "episodes": 2,
            "concurrency": 1,
        }
    )
    with pytest.raises(RuntimeError, match="terminal went away") as raised:
        run_scenario(scenario, tracking_uri=store)
    client, run = the_run(store, "fails-mid-decision")
    folder = here / f"agora-unsaved-{run.info.run_id}"
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert run.info.status == "FAILED" and f"run {run.info.run_id} marked FAILED" in notes and str(folder) in notes
    kept = {m["key"]: m["value"] for m in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())}
    assert kept["perf/episodes"] == 0 and kept["parse/failure_rate/expert"] == 1.0


def test_a_world_whose_report_fails_ends_the_run_failed_with_its_episodes(store, monkeypatch):
    from worlds.matrix import parallel_env

    def broken(self, episodes):
        raise ZeroDivisionError("the world's report")

    monkeypatch.setattr(parallel_env, "run_report", broken)
    with pytest.raises(ZeroDivisionError) as raised:
        run_scenario(matrix("report-fails"), tracking_uri=store)
    client, run = the_run(store, "report-fails")
    assert f"run {run.info.run_id} marked FAILED; {EPISODES} finished episodes logged" in raised.value.__notes__
    assert run.info.status == "FAILED" and run.data.metrics["perf/episodes"] == EPISODES
    assert logged_episodes(client, run) == list(range(EPISODES))
    assert {"transcripts.json", "trajectories.jsonl.gz"} <= artifacts(client, run.info.run_id)


# Store faults


def test_a_tracking_uri_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(AgoraError, match="is a file"):
        run_scenario(matrix("under-a-file"), tracking_uri=f"sqlite:///{tmp_path / 'file' / 'store' / 'mlflow.db'}")


def test_a_closed_port_is_reported_within_seconds():
    """MLflow retries a dead address for about 4 minutes before it says so."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free, and nothing listens once closed
    start = time.monotonic()
    with pytest.raises(AgoraError, match=f"cannot reach the MLflow server at http://127.0.0.1:{port}"):
        run_scenario(matrix("closed-port"), tracking_uri=f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 15


def refuse(monkeypatch, methods: tuple[str, ...], error: OSError, when=lambda kwargs: True) -> list[bool]:
    """Make MlflowClient's `methods` raise `error` (for calls `when` accepts) once the returned
    switch holds a value; the run's episodes turn it on."""
    switch: list[bool] = []
    for name in methods:
        original = getattr(MlflowClient, name)

        def failing(self, *args, original=original, **kwargs):
            if switch and when(kwargs):
                raise error
            return original(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, failing)
    return switch


def test_a_full_disk_during_the_episodes_fails_the_run_and_keeps_its_data_locally(store, here, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device")
    switch = refuse(monkeypatch, ("log_batch", "log_artifact"), full)

    def fill_disk_at_third_episode(episode):
        if episode.index == 2:
            switch.append(True)

    with pytest.raises(StoreError) as raised:
        run_scenario(matrix("full-disk"), tracking_uri=store, on_episode=fill_disk_at_third_episode)
    client, run = the_run(store, "full-disk")
    folder = here / f"agora-unsaved-{run.info.run_id}"
    message = str(raised.value)
    assert "No space left on device" in message and str(folder) in message and "marked FAILED" in message
    assert run.info.status == "FAILED" and run.data.tags["agora.unsaved"] == str(folder)
    kept = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    table = json.loads((folder / "episodes.json").read_text())
    episodes = [e.index for e in read_jsonl(folder / "trajectories.jsonl.gz")]
    assert sorted(table["episode"]) == episodes == list(range(EPISODES))  # every finished episode
    assert any(m["key"] == "perf/episodes" for m in kept) and (folder / "transcripts.json").is_file()
    assert "mlflow.note.content" in json.loads((folder / "tags.json").read_text())  # the description too


def test_a_read_only_artifact_folder_fails_the_run_before_its_episodes(store, here, monkeypatch):
    denied = PermissionError(errno.EACCES, "Permission denied")
    refuse(monkeypatch, ("log_artifact",), denied).append(True)
    with pytest.raises(AgoraError, match="Permission denied") as raised:
        run_scenario(matrix("read-only"), tracking_uri=store)
    client, run = the_run(store, "read-only")
    assert run.info.status == "FAILED" and run.data.metrics["perf/episodes"] == 0
    folder = here / f"agora-unsaved-{run.info.run_id}"
    assert str(folder) in str(raised.value) and json.loads((folder / "scenario" / "resolved.json").read_text())


def test_a_store_dead_at_the_end_says_the_status_is_unset_and_where_the_data_is(store, here, monkeypatch):
    gone = OSError(errno.ECONNREFUSED, "Connection refused")
    switch = refuse(monkeypatch, ("log_batch", "log_artifact", "set_terminated", "set_tag"), gone)
    scenario = matrix("dead-at-end")
    with pytest.raises(StoreError) as raised:
        run_scenario(scenario, tracking_uri=store, on_episode=lambda e: e.index == EPISODES - 1 and switch.append(1))
    client, run = the_run(store, "dead-at-end")
    folder = here / f"agora-unsaved-{run.info.run_id}"
    message = str(raised.value)
    assert "it may show as RUNNING" in message and str(folder) in message and run.info.status == "RUNNING"
    assert {"metrics.jsonl", "transcripts.json", "trajectories.jsonl.gz"} <= {p.name for p in folder.iterdir()}
    assert (folder / "figures" / "regret_curve.png").is_file()
