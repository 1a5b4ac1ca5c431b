"""What a reviewer sees first in MLflow: a run's description (`mlflow.note.content`) is its summary table,
its metrics are run-level ones, and its episodes are one table (read back through the MLflow client)."""

from __future__ import annotations

import json
import re

import pytest

from agora.overview import number
from agora.run import run_scenario
from agora.scenario import load_scenario
from mlflow import MlflowClient
from tests.conftest import SCENARIOS


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def markdown_rows(note: str, header: str) -> list[list[str]]:
    """The rows of the markdown table in `note` whose header line starts with `| header |`."""
    lines = note.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def read_table(client: MlflowClient, run_id: str, path: str, folder) -> dict[str, list]:
    table = json.loads(open(client.download_artifacts(run_id, path, str(folder))).read())
    return {name: [row[i] for row in table["data"]] for i, name in enumerate(table["columns"])}


def test_a_run_is_described_by_its_summary_and_its_episodes_are_one_table(store, tmp_path):
    result = run_scenario(load_scenario(SCENARIOS / "negotiation_scripted.yaml", {"episodes": 6}), tracking_uri=store)
    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    note, metrics = run.data.tags["mlflow.note.content"], run.data.metrics

    assert note.startswith("**negotiation** · 6 episodes · seed 0")
    seats = markdown_rows(note, "seat")
    assert [row[:2] for row in seats] == [["alice", "greedy"], ["bob", "fair"]]
    assert [row[2] for row in seats] == [number(metrics["eval/return/alice"]), number(metrics["eval/return/bob"])]
    rows = markdown_rows(note, "metric (mean over episodes)")
    keys = [row[2].strip("`") for row in rows]
    assert keys[:2] == ["eval/agreement", "eval/pareto_optimal"] and "parse/failure_rate" in keys
    assert rows[0][0] == "agreement rate"  # the world's label of the metric
    for _, value, key in rows:  # every value is the run's metric, as logged
        assert value == number(metrics[key.strip("`")]) == number(result.summary[key.strip("`")])

    # the run's metrics are run-level only; each episode is one row of episodes.json
    assert not [k for k in metrics if k.startswith("episode/")] and metrics["perf/episodes"] == 6
    table = read_table(client, result.run_id, "episodes.json", tmp_path)
    episodes = result.episodes
    assert table["episode"] == [e.index for e in episodes] == list(range(6))
    assert table["seed"] == [e.seed for e in episodes]
    assert table["policy/alice"] == ["greedy"] * 6
    for seat in ("alice", "bob"):
        assert table[f"return/{seat}"] == [e.returns[seat] for e in episodes]
    for name in episodes[0].metrics:
        assert table[name] == [e.metrics[name] for e in episodes]
    assert metrics["eval/agreement"] == pytest.approx(sum(table["agreement"]) / 6)
    tables = [a["path"] for a in json.loads(run.data.tags["mlflow.loggedArtifacts"])]
    assert "episodes.json" in tables  # shown by MLflow's table view


def test_an_interrupted_run_says_so_in_its_description():
    from agora.overview import run_note

    scenario = load_scenario(SCENARIOS / "matrix_scripted.yaml", {"episodes": 10})
    summary = {"perf/episodes": 3.0, "eval/return/player_0": 1.5, "parse/failure_rate": 0.0}
    note = run_note(scenario, summary, interrupted=True)
    assert note.startswith("**matrix** · 3 of 10 episodes (interrupted) · seed")
    assert markdown_rows(note, "seat")[0] == ["player_0", scenario.seats["player_0"].entry.name, "1.500"]
    assert markdown_rows(note, "seat")[1][2] == "-"  # no mean for a seat without one
    assert run_note(scenario, {**summary, "perf/episodes": 1.0}).startswith("**matrix** · 1 episode · seed")


def test_a_long_description_is_cut_at_a_line_under_mlflows_limit(store):
    from agora.tracking import MAX_NOTE_CHARS, Tracker, markdown_table

    tracker = Tracker(store, "notes", "long")
    rows = [[f"version-{i}", "a | b", i] for i in range(400)]
    tracker.set_note(markdown_table(["version", "text", "n"], rows))
    tracker.end()
    note = MlflowClient(store).get_run(tracker.run_id).data.tags["mlflow.note.content"]
    assert len(note) <= MAX_NOTE_CHARS and note.endswith("(cut here: the full tables are the run's artifacts)")
    assert re.search(r"^\| version-\d+ \| a \\\| b \| \d+ \|$", note, re.M)  # `|` in a cell escaped, rows whole


def test_a_replaced_table_holds_only_its_last_rows_and_is_listed_once(store, tmp_path):
    """MLflow appends to a logged table; a campaign's tables rebuilt from its state replace it instead."""
    from agora.tracking import Tracker

    tracker = Tracker(store, "notes", "tables")
    tracker.log_table({"step": [1], "x": [0.5]}, "t/board.json", replace=True)
    tracker.log_table({"step": [1, 2], "x": [0.5, 0.25]}, "t/board.json", replace=True)
    tracker.log_table({"step": [1]}, "t/appended.json")
    tracker.log_table({"step": [2]}, "t/appended.json")
    tracker.end()
    client = MlflowClient(store)
    assert read_table(client, tracker.run_id, "t/board.json", tmp_path) == {"step": [1, 2], "x": [0.5, 0.25]}
    assert read_table(client, tracker.run_id, "t/appended.json", tmp_path) == {"step": [1, 2]}
    tables = [a["path"] for a in json.loads(client.get_run(tracker.run_id).data.tags["mlflow.loggedArtifacts"])]
    assert tables == ["t/board.json", "t/appended.json"]
