"""Train campaigns on Ray rollout workers (campaigns/workers.py): the same episodes and metrics as a local campaign,
weight versions on every sample, stale batches refused, and a SIGKILLed driver resumed on the workers.

The tests share one local Ray instance (started once); the campaigns join it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from agora.campaign import load_campaign
from agora.cli import app
from agora.errors import ScenarioError
from agora.trajectory import Episode
from campaigns.workers import StaleBatchError, check_versions
from mlflow import MlflowClient
from tests.conftest import ROOT

ray = pytest.importorskip("ray")

CAMPAIGN = """\
name: ray-train
world: {{id: negotiation, max_turns: 2}}
learner: {{seats: [alice], model: {model}, temperature: 1.0, max_new_tokens: 4, lora: {{r: 4, alpha: 8}}}}
{opponents}
trainer: {{id: grpo, learning_rate: 0.05, micro_batch_size: 16}}
iterations: {iterations}
groups_per_iteration: 2
group_size: 3
concurrency: 2
evaluation: {{every: 0, episodes: 1, opponents: {{fair: {{policy: fair}}}}}}
checkpoint: {{every: 1, dir: {dir}}}
"""
FIXED = "opponents: {bob: {policy: random}}"
LEAGUE = """\
league:
  seats: [bob]
  matchmaking: uniform
  members: {random: {policy: random}}
  swap_sides: true
  payoff: {episodes_per_cell: 1, bootstrap: 0}
"""


def campaign_file(folder, model, *, opponents=FIXED, iterations=2, execution=""):
    folder.mkdir(parents=True, exist_ok=True)
    text = CAMPAIGN.format(model=model, opponents=opponents, iterations=iterations, dir=folder / "ck") + execution
    (folder / "c.yaml").write_text(text)
    return folder / "c.yaml"


def played(file, **overrides):
    """The campaign's result and the episodes of each iteration's update (what the trainer was given)."""
    runner = load_campaign(file, overrides).start(track=False)
    batches: list[list[Episode]] = []
    update = runner.trainer.update
    runner.trainer.update = lambda episodes, seats: (batches.append(episodes), update(episodes, seats))[1]
    return runner.run(), batches


def test_a_batch_older_than_the_staleness_bound_is_refused():
    batch = [Episode(0, 1, {}, version=3), Episode(1, 1, {}, version=5)]
    check_versions(batch, 5, max_staleness=2)  # 2 updates behind: allowed
    stale = "version 3, 2 updates behind the learner \\(version 5\\); max_staleness is 1"
    with pytest.raises(StaleBatchError, match=stale):
        check_versions(batch, 5, max_staleness=1)
    with pytest.raises(StaleBatchError, match="no weight version"):
        check_versions([Episode(0, 1, {})], 0, max_staleness=10)


@pytest.mark.model
def test_two_workers_train_against_a_league_as_the_local_campaign(tmp_path, tiny_model_dir, ray_address):
    """Each iteration's episodes (texts, actions, rewards; logprobs to float rounding) and so every metric but
    the timings are those of the local campaign, the league's draws and side swaps included; every episode
    records the weights it was drawn with. (Fixed opponents: the SIGKILL test below.)"""
    local, local_batches = played(campaign_file(tmp_path / "local", tiny_model_dir, opponents=LEAGUE))
    ray_file = campaign_file(tmp_path / "ray", tiny_model_dir, opponents=LEAGUE)
    execution = {"execution.backend": "ray", "execution.workers": 2, "execution.episodes_per_task": 2}
    spread, batches = played(ray_file, **execution, **{"execution.address": ray_address})
    assert [[e.version for e in b] for b in batches] == [[0] * 6, [1] * 6]
    for batch, local_batch in zip(batches, local_batches, strict=True):
        assert [s.text for e in batch for s in e.steps] == [s.text for e in local_batch for s in e.steps]
        for episode in local_batch:
            for step in episode.steps:
                step.logprobs = step.logprobs and pytest.approx(step.logprobs, abs=1e-4)
        assert batch == local_batch
    for i, metrics in spread.history.items():
        expected = {k: pytest.approx(v, abs=1e-4) for k, v in local.history[i].items() if not k.startswith("perf/")}
        assert {k: v for k, v in metrics.items() if not k.startswith("perf/")} == expected
        assert metrics["perf/workers"] == 2 and metrics["perf/worker_restarts"] == 0
    assert workers_gone()


@pytest.mark.model
def test_the_train_loop_refuses_a_stale_batch(tmp_path, tiny_model_dir, monkeypatch):
    """A batch drawn one update behind the learner is refused under max_staleness 0, before the update."""
    from campaigns.train import TrainRunner

    play = TrainRunner.training_episodes

    def one_behind(self, iteration, *args):
        episodes = play(self, iteration, *args)
        for episode in episodes:
            episode.version -= iteration  # iteration 1's batch: drawn with version 0
        return episodes

    monkeypatch.setattr(TrainRunner, "training_episodes", one_behind)
    file = campaign_file(tmp_path, tiny_model_dir)
    with pytest.raises(StaleBatchError, match="version 0, 1 updates behind the learner \\(version 1\\)"):
        load_campaign(file).run(track=False)
    assert sorted(p.name for p in (tmp_path / "ck").glob("iter-*")) == ["iter-000000"]  # no update from it


def test_terminal_opponents_cannot_sit_on_workers(tmp_path):
    file = campaign_file(tmp_path, "smollm2-135m-instruct", opponents="opponents: {bob: {policy: human}}")
    with pytest.raises(ScenarioError, match="reads this terminal") as error:
        load_campaign(file, {"execution.backend": "ray"})
    assert error.value.path == "opponents.bob"


def workers_gone(seconds: float = 30.0) -> bool:
    """Whether the campaign's workers are gone (within `seconds`): every CPU of the module's Ray instance free."""
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    return ray.available_resources().get("CPU", 0) == 4


@pytest.mark.model
def test_a_sigkilled_driver_resumes_on_the_workers_as_a_local_campaign_runs(
    tmp_path, tracking_uri, tiny_model_dir, ray_address
):
    """The driver is SIGKILLed after its first checkpoint; `--resume` sends the restored weights to new workers
    before its first rollout: the same run ends with the metrics of an uninterrupted local campaign."""
    straight, _ = played(campaign_file(tmp_path / "local", tiny_model_dir, iterations=2))
    execution = f"execution: {{backend: ray, workers: 1, episodes_per_task: 2, address: '{ray_address}'}}\n"
    file = campaign_file(tmp_path / "ray", tiny_model_dir, iterations=2, execution=execution)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "agora.cli", "train", str(file)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = tmp_path / "ray" / "ck" / "iter-000000" / "state.json"
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = CliRunner().invoke(app, ["train", str(file), "--resume"])  # in this process: no second start-up
    assert done.exit_code == 0, done.output[-2000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ray-train").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["agora.resumes"] == "1"
    for key in ("train/loss", "train/reward/learner", "train/kl"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [s for s, _ in history] == [0, 1], key  # none lost or logged twice
        assert [v for _, v in history] == [pytest.approx(straight.history[i][key], abs=1e-4) for i in range(2)], key
    assert workers_gone()  # the killed driver's workers too
