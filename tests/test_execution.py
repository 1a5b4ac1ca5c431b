"""Ray rollout workers (agora/execution.py): the same episodes as a local run, one MLflow run, faults survived.

The tests share one local Ray instance (started once: about 5 s); `agora run` on a fresh process starts
and stops its own (tested through the CLI)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from agora.cli import app
from agora.errors import AgoraError, ScenarioError
from agora.execution import ExecutionSpec, RayRollout, WorkerError, check_resources, connect, init_ray, merged_tags
from agora.run import ScenarioJob, run_scenario
from agora.scenario import load_scenario, resolve_scenario
from agora.trajectory import TRAJECTORIES, read_jsonl
from tests.conftest import SCENARIOS

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance(ray_address):
    """The module's local Ray instance (`ray_address` in tests/conftest.py)."""
    yield


def werewolf(episodes: int, **execution):
    overrides = {"episodes": episodes, "concurrency": 4, **{f"execution.{k}": v for k, v in execution.items()}}
    return load_scenario(SCENARIOS / "werewolf_scripted.yaml", overrides)


def werewolf_run(episodes: int):
    return run_scenario(werewolf(episodes), track=False).episodes


def parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the (name), which may hold spaces


def worker_pids() -> list[int]:
    """Live RolloutWorker actors of this test process's Ray instance (Ray titles them `ray::RolloutWorker...`;
    they are children of the raylet this process started, so other processes' Ray workers are left alone)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::RolloutWorker") and parent(parent(int(entry.name))) == os.getpid():
                pids.append(int(entry.name))
    return pids


def test_the_execution_section_is_validated_with_the_scenario():
    with pytest.raises(ScenarioError, match="execution.workers"):
        werewolf(4, backend="ray", workers=0)
    with pytest.raises(ScenarioError, match="execution.backend"):
        werewolf(4, backend="spark")
    with pytest.raises(ScenarioError, match="execution.gpu"):
        werewolf(4, backend="ray", gpu=1)
    with pytest.raises(ScenarioError, match="execution: .*`address` joins a Ray cluster: set backend: ray"):
        werewolf(4, address="auto")
    assert werewolf(4).spec.execution == ExecutionSpec()  # absent: local


def test_one_worker_and_three_workers_play_the_local_runs_episodes():
    local = run_scenario(werewolf(24), track=False)
    one = run_scenario(werewolf(24, backend="ray", workers=1, episodes_per_task=5), track=False)
    three = run_scenario(werewolf(24, backend="ray", workers=3, episodes_per_task=2), track=False)
    assert [e.index for e in three.episodes] == list(range(24))
    assert one.episodes == local.episodes and three.episodes == local.episodes  # steps, texts, actions, rewards
    assert one.counters == local.counters and three.counters == local.counters
    for key in ("eval/win/village", "eval/vote_accuracy", "parse/fallback_rate"):
        assert three.summary[key] == local.summary[key]
    assert three.summary["perf/workers"] == 3 and three.summary["perf/worker_restarts"] == 0


@pytest.mark.model
def test_llm_transcripts_are_the_same_on_two_workers(tiny_model_dir):
    """Sampled replies (a tiny random model: many re-asks and fallbacks) do not depend on where they were drawn."""
    llm = {"policy": "llm", "model": tiny_model_dir, "device": "cpu", "max_new_tokens": 8, "constrained": False}

    def scenario(**execution):
        return resolve_scenario(
            {
                "name": "llm-on-workers",
                "world": {"id": "negotiation", "max_turns": 4},
                "agents": {"alice": llm, "bob": {"policy": "fair"}},
                "episodes": 6,
                "seed": 5,
                "concurrency": 2,
                "execution": execution,
            }
        )

    local = run_scenario(scenario(), track=False)
    spread = run_scenario(scenario(backend="ray", workers=2, episodes_per_task=1), track=False)
    assert [s.text for e in spread.episodes for s in e.steps] == [s.text for e in local.episodes for s in e.steps]
    # Log-probabilities are computed in batches of other composition: equal to float rounding, not bit for bit.
    for episode in local.episodes:
        for step in episode.steps:
            step.logprobs = step.logprobs and pytest.approx(step.logprobs, abs=1e-4)
    assert spread.episodes == local.episodes and spread.counters == local.counters
    assert spread.summary["perf/generated_tokens"] == local.summary["perf/generated_tokens"] > 0


def test_a_killed_worker_is_restarted_and_its_episodes_are_played_again(tracking_uri, tmp_path):
    """A worker process SIGKILLed mid-run: the run finishes with every episode once, equal to an
    undisturbed run, and the restart is counted in the run's metrics."""
    undisturbed = run_scenario(werewolf(40), track=False).episodes
    killed: list[int] = []

    def kill_once(episode) -> None:
        if not killed:
            killed.append(worker_pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    scenario = werewolf(40, backend="ray", workers=2, episodes_per_task=4)
    result = run_scenario(scenario, tracking_uri=tracking_uri, on_episode=kill_once)
    assert killed and killed[0] not in worker_pids()
    assert [e.index for e in result.episodes] == list(range(40))  # each exactly once
    assert result.episodes == undisturbed
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["perf/worker_restarts"] >= 1 and run.data.metrics["perf/episodes"] == 40
    path = client.download_artifacts(result.run_id, TRAJECTORIES, str(tmp_path))
    assert sorted(e.index for e in read_jsonl(path)) == list(range(40))


def test_when_restarts_run_out_the_run_stops_with_a_message_and_keeps_its_episodes(tracking_uri):
    kills = []

    def kill_every_time(episode) -> None:
        if len(kills) < 3:  # every worker of the run, whenever episodes come back
            for pid in worker_pids():
                kills.append(pid)
                os.kill(pid, signal.SIGKILL)

    scenario = werewolf(60, backend="ray", workers=2, episodes_per_task=2, max_restarts=1)
    with pytest.raises(AgoraError) as raised:  # the CLI prints it, exit 2
        run_scenario(scenario, tracking_uri=tracking_uri, on_episode=kill_every_time)
    message = str(raised.value)
    assert "after 1 restart, the limit (execution.max_restarts: 1)" in message
    assert message.startswith("a Ray rollout worker died")
    assert "every finished one is kept" in message and "marked FAILED" in message
    runs = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("werewolf").experiment_id]
    )
    (run,) = runs
    assert run.info.status == "FAILED"
    assert 2 <= run.data.metrics["perf/episodes"] < 60  # what came back before the limit is logged
    assert run.data.metrics["perf/worker_restarts"] == 1


