"""A real MLflow tracking server (`mlflow server` on 127.0.0.1, sqlite backend and an artifact folder it
serves) receives what a local store does: a run with its metrics, description, artifacts and episode
traces, and a campaign. This is the store every node of a cluster reaches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from agora.campaign import load_campaign
from agora.run import run_scenario
from agora.scenario import resolve_scenario
from agora.trajectory import TRAJECTORIES, read_jsonl
from mlflow import MlflowClient
from tests.conftest import ROOT
from tests.servers import free_port


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a sqlite backend file and an artifact folder, on a free port of 127.0.0.1."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art")]
    proc = subprocess.Popen(
        cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start (exit code {proc.poll()})")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server runs workers of its own
        proc.wait(timeout=30)


def test_a_run_goes_to_a_tracking_server_whole(mlflow_server, tmp_path):
    scenario = resolve_scenario(
        {
            "name": "to-server",
            "world": {"id": "negotiation", "max_turns": 4},
            "episodes": 3,
            "agents": {"alice": {"policy": "greedy"}, "bob": {"policy": "fair"}},
        }
    )
    result = run_scenario(scenario, tracking_uri=mlflow_server)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/agreement"] == pytest.approx(result.summary["eval/agreement"])
    assert "| agreement rate |" in run.data.tags["mlflow.note.content"]
    # artifacts go through the server's artifact proxy, and come back
    episodes = list(read_jsonl(client.download_artifacts(result.run_id, TRAJECTORIES, str(tmp_path))))
    assert episodes == result.episodes
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=result.run_id, max_results=10)
    assert sorted(int(t.info.tags["agora.episode"]) for t in traces) == [0, 1, 2]
    assert all(len(t.data.spans) == 1 + len(e.steps) for t, e in zip(sorted(traces, key=episode), episodes))


def episode(trace) -> int:
    return int(trace.info.tags["agora.episode"])


def test_a_campaign_goes_to_a_tracking_server(mlflow_server, tmp_path):
    (tmp_path / "c.yaml").write_text((ROOT / "scenarios" / "campaigns" / "rps_psro.yaml").read_text())
    campaign = load_campaign(
        tmp_path / "c.yaml", {"iterations": 2, "checkpoint.dir": str(tmp_path / "ck"), "tracking.uri": mlflow_server}
    )
    result = campaign.run()
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.note.content"].startswith("**psro** campaign")
    history = client.get_metric_history(result.run_id, "pop/exploitability")
    assert [m.step for m in history] == [0, 1]
    assert "meta/strategies.json" in {a.path for a in client.list_artifacts(result.run_id, "meta")}
