"""Optional world hooks the engine honours: passive actions, episode info, end-of-run reports."""

from __future__ import annotations

from agents.scripted.matrix import MixedStrategy
from agora.rollout import Rollout
from agora.run import log_report
from agora.world import Report
from worlds.matrix import MatrixConfig, parallel_env


class SlowPlayer1(parallel_env):
    """player_1 decides only on even rounds and otherwise repeats action 0 without being asked."""

    def passive_action(self, agent):
        return 0 if agent == "player_1" and len(self.history) % 2 == 1 else None

    def episode_info(self):
        return {"rounds_played": len(self.history), "history": list(self.history)}

    def run_report(self, episodes):
        return Report(
            metrics={"eval/info_rounds": sum(e.info["rounds_played"] for e in episodes) / len(episodes)},
            series={"round/p0_action": [(i, float(a)) for i, (a, _) in enumerate(episodes[0].info["history"])]},
            texts={"report/edges.txt": "a b\n"},
        )


def test_passive_agents_are_not_asked_and_info_is_recorded():
    seats = {
        "player_0": MixedStrategy(MixedStrategy.Config(), seed=1),
        "player_1": MixedStrategy(MixedStrategy.Config(), seed=2),
    }
    rollout = Rollout(
        lambda: SlowPlayer1(MatrixConfig(rounds=5)), seats, {"player_0": "mixed", "player_1": "mixed"}, concurrency=2
    )
    episodes = rollout.run(2)
    for episode in episodes:
        acted = [s.agent for s in episode.steps]
        assert acted.count("player_0") == 5 and acted.count("player_1") == 3  # rounds 0, 2, 4
        assert episode.info["rounds_played"] == 5
        assert [b for _, b in episode.info["history"]][1::2] == [0, 0]


def test_report_is_logged_as_metrics_series_and_artifacts(tracking_uri):
    from agora.tracking import Tracker
    from mlflow import MlflowClient

    tracker = Tracker(tracking_uri, "hooks", "hooks")
    report = Report(
        series={"round/x": [(0, 1.0), (1, 2.0)]}, tables={"t.json": {"a": [1, 2]}}, texts={"e/edges.txt": "a b\n"}
    )
    log_report(tracker, report)
    tracker.end()
    client = MlflowClient(tracking_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "round/x")] == [(0, 1.0), (1, 2.0)]
    assert {a.path for a in client.list_artifacts(tracker.run_id)} >= {"t.json", "e"}


def test_spaces_are_cached_per_world_and_finished_worlds_are_freed():
    import gc
    import weakref

    from worlds.negotiation import raw_env

    world = raw_env()
    assert world.observation_space("alice") is world.observation_space("alice")
    assert world.action_space("bob") is world.action_space("bob")
    assert raw_env().action_space("bob") is not world.action_space("bob")
    ref = weakref.ref(world)
    del world
    gc.collect()
    assert ref() is None  # no class-level cache keeps it alive


import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402


@pytest.mark.parametrize(
    "scenario", ["negotiation_scripted", "werewolf_scripted", "economy_scripted", "deferral_scripted"]
)
def test_summary_table_labels_the_worlds_metrics(scenario):
    """Every label a world declares names a metric of its runs, and `agora run` shows it."""
    from agora.cli import app
    from agora.run import run_scenario
    from agora.scenario import load_scenario
    from tests.conftest import SCENARIOS

    labels = load_scenario(SCENARIOS / f"{scenario}.yaml").world_entry.load().metric_labels
    # the economy's file plays 2 x 300 steps of 100 workers: a shorter episode has the same metrics
    shorter = ["world.steps=60", "world.num_workers=20"] if scenario == "economy_scripted" else []
    overrides = ["episodes=6", *shorter]
    summary = run_scenario(load_scenario(SCENARIOS / f"{scenario}.yaml", overrides), track=False).summary
    assert labels and {f"eval/{key}" for key in labels} <= set(summary)
    result = CliRunner().invoke(app, ["run", str(SCENARIOS / f"{scenario}.yaml"), "--no-track", *overrides])
    assert result.exit_code == 0, result.output
    assert all(label in result.output for label in labels.values())
