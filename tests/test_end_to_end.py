"""Scenario -> batched rollout -> MLflow, read back the way a user reviews it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from agora.cli import app
from agora.run import run_scenario
from agora.scenario import load_scenario
from agora.trajectory import read_jsonl
from mlflow import MlflowClient
from tests.conftest import ROOT, SCENARIOS

runner = CliRunner()


def transcripts(run):
    return [[(s.agent, s.text, json.dumps(s.action)) for s in e.steps] for e in run.episodes]


def read_run(uri: str, run_id: str):
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    table = client.load_table(run.info.experiment_id, "transcripts.json", run_ids=[run_id])
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "scenario")
    }
    return run, table, artifacts


def test_scripted_run_is_recorded_and_readable(tracking_uri):
    result = run_scenario(load_scenario(SCENARIOS / "negotiation_scripted.yaml", {"episodes": 20}))
    run, table, artifacts = read_run(tracking_uri, result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["agents.alice.accept_ratio"] == "0.8" and run.data.params["world.max_turns"] == "10"
    assert run.data.tags["agora.world"] == "negotiation" and run.data.tags["agora.seed"] == "0"
    assert "mlflow.source.git.commit" in run.data.tags
    metrics = run.data.metrics
    assert metrics["eval/agreement"] == pytest.approx(result.summary["eval/agreement"])
    assert 0 <= metrics["eval/pareto_optimal"] <= metrics["eval/agreement"] <= 1
    assert not [k for k in metrics if k.startswith("episode/")]  # per-episode values are the episodes.json table
    assert {
        "scenario/negotiation_scripted.yaml",
        "scenario/resolved.json",
        "episodes.json",
        "transcripts.json",
        "trajectories.jsonl.gz",
    } <= artifacts
    assert list(table.columns) == [
        "episode",
        "turn",
        "agent",
        "policy",
        "prompt",
        "text",
        "action",
        "reward",
        "fallback",
        "parse_failures",
    ]
    assert len(table) == sum(len(e.steps) for e in result.episodes) and set(table["episode"]) == set(range(20))


def test_same_seed_same_transcripts_scripted():
    def play(seed):
        return transcripts(
            run_scenario(
                load_scenario(SCENARIOS / "negotiation_scripted.yaml", {"episodes": 30, "seed": seed}), track=False
            )
        )

    assert play(5) == play(5)
    assert play(5) != play(6)


def test_interrupted_run_keeps_finished_episodes(tracking_uri):
    def stop_after_three(episode):
        if episode.index == 2:
            raise KeyboardInterrupt

    scenario = load_scenario(SCENARIOS / "negotiation_scripted.yaml", {"episodes": 50, "concurrency": 1})
    result = run_scenario(scenario, on_episode=stop_after_three)
    assert result.interrupted and len(result.episodes) == 3
    run, table, _ = read_run(tracking_uri, result.run_id)
    assert run.info.status == "KILLED" and set(table["episode"]) == {0, 1, 2}


@pytest.mark.model
def test_llm_negotiation_end_to_end_through_the_cli(tracking_uri):
    result = runner.invoke(app, ["run", str(SCENARIOS / "negotiation.yaml"), "--episodes", "2", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    for label in (
        "agreement rate",
        "mean score alice (llm)",
        "Pareto-optimal rate",
        "parse-failure rate",
        "generated tokens/s",
    ):
        assert label in result.output
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.output).group(1)
    run, table, artifacts = read_run(tracking_uri, run_id)
    assert run.data.params["agents.alice.model"] == "smollm2-135m-instruct"
    assert run.data.metrics["perf/tokens_per_s"] > 0 and "parse/failure_rate/alice" in run.data.metrics
    llm_rows = table[table["agent"] == "alice"]
    assert len(llm_rows) > 0 and llm_rows["prompt"].str.startswith("You are alice").all()  # the world's prompt
    assert not llm_rows["prompt"].str.contains("<|im_start|>", regex=False).any()  # no chat template
    assert "trajectories.jsonl.gz" in artifacts and "replays" in artifacts
    path = MlflowClient(tracking_uri).download_artifacts(run_id, "trajectories.jsonl.gz")
    steps = [vars(s) for e in read_jsonl(path) for s in e.steps if s.agent == "alice"]
    assert steps and all(len(s["logprobs"]) == len(s["completion_ids"]) > 0 for s in steps)
    assert all("<|im_start|>" in s["prompt"] and s["messages"][0]["content"] in s["prompt"] for s in steps)


@pytest.mark.model
def test_same_seed_same_transcripts_llm_greedy(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\nworld: {id: negotiation, max_turns: 4}\n"
        "agents:\n  alice: {policy: llm, temperature: 0, max_new_tokens: 24}\n  bob: {policy: random}\n"
        "episodes: 2\nconcurrency: 2\n"
    )
    first = run_scenario(load_scenario(path), track=False)
    assert transcripts(first) == transcripts(run_scenario(load_scenario(path), track=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store(tracking_uri):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agora.cli", "ui", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                    return
            except OSError:
                time.sleep(1)
        pytest.fail("agora ui did not answer within 90 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlflow ui runs workers of its own
        proc.wait(timeout=30)


def test_sigterm_stops_a_run_like_ctrl_c_and_keeps_its_episodes(tmp_path, tracking_uri):
    """`kill PID` mid-run: exit 130, the finished episodes' trajectories in MLflow, the run marked KILLED."""
    from mlflow import MlflowClient
    from tests.conftest import ROOT

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "agora.cli",
        "run",
        str(ROOT / "scenarios" / "negotiation_scripted.yaml"),
        "--episodes",
        "10000000",
    ]
    client, deadline, runs = MlflowClient(tracking_uri), time.monotonic() + 120, []
    client.search_experiments()  # create the store first: two processes creating one sqlite store race (a known fault)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not runs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        experiment = client.get_experiment_by_name("negotiation")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
    time.sleep(2)  # episodes finish meanwhile
    assert runs and proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"finished episodes kept (run marked KILLED)" in err and b"Traceback" not in err
    run_id = runs[0].info.run_id
    assert client.get_run(run_id).info.status == "KILLED"
    episodes = list(read_jsonl(client.download_artifacts(run_id, "trajectories.jsonl.gz", str(tmp_path))))
    assert episodes and all(e.steps for e in episodes)
