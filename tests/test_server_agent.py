"""The `server` agent and judge against a real llama.cpp server (the `llama_server` fixture serves the
embedded GGUF) and, for the fault cases a real server will not produce on demand, a stub (tests/servers.py)."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.scripted.negotiation import FairNegotiator
from agents.server import ServerConfig, ServerPolicy
from agora import grammar as g
from agora.cli import app
from agora.errors import AgoraError, ScenarioError
from agora.policy import ActRequest
from agora.rollout import Rollout
from agora.run import build_policies, run_scenario
from agora.scenario import resolve_scenario
from agora.serving import ServerUnavailable, grammar_fields, reply_text
from agora.trajectory import read_jsonl
from tests.servers import MODEL, LlamaServer, StubServer, free_port
from worlds.negotiation import raw_env

KEY_ENV = "AGORA_TEST_SERVER_KEY"


def server_agent(server, **keys) -> dict:
    return {
        "policy": "server",
        "base_url": server.url,
        "api_key_env": KEY_ENV,
        "api": "llama.cpp",
        "model": MODEL,
        "logprobs": False,  # llama-cpp-python computes them in Python: x4 slower per token
        "retries": 1,
        "backoff": 0.01,
        **keys,
    }


def negotiation(server, tmp_path, **agent) -> dict:
    return {
        "name": "server-vs-fair",
        # one reply of alice's per episode: a message line, cut to fit max_tokens, then the action
        "world": {"id": "negotiation", "max_turns": 1, "first_mover": "first"},
        "agents": {
            "alice": server_agent(server, **{"max_tokens": 20, "demonstrations": False, **agent}),
            "bob": {"policy": "fair"},
        },
        "episodes": 2,
        "concurrency": 2,
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }


# --- grammar forms (no server) ------------------------------------------------------------------------


def test_each_server_kind_gets_the_grammar_in_its_own_form():
    grammar = g.Grammar(g.seq("VOTE ", g.one_of(["ann", "bob"])))
    assert grammar_fields("llama.cpp", grammar) == {"grammar": grammar.gbnf()}
    assert grammar_fields("vllm", grammar) == {"structured_outputs": {"regex": grammar.regex()}}
    assert grammar_fields("sglang", grammar) == {"regex": grammar.regex()}
    schema = grammar_fields("openai", grammar)["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["reply"] and schema["properties"]["reply"]["pattern"] == f"^(?:{grammar.regex()})$"
    assert reply_text("openai", '{"reply": "VOTE ann"}', True) == "VOTE ann"
    assert reply_text("openai", "not json", True) == "not json"
    assert reply_text("vllm", '{"reply": "x"}', True) == '{"reply": "x"}'
    huge = g.Grammar(g.one_of([f"word{i:06d}" for i in range(15_000)]))  # a regex over 100,000 characters
    assert grammar_fields("vllm", huge) == {"structured_outputs": {"grammar": huge.gbnf()}}
    assert grammar_fields("sglang", huge) == {"ebnf": huge.gbnf()}


def test_a_key_pasted_as_api_key_env_or_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ValueError) as info:
        ServerConfig(api_key_env="sk-live-123secret")
    assert "NAME of an environment variable" in str(info.value) and "123secret" not in str(info.value).split("input")[0]
    with pytest.raises(ValueError, match="must not hold credentials"):
        ServerConfig(base_url="http://user:pw@host:8000/v1")


# --- a real server (llama.cpp) ---------------------------------------------------------------------


def test_negotiation_with_a_server_agent_under_the_world_grammar(llama_server, tmp_path):
    spec = negotiation(llama_server, tmp_path)
    spec["tracking"] = {"enabled": False}  # a tracked run: the next test
    result = run_scenario(resolve_scenario(spec))
    alice = [s for e in result.episodes for s in e.steps if s.agent == "alice"]
    # the world's grammar (an optional message line, cut to fit max_tokens: GBNF bounds it in characters,
    # then the action), whether or not the model chose to write a message
    assert len(alice) == 2 and not any(s.fallback or s.failed_attempts for s in alice)
    for step in alice:
        lines = step.text.split("\n")
        assert lines[-1].startswith("ACTION: ") and len(lines) <= 2, step.text
        assert len(lines) == 1 or lines[0].startswith("MESSAGE: "), step.text
    assert result.summary["parse/failure_rate/alice"] == 0.0 and result.summary["parse/unanswered"] == 0
    assert result.summary["perf/generated_tokens"] > 0


def test_token_logprobs_are_recorded_when_the_server_returns_them(llama_server):
    keys = {k: v for k, v in server_agent(llama_server, logprobs=True, max_tokens=3).items() if k != "policy"}
    policy = ServerPolicy(ServerConfig(**keys), seed=0)
    grammar = g.Grammar(g.one_of(["yes", "no"]))
    requests = [
        ActRequest(0, "a", None, [{"role": "user", "content": "Yes or no?"}], seed=s, grammar=grammar) for s in (1, 2)
    ]
    for response in policy.act(requests):
        assert response.text in ("yes", "no") and response.error is None
        assert response.logprobs and all(lp <= 0.0 for lp in response.logprobs)
        assert response.completion_ids is None and response.grammar is None


def test_deferral_with_a_server_expert(llama_server):
    scenario = resolve_scenario(
        {
            "name": "server-expert",
            "world": {"id": "deferral", "team_size": 2, "rounds": 2, "kinds": {"arithmetic": 1.0}, "difficulties": [1]},
            "agents": {"agent_*": {"policy": "always_defer"}, "expert": server_agent(llama_server, max_tokens=8)},
            "episodes": 1,
            "tracking": {"enabled": False},
        }
    )
    result = run_scenario(scenario)
    expert = [s for e in result.episodes for s in e.steps if s.agent == "expert"]
    assert expert and all(s.text and not s.fallback for s in expert)
    assert result.summary["parse/unanswered"] == 0


def test_a_server_down_at_start_is_one_clear_error_and_nothing_in_mlflow(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        "name: down\nworld: {id: negotiation}\nagents:\n"
        f"  alice: {{policy: server, base_url: 'http://127.0.0.1:{free_port()}/v1'}}\n"
        "  bob: {policy: fair}\nepisodes: 2\n"
    )
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["run", "s.yaml"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not reachable" in result.output and "vllm serve" in result.output
    assert time.perf_counter() - start < 10
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()  # the store was never created


def test_a_server_killed_mid_run_fails_the_run_keeps_finished_episodes_and_records_no_key(tmp_path, capfd, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)  # anything the store refuses is saved here, not in the repository

    server = LlamaServer.start()
    os.environ["AGORA_TEST_KILLED_KEY"] = server.key
    try:
        spec = negotiation(server, tmp_path, api_key_env="AGORA_TEST_KILLED_KEY", max_tokens=4)
        spec.update(episodes=3, concurrency=1)

        def kill(episode):
            server.stop()  # after the first finished episode

        with pytest.raises(AgoraError) as info:
            run_scenario(resolve_scenario(spec), on_episode=kill)
    finally:
        server.stop()
        os.environ.pop("AGORA_TEST_KILLED_KEY")
    message = str(info.value)
    assert isinstance(info.value, AgoraError) and "stopped answering" in message and "Connection refused" in message
    assert "marked FAILED" in message and server.key not in message
    client = mlflow.MlflowClient(spec["tracking"]["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("server-vs-fair").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics["perf/episodes"] == 1
    local = client.download_artifacts(run.info.run_id, "trajectories.jsonl.gz", str(tmp_path / "download"))
    assert len(list(read_jsonl(local))) == 1
    out, err = capfd.readouterr()
    # every file as stored, compressed ones (trajectories.jsonl.gz) opened: a key must not hide in them
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    recorded = [out, err, message] + [
        (gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()).decode("latin-1") for p in files
    ]
    assert sum("ACTION:" in r for r in recorded) >= 2  # the store and the artifacts hold the transcripts
    assert not any(server.key in r for r in recorded)  # but never the API key


def test_the_server_judge_reads_top_logprobs_in_both_orders(llama_server):
    from agora.trajectory import Episode, Step
    from trainers.judges import Candidate, JudgeConfig, ServerJudge, build_judge, judge_metrics

    def candidate(text: str) -> Candidate:
        step = Step(agent="alice", turn=0, prompt="", text=text, action=None)
        return Candidate(Episode(index=0, seed=0, policies={}, steps=[step]), ("alice",))

    keys = {k: v for k, v in server_agent(llama_server).items() if k not in ("policy", "logprobs")}
    judge = build_judge(JudgeConfig(id="server", **keys))
    assert isinstance(judge, ServerJudge)
    a, b = candidate("ACTION: PROPOSE book=1 hat=1"), candidate("I walk away, goodbye.")
    p_ab, p_ba = judge.compare([(a, b), (b, a)])
    assert 0.0 <= p_ab <= 1.0 and p_ab + p_ba == pytest.approx(1.0)
    assert 0.0 < p_ab < 1.0  # read from the top log-probs of both labels, not a 1/0 verdict
    assert judge.model_calls == 2 and judge_metrics(judge)["train/judge_model_calls_total"] == 2.0
    judge.compare([(a, b)])
    assert judge.model_calls == 2  # cached, in either order
    with pytest.raises(ValueError, match="device is not a key of the server judge"):
        JudgeConfig(id="server", device="cpu")


# --- fault cases (a stub server) ----------------------------------------------------------------------


def stub_policy(stub: StubServer, **keys) -> ServerPolicy:
    config = {"base_url": stub.url, "retries": 2, "backoff": 0.01, "timeout_s": 0.3, **keys}
    return ServerPolicy(ServerConfig(**config), seed=0)


def ask(policy: ServerPolicy, n: int = 2):
    return policy.act([ActRequest(i, "alice", None, [{"role": "user", "content": "hi"}], seed=i) for i in range(n)])


@pytest.mark.parametrize(
    "mode, delay, error",
    [("slow", 1.0, "no reply within timeout_s=0.3"), ("500", 0.0, "HTTP 500"), ("garbage", 0.0, "unreadable reply")],
)
def test_slow_failing_and_garbage_replies_become_counted_fallbacks_after_the_retries(mode, delay, error):
    with StubServer(mode, delay=delay) as stub:
        responses = ask(stub_policy(stub))
        assert all(r.error and error in r.error for r in responses)
        assert len(stub.bodies) == 2 * 3  # each request tried 1 + retries times
        fair = FairNegotiator(FairNegotiator.Config(), seed=0)
        seats = {"alice": stub_policy(stub, retries=0), "bob": fair}
        rollout = Rollout(raw_env, seats, {"alice": "server", "bob": "fair"}, seed=0)
        (episode,) = rollout.run(1)  # no crash: the seeded fallback action, counted unanswered
        assert rollout.counters["alice"].unanswered == rollout.counters["alice"].fallbacks > 0


def test_transient_errors_are_retried_then_answered():
    with StubServer("reply", reply="ACTION: ACCEPT", fail_first=2) as stub:
        (response,) = ask(stub_policy(stub), 1)
    assert response.text == "ACTION: ACCEPT" and response.error is None and len(stub.bodies) == 3


def test_one_calls_requests_go_out_concurrently_but_bounded():
    with StubServer("slow", delay=0.2) as stub:
        responses = ask(stub_policy(stub, max_concurrency=3, timeout_s=5), 9)
    assert all(r.error is None for r in responses) and stub.most_in_flight == 3  # three at a time, no more
    assert [b["seed"] for b in stub.bodies] != [stub.bodies[0]["seed"]] * 9  # each request's own seed


def test_the_api_key_is_sent_but_never_in_an_error_message(monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-never-show-4242")
    with StubServer("echo") as stub:
        responses = ask(stub_policy(stub, api_key_env="STUB_KEY", retries=0), 1)
    assert "Bearer ***" in responses[0].error and "sk-never-show-4242" not in responses[0].error


def test_a_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ServerUnavailable, match="NO_SUCH_KEY_VAR"):
        ServerPolicy(ServerConfig(base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR"), seed=0)


def test_a_model_the_server_does_not_serve_is_refused_at_start():
    with StubServer() as stub, pytest.raises(ServerUnavailable, match="does not serve model 'gpt-x'; it serves: stub"):
        ServerPolicy(ServerConfig(base_url=stub.url, model="gpt-x"), seed=0)


# --- campaigns -----------------------------------------------------------------------------------------


def test_a_campaign_refuses_a_server_agent_as_its_learner(tmp_path):
    from agora.campaign import load_campaign

    (tmp_path / "c.yaml").write_text(
        "name: c\nworld: {id: negotiation}\n"
        "learner: {seats: [alice], policy: server, base_url: 'http://127.0.0.1:8000/v1'}\n"
        "opponents: {bob: {policy: fair}}\ntrainer: {id: grpo}\niterations: 1\n"
    )
    with pytest.raises(ScenarioError, match="the learner cannot be a server agent") as info:
        load_campaign(tmp_path / "c.yaml")
    assert info.value.path == "learner.policy"


def test_economy_workers_and_planner_played_by_a_server(llama_server):
    agent = server_agent(llama_server, max_tokens=6, demonstrations=False)
    scenario = resolve_scenario(
        {
            "name": "server-economy",
            "world": {"id": "economy", "num_workers": 1, "steps": 1, "tax_period": 1, "warmup": 0, "brackets": "three"},
            "agents": {"worker_*": agent, "planner": agent},
            "episodes": 1,
            "tracking": {"enabled": False},
        }
    )
    policies = build_policies(scenario)  # no end-of-run report: the seats are what is checked
    rollout = Rollout(scenario.make_world, policies, {"worker_0": "server", "planner": "server"}, max_retries=0)
    (episode,) = rollout.run(1)
    assert {s.agent for s in episode.steps} == {"planner", "worker_0"}  # both asked the server
    assert all(c.unanswered == 0 for c in rollout.counters.values()) and policies["planner"].stats.generated_tokens
