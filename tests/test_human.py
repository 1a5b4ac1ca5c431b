"""A person at the terminal: the `human` policy alone, and the real CLI driven with piped stdin."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import yaml

from agents.human import EndOfInput, HumanPolicy
from agora.policy import ActRequest
from mlflow import MlflowClient
from tests.conftest import ROOT, SCENARIOS


def ask(monkeypatch, typed: str, messages=None, stdin=None, **params) -> tuple[str, str]:
    """(the reply read, what was printed) for one request with `typed` (or the stream `stdin`) on stdin."""
    monkeypatch.setattr(sys, "stdin", stdin or io.StringIO(typed))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    policy = HumanPolicy(HumanPolicy.Config(**params), seed=0)
    messages = messages or [{"role": "user", "content": "What is 6 + 4?"}]
    reply = policy.act([ActRequest(3, "expert", {}, messages)])[0]
    assert reply.action is None  # text, parsed by the world like an LLM's
    return reply.text, out.getvalue()


def test_shows_the_prompt_and_reads_one_line(monkeypatch):
    text, shown = ask(monkeypatch, "10\n11\n")
    assert text == "10"
    assert "Episode 3, you play expert" in shown and "What is 6 + 4?" in shown


def test_empty_lines_ask_again(monkeypatch):
    text, shown = ask(monkeypatch, "\n   \n10\n")
    assert text == "10" and shown.count("empty reply") == 2


def test_end_of_input_stops_like_ctrl_c(monkeypatch):
    with pytest.raises(EndOfInput):
        ask(monkeypatch, "\n")
    assert issubclass(EndOfInput, KeyboardInterrupt)  # the run keeps finished episodes and ends as interrupted


def test_a_retry_shows_only_what_was_wrong(monkeypatch):
    messages = [
        {"role": "user", "content": "LONG PROMPT"},
        {"role": "assistant", "content": "ten"},
        {"role": "user", "content": "Your reply could not be used: no number"},
    ]
    text, shown = ask(monkeypatch, "10\n", messages)
    assert text == "10" and "no number" in shown and "LONG PROMPT" not in shown


def test_multiline_replies_end_with_an_empty_line(monkeypatch):
    text, _ = ask(monkeypatch, "MESSAGE: hi\nACTION: WALK AWAY\n\nnext\n", multiline=True)
    assert text == "MESSAGE: hi\nACTION: WALK AWAY"
    text, _ = ask(monkeypatch, "MESSAGE: hi\nACTION: WALK AWAY", multiline=True)  # EOF after text ends the reply
    assert text == "MESSAGE: hi\nACTION: WALK AWAY"


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])  # the two ways Python's stdin decodes
def test_invalid_utf8_typed_becomes_replacement_characters(monkeypatch, errors):
    """`printf '\\xff 42'`: read as text that can be stored (it once crashed the decoder, or played and then
    failed the transcript's save), still parsed as the answer 42."""
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff 42\n"), encoding="utf-8", errors=errors)
    text, _ = ask(monkeypatch, "", stdin=stdin)
    assert text == "\ufffd 42" and text.encode("utf-8")


def test_a_run_with_invalid_utf8_typed_keeps_valid_transcripts(tmp_path, monkeypatch):
    from agora.run import run_scenario, transcript_table
    from agora.scenario import load_scenario

    typed = b"\xff 42\n42\n42\n42\n42\n42\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(typed), encoding="utf-8", errors="surrogateescape"))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    result = run_scenario(load_scenario(human_expert_scenario(tmp_path)), track=False)
    assert len(result.episodes) == 2 and not result.interrupted
    table = transcript_table(result.episodes)
    expert = [step for episode in result.episodes for step in episode.steps if step.agent == "expert"]
    # the undecodable byte makes the first reply no answer (a counted parse failure, asked again), kept as text
    assert [a["text"] for a in expert[0].failed_attempts] == ["\ufffd 42"] and expert[0].text == "42"
    assert result.counters["expert"].parse_failures == 1
    assert json.dumps(table, ensure_ascii=False).encode("utf-8")


def cli(args: list[str], typed: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """The real `agora` command in a subprocess, `typed` piped to its stdin."""
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "agora.cli", "run", *args],
        input=typed,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def human_expert_scenario(tmp_path, episodes: int = 2, extra: str = "") -> str:
    path = tmp_path / "human.yaml"
    path.write_text(
        "name: human-expert\nworld: {id: deferral, kinds: {closed: 1.0}, difficulties: [2]}\n"
        "agents:\n  'agent_*': {policy: always_defer}\n  expert: {policy: human}\n"
        f"episodes: {episodes}\nconcurrency: 1\nmax_retries: 2\n{extra}"
    )
    return str(path)


def test_cli_human_expert_with_piped_answers(tmp_path):
    """Two episodes, two deferral rounds each: four expert turns; a bad reply is asked again."""
    typed = "no idea\n417\n1; a guess\n2\n3\n"
    result = cli([human_expert_scenario(tmp_path), "--no-track"], typed)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("you play expert") == 4
    assert "What you know (the team does not):" in out and "Agents 0, 1, 2 asked you" in out
    assert "Your reply could not be used: no number" in out
    assert "human-expert: 2 episodes" in out and "expert calls per problem" in out
    assert not re.search(r"━+ +\d+/2", out) and "Traceback" not in result.stderr  # no live bar drawn over the prompt


def test_cli_end_of_input_keeps_finished_episodes(tmp_path, tracking_uri):
    result = cli([human_expert_scenario(tmp_path, episodes=5)], "1\n2\n3\n")  # input ends during episode 1
    assert result.returncode == 130, result.stdout + result.stderr
    assert "end of input: stopping the run" in result.stdout
    assert "interrupted: 1 finished episodes kept (run marked KILLED)" in result.stderr
    assert "Traceback" not in result.stderr
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("human-expert").experiment_id])
    assert run.info.status == "KILLED" and run.data.metrics["perf/episodes"] == 1


