"""Reviewing a run: episodes as MLflow traces read back through the client, HTML replays, the
transcript table's readable prompt column, and trajectories with and without chat messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import agora.traces
from agora.errors import StoreError
from agora.models import chat_prompt
from agora.replay import MAX_TURNS_REVIEWED, MAX_TURNS_SHOWN, episode_html, replay_name, review_sample
from agora.run import run_scenario, transcript_table
from agora.scenario import resolve_scenario
from agora.traces import episode_trace, trace_id
from agora.trajectory import Episode, Step, read_jsonl, write_jsonl
from mlflow import MlflowClient

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one costs seconds); each test names its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def negotiation(name: str, alice: dict, episodes: int, traces: int = 100, max_turns: int = 4):
    return resolve_scenario(
        {
            "name": name,
            "world": {"id": "negotiation", "max_turns": max_turns},
            "episodes": episodes,
            "seed": 3,
            "concurrency": 2,
            "agents": {"alice": alice, "bob": {"policy": "fair"}},
            "tracking": {"traces": traces},
        }
    )


def run_traces(client: MlflowClient, run_id: str):
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_traces(locations=[experiment], run_id=run_id, max_results=1000)


def artifact_text(client: MlflowClient, run_id: str, path: str, into: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(into))).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def llm_run(store, tmp_path_factory, tiny_model_dir):
    """A tiny random LLM (alice) against a scripted seat: real chat messages, replies that do not parse."""
    llm = {"policy": "llm", "model": tiny_model_dir, "device": "cpu", "max_new_tokens": 6, "constrained": False}
    result = run_scenario(negotiation("llm", llm, episodes=2, max_turns=2), tracking_uri=store)
    return MlflowClient(store), result, tmp_path_factory.mktemp("downloads")


def test_each_episode_is_one_trace_with_a_span_per_turn_and_the_chat_messages(llm_run, tiny_model_dir):
    client, result, _ = llm_run
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    traces = sorted(run_traces(client, result.run_id), key=lambda t: int(t.info.tags["agora.episode"]))
    assert [t.info.trace_id for t in traces] == [trace_id(result.run_id, e.index) for e in result.episodes]
    for trace, episode in zip(traces, result.episodes):
        assert trace.info.tags["agora.seed"] == str(episode.seed)
        assert trace.info.tags["agora.run"] == result.run_id
        assert trace.info.tags["agora.policies"] == "alice=llm, bob=fair"
        assert trace.info.trace_metadata["mlflow.sourceRun"] == result.run_id
        (root,) = [s for s in trace.data.spans if s.parent_id is None]
        turns = sorted((s for s in trace.data.spans if s is not root), key=lambda s: s.attributes["agora.turn"])
        assert root.parent_id is None and root.outputs["returns"] == episode.returns
        assert root.inputs == {"seed": episode.seed, "policies": episode.policies}
        assert len(turns) == len(episode.steps) and all(s.parent_id == root.span_id for s in turns)
        for span, step in zip(turns, episode.steps):
            # the span is the turn as timed: from the first call for the decision to its reply
            assert span.start_time_ns == int(step.started * 1e9) and step.seconds >= 0
            assert span.end_time_ns == int((step.started + step.seconds) * 1e9)
            assert root.start_time_ns <= span.start_time_ns <= span.end_time_ns <= root.end_time_ns
            assert span.attributes["agora.agent"] == step.agent
            assert span.attributes["agora.turn"] == step.turn
            assert span.attributes["agora.action"] == step.action
            assert span.attributes["agora.reward"] == step.reward
            assert span.attributes["agora.fallback"] == step.fallback
            assert span.attributes["agora.parse_failures"] == step.failed_attempts
            if step.agent == "bob":
                assert span.span_type == "AGENT" and span.inputs["observation"] == step.observation
                continue
            assert span.span_type == "CHAT_MODEL"
            messages = span.inputs["messages"]
            # everything the model was shown: the world's worked example, then the world's conversation;
            # templated again, the messages are exactly the prompt it was fed
            assert messages == [*step.preamble, *step.messages] and len(step.preamble) == 2
            assert chat_prompt(tokenizer, messages) == step.prompt
            assert "<|im_start|>" in step.prompt and not any("<|im_start|>" in m["content"] for m in messages)
            assert span.outputs["choices"][0]["message"] == {"role": "assistant", "content": step.text}
            usage = span.attributes["mlflow.chat.tokenUsage"]
            assert usage["input_tokens"] == len(step.prompt_ids) and usage["output_tokens"] == len(step.completion_ids)
    retried = [s for e in result.episodes for s in e.steps if s.failed_attempts and s.agent == "alice"]
    assert retried, "the random model's replies should fail to parse"
    step = retried[0]  # the re-prompt the agent was shown after its unparseable reply
    assert step.messages[1] == {"role": "assistant", "content": step.failed_attempts[0]["text"]}
    assert step.failed_attempts[0]["error"] in step.messages[2]["content"]


def test_the_traces_tab_search_finds_an_episode_by_tag(llm_run):
    client, result, _ = llm_run
    experiment = client.get_run(result.run_id).info.experiment_id
    (found,) = client.search_traces(locations=[experiment], filter_string="tags.`agora.episode` = '1'")
    assert found.info.trace_id == trace_id(result.run_id, 1)


def test_the_transcript_table_prompt_is_the_worlds_prompt_without_template_tokens(llm_run):
    client, result, folder = llm_run
    table = json.loads(artifact_text(client, result.run_id, "transcripts.json", folder / "dl1"))
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    steps = [s for e in result.episodes for s in e.steps]
    assert [(r["episode"], r["turn"], r["agent"]) for r in rows] == [
        (e.index, s.turn, s.agent) for e in result.episodes for s in e.steps
    ]
    for row, step in zip(rows, steps):
        assert "<|im_start|>" not in row["prompt"]
        assert row["prompt"] == (step.messages[0]["content"] if step.agent == "alice" else "")
        assert row["parse_failures"] == len(step.failed_attempts) and row["text"] == step.text


def test_the_replay_page_of_an_episode_is_logged(llm_run):
    client, result, folder = llm_run
    names = {a.path for a in client.list_artifacts(result.run_id, "replays")}
    assert names == {f"replays/{replay_name(e.index)}" for e in result.episodes}
    page = artifact_text(client, result.run_id, f"replays/{replay_name(1)}", folder / "dl2")
    episode = result.episodes[1]
    assert f"seed</td><td>{episode.seed}" in page and page.count('<div class="turn') == len(episode.steps)
    assert "<|im_start|>" not in page  # the prompt block holds the chat messages, not the templated prompt
    assert page.count("<td>seconds</td>") == len(episode.steps)
    assert f"<td>seconds</td><td>{episode.steps[0].seconds:.3f}</td>" in page


def test_a_replay_escapes_what_agents_wrote():
    step = Step(
        "alice",
        0,
        "raw",
        HOSTILE,
        {"type": 0},
        reward=1.5,
        fallback=True,
        messages=[{"role": "user", "content": "</pre><img src=x onerror=alert(1)>"}],
        failed_attempts=[{"text": "<iframe>", "error": "bad <tag>"}],
    )
    page = episode_html(Episode(7, 11, {"alice": "<llm>"}, [step], {"alice": 1.5}, {"agreement": 1.0}))
    assert "<script>" not in page and "<img" not in page and "<iframe>" not in page and "<llm>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "fallback action" in page and "1 unparseable reply" in page and "bad &lt;tag&gt;" in page
    assert "prompt (1 message)" in page  # one message, not "1 messages"
    assert "<script" not in page.lower().replace("&lt;script", "")


def test_a_replay_shows_the_outcome_and_a_scripted_seats_observation_one_key_a_line():
    step = Step("bob", 0, "", "ACTION: ACCEPT", {"type": 1}, observation={"pool": [1, 2], "note": "<b>"})
    episode = Episode(3, 5, {"bob": "fair"}, [step], {"bob": 2.0}, {}, info={"outcome": "deal <ok>"})
    page = episode_html(episode)
    assert "<td>outcome</td><td>{&quot;outcome&quot;: &quot;deal &lt;ok&gt;&quot;}</td>" in page
    assert "&quot;note&quot;: &quot;&lt;b&gt;&quot;,\n &quot;pool&quot;: [\n  1," in page


def test_only_the_first_episodes_are_traced_and_replayed(store, capfd):
    result = run_scenario(negotiation("cap", {"policy": "greedy"}, episodes=5, traces=2), tracking_uri=store)
    assert capfd.readouterr() == ("", "")  # no MLflow chatter or warnings in the terminal
    client = MlflowClient(store)
    traces = run_traces(client, result.run_id)
    assert sorted(int(t.info.tags["agora.episode"]) for t in traces) == [0, 1]
    assert {a.path for a in client.list_artifacts(result.run_id, "replays")} == {
        f"replays/{replay_name(0)}",
        f"replays/{replay_name(1)}",
    }
    assert len(transcript_table(result.episodes)["episode"]) == sum(len(e.steps) for e in result.episodes)
    none = run_scenario(negotiation("none", {"policy": "greedy"}, episodes=2, traces=0), tracking_uri=store)
    assert not run_traces(client, none.run_id) and not client.list_artifacts(none.run_id, "replays")


def test_long_episodes_are_cut_and_the_review_stops_at_its_turn_budget():
    def episode(index: int, turns: int) -> Episode:
        return Episode(index, index, {"a": "x"}, [Step("a", t, "", f"reply {t}", t) for t in range(turns)])

    long = [episode(i, MAX_TURNS_SHOWN + 5) for i in reversed(range(12))]
    per_budget = MAX_TURNS_REVIEWED // MAX_TURNS_SHOWN
    assert [e.index for e in review_sample(long, 100)] == list(range(per_budget))
    assert [e.index for e in review_sample(long, 3)] == [0, 1, 2]
    huge = episode(0, MAX_TURNS_REVIEWED + 1)  # counts as the turns it shows
    assert [e.index for e in review_sample([huge, *long[:-1]], 100)] == list(range(per_budget))
    trace = episode_trace(long[-1], "run", "1", start_ns=0)
    root = trace.data.spans[0]
    assert len(trace.data.spans) == 1 + MAX_TURNS_SHOWN and root.name == "episode 0"
    assert root.attributes["agora.turns"] == MAX_TURNS_SHOWN + 5
    assert root.attributes["agora.turns_shown"] == MAX_TURNS_SHOWN
    assert [s.attributes["agora.turn"] for s in trace.data.spans[1:]] == list(range(MAX_TURNS_SHOWN))
    page = episode_html(long[-1])
    assert page.count('<div class="turn') == MAX_TURNS_SHOWN and f"the first {MAX_TURNS_SHOWN} shown" in page
    assert f"reply {MAX_TURNS_SHOWN - 1}<" in page and f"reply {MAX_TURNS_SHOWN}<" not in page


def test_trajectories_round_trip_with_and_without_messages(tmp_path):
    messages = [{"role": "user", "content": "offer?"}, {"role": "assistant", "content": "??"}]
    with_messages = Episode(0, 1, {"a": "llm"}, [Step("a", 0, "<|im_start|>offer?", "x", 1, messages=messages)])
    write_jsonl([with_messages], tmp_path / "new.jsonl")
    (back,) = read_jsonl(tmp_path / "new.jsonl")
    assert back == with_messages and back.steps[0].messages == messages
    old = json.loads((tmp_path / "new.jsonl").read_text())
    del old["steps"][0]["messages"]  # a file written before the field existed
    (tmp_path / "old.jsonl").write_text(json.dumps(old) + "\n")
    (back,) = read_jsonl(tmp_path / "old.jsonl")
    assert back.steps[0].messages is None and back.steps[0].prompt == "<|im_start|>offer?"


def test_trajectories_are_written_compressed_and_read_either_way(tmp_path):
    from agora.trajectory import TRAJECTORIES

    scenario = resolve_scenario(
        {"name": "ww", "world": {"id": "werewolf"}, "episodes": 20, "agents": {"*": {"policy": "rule_based"}}}
    )
    episodes = run_scenario(scenario, track=False).episodes
    write_jsonl(episodes, tmp_path / TRAJECTORIES)
    write_jsonl(episodes, tmp_path / "plain.jsonl")
    assert (tmp_path / TRAJECTORIES).read_bytes()[:2] == b"\x1f\x8b"  # gzip
    zipped, plain = (tmp_path / TRAJECTORIES).stat().st_size, (tmp_path / "plain.jsonl").stat().st_size
    assert zipped * 10 < plain  # scripted werewolf: about 28x smaller
    assert list(read_jsonl(tmp_path / TRAJECTORIES)) == list(read_jsonl(tmp_path / "plain.jsonl")) == episodes
    (tmp_path / "renamed.jsonl").write_bytes((tmp_path / TRAJECTORIES).read_bytes())  # read by content, not name
    assert list(read_jsonl(tmp_path / "renamed.jsonl")) == episodes


def test_a_store_that_refuses_the_traces_keeps_them_and_the_other_artifacts(store, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(agora.traces, "write_traces", refuse)
    with pytest.raises(StoreError, match="traces"):
        run_scenario(negotiation("refused", {"policy": "greedy"}, episodes=3), tracking_uri=store)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("refused").experiment_id])
    assert run.info.status == "FAILED"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"transcripts.json", "trajectories.jsonl.gz", "replays"} <= logged
    (kept,) = tmp_path.glob("agora-unsaved-*/traces.jsonl")
    saved = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [t["info"]["tags"]["agora.episode"] for t in saved] == ["0", "1", "2"]
    trajectories = client.download_artifacts(run.info.run_id, "trajectories.jsonl.gz", str(tmp_path / "dl"))
    steps = [len(e.steps) for e in read_jsonl(trajectories)]
    assert [len(t["data"]["spans"]) for t in saved] == [1 + n for n in steps]


def test_a_store_that_refuses_the_replays_keeps_them_locally_and_logs_the_rest(store, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(13, "Permission denied")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(MlflowClient, "log_artifacts", refuse)  # the replays' one call
    with pytest.raises(StoreError, match="replays"):
        run_scenario(negotiation("replays-refused", {"policy": "greedy"}, episodes=2), tracking_uri=store)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("replays-refused").experiment_id])
    assert {"transcripts.json", "trajectories.jsonl.gz"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len(run_traces(client, run.info.run_id)) == 2
    pages = sorted(p.name for p in tmp_path.glob("agora-unsaved-*/replays/*.html"))
    assert pages == [replay_name(0), replay_name(1)]


def test_mlflow_sends_no_telemetry_from_agora():
    """Everything runs offline: importing Agora's tracking turns MLflow's usage telemetry off (MLflow
    would otherwise start a telemetry client at import). The child process has no CI or pytest
    variables, which MLflow also reads as 'do not send'."""
    import os
    import subprocess
    import sys

    quiet = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    probe = (
        "import agora.tracking; from mlflow.telemetry.client import get_telemetry_client; "
        "print(get_telemetry_client() is None)"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