def test_a_broken_model_on_the_workers_is_told_as_locally_before_any_run_exists(tracking_uri, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")

    def scenario(backend: str):
        return resolve_scenario(
            {
                "name": "broken-model",
                "world": {"id": "negotiation"},
                "agents": {"alice": {"policy": "llm", "model": str(broken)}, "bob": {"policy": "fair"}},
                "episodes": 2,
                "execution": {"backend": backend, "workers": 2},
            }
        )

    with pytest.raises(AgoraError) as local:
        run_scenario(scenario("local"), tracking_uri=tracking_uri)
    with pytest.raises(AgoraError) as remote:
        run_scenario(scenario("ray"), tracking_uri=tracking_uri)
    assert type(remote.value) is type(local.value) and str(remote.value) == str(local.value)
    assert MlflowClient(tracking_uri).search_experiments(filter_string="name = 'broken-model'") == []
    deadline = time.monotonic() + 10
    while worker_pids() and time.monotonic() < deadline:  # the workers that failed to load it are stopped
        time.sleep(0.1)
    assert worker_pids() == []


def test_an_unreachable_cluster_is_told_within_seconds(monkeypatch):
    """A closed port, and a port open to another service (an http server here): told within 15 s."""
    import http.server
    import threading

    import agora.execution

    monkeypatch.setattr(agora.execution, "CLUSTER_SECONDS", 3.0)  # (10 s by default) the test's time
    ray.shutdown()  # `connect` only probes when this process is not already connected
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        with pytest.raises(WorkerError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
            connect(ExecutionSpec(backend="ray", address="127.0.0.1:9"))
        assert time.monotonic() - start < 15
        start = time.monotonic()
        with pytest.raises(WorkerError, match=f"cannot reach the Ray cluster at 127.0.0.1:{other.server_port}"):
            connect(ExecutionSpec(backend="ray", address=f"127.0.0.1:{other.server_port}"))
        assert time.monotonic() - start < 15 and not ray.is_initialized()
    finally:
        other.shutdown()
        init_ray("local", num_cpus=4)


def test_a_cluster_too_small_for_the_workers_is_refused_instead_of_waiting_forever():
    with pytest.raises(WorkerError, match="3 workers x 1 GPU need 3 GPUs; the Ray cluster has 0"):
        check_resources(ExecutionSpec(backend="ray", workers=3, gpus_per_worker=1), {"CPU": 16.0})
    with pytest.raises(WorkerError, match="need 8 CPUs; the Ray cluster has 4"):
        check_resources(ExecutionSpec(backend="ray", workers=4, cpus_per_worker=2), {"CPU": 4.0})
    check_resources(ExecutionSpec(backend="ray", workers=2, gpus_per_worker=0.5), {"CPU": 2.0, "GPU": 1.0})


def test_a_person_at_the_terminal_cannot_sit_on_a_worker():
    scenario = resolve_scenario(
        {
            "name": "human-on-ray",
            "world": {"id": "negotiation"},
            "agents": {"alice": {"policy": "human"}, "bob": {"policy": "fair"}},
            "episodes": 1,
            "execution": {"backend": "ray"},
        }
    )
    with pytest.raises(AgoraError, match="agents.alice: policy human .* execution.backend: local"):
        run_scenario(scenario, track=False)


def test_the_workers_keep_their_policies_between_runs_of_a_rollout():
    rollout = RayRollout(ScenarioJob(werewolf(8)), ExecutionSpec(backend="ray", workers=2), concurrency=4)
    # the default task size: at least `concurrency` (4) episodes, so 2 tasks for 8 episodes
    try:
        pids = sorted(rollout.pids())
        first = rollout.run(8)
        again = rollout.run(8, first_index=8)
        assert [e.index for e in first] == list(range(8)) and [e.index for e in again] == list(range(8, 16))
        assert sorted(rollout.pids()) == pids and len(rollout.episodes) == 16
        assert rollout.played_by == {pids[0]: 8, pids[1]: 8}  # 2 tasks per run: one for each worker
        assert rollout.counters["seer_0"].decisions == sum(
            1 for e in first + again for s in e.steps if s.agent == "seer_0"
        )
    finally:
        rollout.close()


def test_the_command_line_flags_choose_the_backend(tracking_uri):
    result = CliRunner().invoke(  # --workers alone means Ray workers
        app, ["run", str(SCENARIOS / "werewolf_scripted.yaml"), "--episodes", "6", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    run = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("werewolf").experiment_id]
    )[0]
    assert run.data.params["execution.backend"] == "ray" and run.data.metrics["perf/workers"] == 2
    assert run.data.metrics["perf/episodes"] == 6


@dataclass
class Reseed:  # pickled by value below: Ray's workers do not import pytest's test modules
    """A change of every worker's root seed (`RayRollout.apply`)."""

    seed: int
    key: str = "seed"

    def apply(self, rollout) -> None:
        rollout.seed = self.seed


def test_changes_reach_every_worker_and_a_restarted_one_gets_them_again():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    local = ScenarioJob(werewolf(12)).build()
    Reseed(7).apply(local)
    expected = local.run(12)
    rollout = RayRollout(
        ScenarioJob(werewolf(12)), ExecutionSpec(backend="ray", workers=2, episodes_per_task=2), concurrency=4
    )
    try:
        rollout.apply(Reseed(3))
        rollout.apply(Reseed(7))  # the latest of a key is what a restarted worker gets
        os.kill(rollout.pids()[0], signal.SIGKILL)
        episodes = rollout.run(12)
        assert rollout.restarts == 1
        assert [e.seed for e in episodes] == [e.seed for e in expected] != [e.seed for e in werewolf_run(12)]
        assert episodes == expected
    finally:
        rollout.close()


def test_a_sigterm_during_a_ray_run_ends_it_killed_with_the_finished_episodes_and_stops_the_workers(tracking_uri):
    from agora import interrupts

    seen = []

    def interrupt_after_the_first_task(episode) -> None:
        seen.append(episode.index)
        if len(seen) == 4:  # the first task's episodes: the signal arrives while other tasks are in flight
            os.kill(os.getpid(), signal.SIGTERM)  # Agora's handler, not the one `ray.init` installs

    scenario = werewolf(40, backend="ray", workers=2, episodes_per_task=4)
    with interrupts.interruptible():
        result = run_scenario(scenario, tracking_uri=tracking_uri, on_episode=interrupt_after_the_first_task)
    assert result.interrupted and [e.index for e in result.episodes] == sorted(seen) and len(seen) == 4
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.info.status == "KILLED" and run.data.metrics["perf/episodes"] == 4
    deadline = time.monotonic() + 10
    while worker_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids() == []


@pytest.mark.model
def test_a_server_agent_plays_from_every_worker_with_the_drivers_api_key(llama_server, monkeypatch):
    """The key is set after Ray started (as on a cluster, where the workers' nodes never had it): the run
    passes the seats' `api_key_env` variables to its workers."""
    from tests.test_server_agent import negotiation

    monkeypatch.setenv("AGORA_KEY_SET_AFTER_RAY", llama_server.key)
    spec = negotiation(llama_server, Path("unused"), max_tokens=12, api_key_env="AGORA_KEY_SET_AFTER_RAY")
    spec.update(episodes=2, tracking={"enabled": False})
    local = run_scenario(resolve_scenario(spec))
    spread = run_scenario(
        resolve_scenario({**spec, "execution": {"backend": "ray", "workers": 2, "episodes_per_task": 1}})
    )
    assert spread.summary["parse/unanswered"] == 0 and spread.summary["perf/generated_tokens"] > 0
    # the same games (seeds, seats), each reply from the server; not the same text: llama.cpp reuses the KV
    # cache of the previous request's common prefix, so its logits (and a sampled reply) depend on what the
    # server answered before, which differs between one process and two workers
    assert [(e.seed, e.policies) for e in spread.episodes] == [(e.seed, e.policies) for e in local.episodes]
    assert all(s.text for e in spread.episodes for s in e.steps if s.agent == "alice")


def test_a_run_joins_a_cluster_started_with_ray_start():
    """`ray start --head` (this machine as a one-node cluster), then `execution.address: host:port`: the run's
    workers live in that cluster, which outlives the run."""
    import socket
    import subprocess

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="agora-ray-", dir="/tmp")  # short (socket paths) and unique: found by it at the end
    ray_cli = str(Path(sys.executable).parent / "ray")
    ray.shutdown()
    head = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    subprocess.run([*head, f"--temp-dir={temp}", "--disable-usage-stats"], check=True, capture_output=True)
    try:
        joined = run_scenario(werewolf(8, backend="ray", workers=2, address=f"127.0.0.1:{port}"), track=False)
        assert joined.episodes == werewolf_run(8) and joined.summary["perf/workers"] == 2
        assert not ray.is_initialized()  # the run left the cluster...
        init_ray(f"127.0.0.1:{port}")
        assert ray.cluster_resources()["CPU"] == 2  # ...which still runs
        ray.shutdown()
    finally:
        subprocess.run(["pkill", "-9", "-f", temp], check=False)
        shutil.rmtree(temp, ignore_errors=True)
        init_ray("local", num_cpus=4)


def test_workers_that_cannot_get_free_resources_are_told_instead_of_waiting_forever(monkeypatch):
    """Another pool of the same run (a league's payoff workers beside its rollout workers) holding the
    cluster's CPUs: the second pool is refused after a short wait, with what is free."""
    import agora.execution

    monkeypatch.setattr(agora.execution, "FREE_SECONDS", 2.0)  # (10 s by default) the test's time
    holding = RayRollout(ScenarioJob(werewolf(4)), ExecutionSpec(backend="ray", workers=3), concurrency=4)
    try:
        start = time.monotonic()
        with pytest.raises(WorkerError, match=r"2 workers x 1 CPU need 2 CPUs; the Ray cluster has 1 free \(other"):
            RayRollout(ScenarioJob(werewolf(4)), ExecutionSpec(backend="ray", workers=2), concurrency=4)
        assert time.monotonic() - start < 15
    finally:
        holding.close()
    rollout = RayRollout(ScenarioJob(werewolf(4)), ExecutionSpec(backend="ray", workers=2), concurrency=4)
    rollout.close()  # freed CPUs are found again


def test_workers_whose_tags_differ_keep_every_value():
    tags = [{"agora.kernel": "alice=wx", "agora.x": "1"}, {"agora.kernel": "alice=xw", "agora.x": "1"}]
    assert merged_tags(tags) == {"agora.kernel": "alice=wx | alice=xw", "agora.x": "1"}
    assert merged_tags([{}, {}]) == {}


class OutOfMemoryOnce(RayRollout):
    """Ray reports the first returned task as lost to the memory monitor (its worker killed out of memory)."""

    def _get(self, refs):
        if not isinstance(refs, list) and not getattr(self, "failed", False):
            self.failed = True
            raise ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
        return super()._get(refs)


def test_a_worker_killed_out_of_memory_is_restarted_like_a_dead_one():
    rollout = OutOfMemoryOnce(
        ScenarioJob(werewolf(12)), ExecutionSpec(backend="ray", workers=2, episodes_per_task=3), concurrency=4
    )
    try:
        episodes = rollout.run(12)
        assert rollout.restarts == 1 and [e.index for e in episodes] == list(range(12))
        assert episodes == werewolf_run(12)
    finally:
        rollout.close()


def test_a_fresh_agora_run_on_ray_prints_only_its_own_output_and_leaves_no_ray_behind(tmp_path):
    """The command as a user types it, in a new process that starts (and stops) its own local Ray instance."""
    import subprocess

    before = {p for p in Path("/proc").iterdir() if p.name.isdigit()}
    done = subprocess.run(
        [sys.executable, "-m", "agora.cli", "run", str(SCENARIOS / "werewolf_scripted.yaml"), "--episodes", "8",
         "--workers", "2", "--no-track"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Ray rollout workers" in done.stdout and "werewolf" in done.stdout
    for line in (done.stdout + done.stderr).splitlines():
        assert "INFO" not in line and "WARNING" not in line and "raylet" not in line, line
    deadline = time.monotonic() + 20
    # under pytest-xdist the other worker's processes are new too: skip the whole test run's (the controller's
    # descendants); what the finished `agora run` left behind has lost its parent, so it is not among them
    ours = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()
    while True:  # Ray's processes of that run (gcs server, raylet, workers), none of this test run's own
        left = []
        for entry in {p for p in Path("/proc").iterdir() if p.name.isdigit()} - before:
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ray" in command and not descends_from(int(entry.name), ours):
                left.append(command[:100])
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, left


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parent(pid)
    return False
