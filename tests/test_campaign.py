"""Campaign files, the `agora train` loop, checkpoints and SIGKILL-and-resume into the same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from agora.campaign import load_campaign
from agora.cli import app
from agora.errors import ScenarioError
from agora.trajectory import Episode
from campaigns.evaluation import evaluation_metrics, mean_ci, wilson_interval
from campaigns.train import TrainCampaign
from mlflow import MlflowClient
from tests.conftest import ROOT, SCENARIOS

runner = CliRunner()

TINY = """\
name: tiny-campaign
world: {{id: negotiation, max_turns: 4}}
learner:
  seats: [alice]
  model: {model}
  temperature: 1.0
  max_new_tokens: 4
  lora: {{r: 4, alpha: 8}}
opponents:
  bob: {{policy: random}}          # varied returns within a group
trainer: {{id: grpo, learning_rate: 0.01, micro_batch_size: 16}}
iterations: {iterations}
groups_per_iteration: 2
group_size: 3
evaluation: {{every: 2, episodes: 3, opponents: {{fair: {{policy: fair}}, random: {{policy: random}}}}}}
checkpoint: {{every: 1, dir: {dir}}}
"""


def write(tmp_path, text: str, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_campaign(tmp_path, model, iterations=2):
    return write(tmp_path, TINY.format(model=model, iterations=iterations, dir=tmp_path / "ck"))


@pytest.mark.parametrize(
    "change, path, message",
    [
        (
            ("trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16}", "trainer: {id: grpo, epsilonn: 0.3}"),
            "trainer.epsilonn",
            "did you mean 'epsilon'",
        ),
        (
            ("trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16}", "trainer: {id: grop}"),
            "trainer.id",
            "did you mean 'grpo'",
        ),
        (
            ("trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16}", "trainer: {id: grpo, beta: -1}"),
            "trainer.beta",
            "greater than or equal to 0",
        ),
        (("seats: [alice]", "seats: [carol]"), "learner.seats.0", "no seat matches 'carol'"),
        (("temperature: 1.0", "temperature: hot"), "learner.temperature", "valid number"),
        (("lora: {r: 4, alpha: 8}", "lora: {rank: 4}"), "learner.lora.rank", "unknown key"),
        (("bob: {policy: random}", "bob: {policy: gready}"), "opponents.bob.policy", "did you mean 'greedy'"),
        (("bob: {policy: random}", "carol: {policy: fair}"), "opponents.carol", "no seat matches"),
        (
            ("fair: {policy: fair}", "fair: {policy: fair, target_ratio: 2}"),
            "evaluation.opponents.fair.target_ratio",
            "less than or equal to 1",
        ),
        (("group_size: 3", "group_size: 1"), "group_size", "no advantage signal"),
        (("iterations: 2", "iterations: 0"), "iterations", "greater than or equal to 1"),
    ],
)
def test_campaign_mistakes_are_explained(tmp_path, change, path, message):
    text = TINY.format(model="smollm2-135m-instruct", iterations=2, dir=tmp_path / "ck")
    assert change[0] in text
    with pytest.raises(ScenarioError) as info:
        load_campaign(write(tmp_path, text.replace(change[0], change[1])))
    assert info.value.path == path and message in str(info.value)


def test_cli_train_rejects_a_bad_file_without_a_traceback(tmp_path, tracking_uri):
    bad = write(tmp_path, "name: x\nworld: {id: negotiation}\nlearner: {seats: [alice]}\ntrainer: {id: grpo}\n")
    result = runner.invoke(app, ["train", str(bad)])
    assert (
        result.exit_code == 2
        and "iterations: required key is missing" in result.output
        and "Traceback" not in result.output
    )
    assert not (tmp_path / "mlruns").exists()


def test_train_and_run_explain_an_unreadable_file_alike(tmp_path, tracking_uri):
    """A file that is not UTF-8, or of the other kind, gets one clear message and exit 2 from every command."""
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    for command in ("train", "run", "validate"):
        result = runner.invoke(app, [command, str(latin1)])
        assert result.exit_code == 2 and "cannot read" in result.output, (command, result.output)
        assert "UTF-8" in result.output and "Traceback" not in result.output
    campaign = SCENARIOS / "campaigns" / "negotiation_grpo.yaml"
    result = runner.invoke(app, ["run", str(campaign)])
    assert result.exit_code == 2 and "this is a campaign file" in result.output and "agora train" in result.output
    result = runner.invoke(app, ["train", str(SCENARIOS / "negotiation.yaml")])
    assert result.exit_code == 2 and "this is a scenario file" in result.output and "agora run" in result.output
    assert not (tmp_path / "mlruns").exists()


def test_shipped_campaigns_validate():
    files = sorted((SCENARIOS / "campaigns").glob("*.yaml"))
    assert files
    for file in files:
        campaign = load_campaign(file)
        assert campaign.describe() and campaign.spec.iterations >= 1
        result = runner.invoke(app, ["validate", str(file)])
        assert result.exit_code == 0 and "ok" in result.output, result.output


def test_unknown_campaign_kind_is_explained(tmp_path):
    text = TINY.format(model="smollm2-135m-instruct", iterations=2, dir=tmp_path / "ck")
    with pytest.raises(ScenarioError) as info:
        load_campaign(write(tmp_path, "kind: trian\n" + text))
    assert info.value.path == "kind" and "did you mean 'train'" in str(info.value) and info.value.file
    assert isinstance(load_campaign(write(tmp_path, "kind: train\n" + text)), TrainCampaign)
    result = runner.invoke(app, ["trainers"])
    assert result.exit_code == 0 and "campaign kinds" in result.output and "train" in result.output


def test_evaluation_metrics_and_intervals():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert mean_ci([1.0, 3.0]) == pytest.approx((2.0, 2.0 - 1.96, 2.0 + 1.96))  # s = sqrt(2), n = 2
    episodes = [
        Episode(0, 1, {}, returns={"alice": 6.0, "bob": 4.0}, metrics={"agreement": 1.0}),
        Episode(1, 2, {}, returns={"alice": 0.0, "bob": 0.0}, metrics={"agreement": 0.0}),
        Episode(2, 3, {}, returns={"alice": 3.0, "bob": 7.0}, metrics={"agreement": 1.0}),
    ]
    m = evaluation_metrics("fair", episodes, ["alice"])
    assert m["eval/fair/score"] == 3.0 and m["eval/fair/win_rate"] == pytest.approx(1.5 / 3)  # a tie counts half
    assert m["eval/fair/agreement"] == pytest.approx(2 / 3)


def test_campaign_trains_lora_logs_metrics_and_checkpoints(tmp_path, tracking_uri, tiny_model_dir):
    campaign = load_campaign(tiny_campaign(tmp_path, tiny_model_dir, iterations=2))
    result = campaign.run()
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer.epsilon"] == "0.2"
    for key in (
        "train/loss",
        "train/kl",
        "train/clip_fraction",
        "train/entropy",
        "train/zero_variance_groups",
        "train/reward/learner",
        "train/reward/random",
        "perf/generate_tokens_per_s",
        "perf/train_tokens_per_s",
    ):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 1], key
    for key in ("eval/fair/score", "eval/fair/win_rate", "eval/random/score", "eval/random/agreement"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 2], key
    # the 95% intervals are columns of the evaluation table, not one metric (and chart) per bound
    assert not [k for k in run.data.metrics if k.endswith(("_ci_low", "_ci_high"))]
    table = json.loads(open(client.download_artifacts(result.run_id, "evaluation.json", str(tmp_path))).read())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [(r["step"], r["opponent"]) for r in rows] == [(0, "fair"), (0, "random"), (2, "fair"), (2, "random")]
    for r in rows:
        logged = result.evaluations[r["step"]]
        for column in ("score", "score_ci_low", "score_ci_high", "win_rate", "win_rate_ci_low", "agreement"):
            assert r[column] == pytest.approx(logged[f"eval/{r['opponent']}/{column}"]), column
    assert client.get_metric_history(result.run_id, "train/samples")[0].value > 0
    # LoRA B starts at zero; after two updates the saved adapter has moved
    adapter = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "checkpoints/iter-000001")}
    assert {
        "checkpoints/iter-000001/adapter",
        "checkpoints/iter-000001/trainer.pt",
        "checkpoints/iter-000001/rng.pt",
        "checkpoints/iter-000001/state.json",
    } <= artifacts
    assert "figures/learning_curve.png" in {a.path for a in client.list_artifacts(result.run_id, "figures")}
    # what the trained agent says: the final evaluation's episodes per opponent as traces and replays
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=result.run_id, max_results=100)
    groups = sorted((t.info.tags["agora.group"], int(t.info.tags["agora.episode"])) for t in traces)
    assert groups == [(f"eval-{o}", i) for o in ("fair", "random") for i in range(3)]
    chat = [s for t in traces for s in t.data.spans if s.attributes.get("agora.agent") == "alice"]
    assert chat and all(s.span_type == "CHAT_MODEL" and s.attributes["agora.policy"] == "learner" for s in chat)
    replays = {a.path for a in client.list_artifacts(result.run_id, "replays/eval-fair")}
    assert replays == {f"replays/eval-fair/episode-{i:04d}.html" for i in range(3)}
    # a second start without --resume refuses to overwrite
    with pytest.raises(Exception, match="--resume"):
        campaign.run()


def test_sigkilled_campaign_resumes_into_the_same_run(tmp_path, tracking_uri, tiny_model_dir):
    file = tiny_campaign(tmp_path, tiny_model_dir, iterations=4)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "agora.cli", "train", str(file)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = tmp_path / "ck" / "iter-000001" / "state.json"
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    client = MlflowClient(tracking_uri)
    run_id = client.search_runs([client.get_experiment_by_name("tiny-campaign").experiment_id])[0].info.run_id
    assert client.get_run(run_id).info.status == "RUNNING"  # what a killed process leaves behind

    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("tiny-campaign").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the same run, no second one
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert (
        run.data.tags["agora.resumes"] == "1" and "left RUNNING by a killed process" in run.data.tags["agora.resume.1"]
    )
    for key in ("train/iteration", "train/loss", "train/reward/learner"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 1, 2, 3], key  # none lost or twice
    assert sorted(m.step for m in client.get_metric_history(run_id, "eval/fair/score")) == [0, 2, 4]
    assert [m.value for m in client.get_metric_history(run_id, "train/iteration")] == sorted(
        m.value for m in client.get_metric_history(run_id, "train/iteration")
    )
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} >= {
        f"checkpoints/iter-00000{i}" for i in range(4)
    }


def test_resume_restores_weights_optimizer_and_rng(tmp_path, tracking_uri, tiny_model_dir):
    """Stopping after 2 iterations and resuming for 1 more equals 3 iterations in one go."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = load_campaign(tiny_campaign(tmp_path / "a", tiny_model_dir, iterations=3)).run(track=False)
    file = tiny_campaign(tmp_path / "b", tiny_model_dir, iterations=3)
    first = load_campaign(file, {"iterations": 2})
    first.run()
    resumed = load_campaign(file).run(resume=True)
    a = load_file(str(straight.checkpoint / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.model
def test_short_negotiation_grpo_campaign_changes_lora_and_logs(tmp_path, tracking_uri):
    """The shipped campaign, 2 iterations at tiny sizes (a random opponent guarantees varied returns)."""
    campaign = load_campaign(
        SCENARIOS / "campaigns" / "negotiation_grpo.yaml",
        {
            "iterations": 2,
            "groups_per_iteration": 1,
            "group_size": 3,
            "evaluation.episodes": 2,
            "learner.max_new_tokens": 6,
            "opponents": {"bob": {"policy": "random"}},
            "checkpoint.dir": str(tmp_path / "ck"),
        },
    )
    result = campaign.run()
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    for key in ("train/loss", "train/reward/learner", "train/entropy", "perf/train_tokens_per_s"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 1], key
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/fair/score")] == [0, 2]
    adapter = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())


def test_self_play_against_frozen_snapshots(tmp_path, tracking_uri, tiny_model_dir):
    text = (
        TINY.format(model=tiny_model_dir, iterations=2, dir=tmp_path / "ck")
        .replace(
            "opponents:\n  bob: {policy: random}          # varied returns within a group\n",
            "self_play: {seats: [bob], snapshot_every: 1}\n",
        )
        .replace("trainer: {id: grpo,", "trainer: {id: grpo, statistics: batch,")
    )  # seeds differ in return: a signal even when every text fails
    campaign = load_campaign(write(tmp_path, text))
    assert campaign.league_seats == ["bob"] and campaign.eval_seats == ["alice"]
    # self_play is this league: the newest snapshot plays, the only one in play
    spec = campaign.league_spec
    assert spec.matchmaking == "latest" and spec.snapshot_every == 1 and spec.max_snapshots == 1
    result = campaign.run()
    first, second = tmp_path / "ck" / "iter-000000", tmp_path / "ck" / "iter-000001"

    league = json.loads((second / "state.json").read_text())["league"]
    assert [v["name"] for v in league["population"]] == ["learner-0", "learner-1", "learner-2"]
    assert {(g["iteration"], g["b"]) for g in league["games"] if g["kind"] == "train"} == {
        (0, "learner-0"),
        (1, "learner-1"),
    }
    # the snapshot bob played in iteration 1 is the learner as it was after iteration 0
    learner_0 = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    snapshot_1 = load_file(str(first / "league" / "learner-1.safetensors"))
    learner_1 = load_file(str(second / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(learner_0[k], snapshot_1[k]) for k in learner_0)
    assert any(not torch.equal(learner_1[k], snapshot_1[k]) for k in learner_1)
    assert sorted(p.name for p in (second / "league").iterdir()) == ["learner-2.safetensors"]
    client = MlflowClient(tracking_uri)
    assert [m.step for m in client.get_metric_history(result.run_id, "train/reward/league")] == [0, 1]
    table = json.loads(open(client.download_artifacts(result.run_id, "league/leaderboard.json", str(tmp_path))).read())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    drawn = {(r["step"], r["version"]): r["drawn"] for r in rows if r["drawn"] is not None}
    assert drawn == {(1, "learner-0"): 1.0, (2, "learner-1"): 1.0}  # iteration i drew the newest snapshot


def test_self_play_seats_are_checked(tmp_path):
    text = TINY.format(model="smollm2-135m-instruct", iterations=2, dir=tmp_path / "ck")
    with pytest.raises(ScenarioError, match="both the learner's and the snapshot's"):
        load_campaign(
            write(
                tmp_path,
                text.replace(
                    "opponents:\n  bob: {policy: random}",
                    "self_play: {seats: ['*']}\nopponents:\n  bob: {policy: random}",
                ),
            )
        )
    with pytest.raises(ScenarioError, match="every seat in evaluation"):
        load_campaign(write(tmp_path, text.replace("evaluation: {every: 2,", "evaluation: {seats: ['*'], every: 2,")))


def test_an_untracked_campaign_can_be_resumed(tmp_path, tiny_model_dir):
    file = tiny_campaign(tmp_path, tiny_model_dir, iterations=2)
    load_campaign(file, {"iterations": 1}).run(track=False)
    result = load_campaign(file).run(resume=True, track=False)
    assert result.run_id is None and result.iterations_done == 2 and sorted(result.evaluations) == [0, 2]


def test_arena_campaigns_decode_each_groups_anchor_greedily(tmp_path, tiny_model_dir):
    """group_reward: arena -> the learner's turns in episode 0 of each group are greedy; other rollouts sample."""

    text = (
        tiny_campaign(tmp_path, tiny_model_dir)
        .read_text()
        .replace(
            "trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16}",
            "trainer: {id: grpo, learning_rate: 0.01, micro_batch_size: 16, group_reward: arena, judge: {id: outcome}}",
        )
    )
    runner_ = load_campaign(write(tmp_path, text, "arena.yaml")).start(track=False)
    learner = runner_.seats["alice"]
    seen = []
    act = learner.act
    learner.act = lambda requests: (seen.extend((r.episode, r.agent, r.greedy) for r in requests), act(requests))[1]
    runner_.training_episodes(0)
    assert {(e, a) for e, a, greedy in seen if greedy} == {(e, "alice") for e, _, _ in seen if e % 3 == 0}
    assert any(not greedy for _, _, greedy in seen) and all(a == "alice" for _, a, _ in seen)

    (tmp_path / "plain").mkdir()
    plain = load_campaign(tiny_campaign(tmp_path / "plain", tiny_model_dir)).start(track=False)
    assert not plain.trainer.greedy_anchor and runner_.trainer.greedy_anchor