def test_cli_ctrl_c_at_the_prompt_keeps_finished_episodes(tmp_path, tracking_uri):
    """SIGINT while the person is being asked (episode 1), then another during the clean-up: episode 0
    is kept, the run is KILLED, exit 130, no traceback (the second one once printed a traceback)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agora.cli", "run", human_expert_scenario(tmp_path, episodes=3)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
    )
    proc.stdin.write(b"1\n2\n")  # episode 0's two expert turns
    proc.stdin.flush()
    seen, deadline = b"", time.time() + 120
    while b"Episode 1, you play expert" not in seen or not seen.endswith(b"your reply> "):
        assert time.time() < deadline and proc.poll() is None, seen.decode()
        if select.select([proc.stdout], [], [], 1.0)[0]:
            seen += os.read(proc.stdout.fileno(), 65536)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # while the run's end is logged, or just after
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (seen + out + err).decode()
    assert b"interrupted" in err and b"Traceback" not in err, err.decode()
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("human-expert").experiment_id])
    assert run.info.status == "KILLED" and run.data.metrics["perf/episodes"] == 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"transcripts.json", "trajectories.jsonl.gz"}


def test_cli_human_plays_another_text_world(tmp_path):
    path = tmp_path / "negotiate.yaml"
    path.write_text(
        "name: human-negotiator\nworld: {id: negotiation, first_mover: first}\n"
        "agents:\n  alice: {policy: human}\n  bob: {policy: fair}\nepisodes: 1\nconcurrency: 1\ntracking: {enabled: "
        "false}\n"
    )
    result = cli([str(path)], "ACTION: WALK AWAY\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "You are alice, negotiating with bob" in result.stdout and "walk-away rate" in result.stdout


@pytest.mark.model
def test_cli_llm_team_with_a_human_expert(tmp_path, tracking_uri):
    """The shipped human-expert scenario, made small (two agents, one decision round): the LLM team's
    turns and the person's turns interleave through the real CLI."""
    scenario = yaml.safe_load((SCENARIOS / "deferral_human.yaml").read_text())
    scenario["world"].update(team_size=2, rounds=2, kinds={"closed": 1.0})
    scenario["agents"]["agent_*"].update(temperature=0, max_new_tokens=8)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(scenario))
    result = cli([str(path), "--episodes", "1"], "417\n" * 4, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deferral-human-expert: 1 episode" in result.stdout and "Traceback" not in result.stderr
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", result.stdout).group(1)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.params["agents.expert.policy"] == "human" and "parse/failure_rate/agent_0" in run.data.metrics
