"""The PSRO campaign kind (campaigns/psro.py): schema, both oracles on rock-paper-scissors,
lineage, new-cells-only payoffs, MLflow records, checkpoint and resume."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from agents.scripted.matrix import MixedStrategy
from agora.campaign import load_campaign
from agora.cli import app
from agora.errors import AgoraError, ScenarioError
from agora.rollout import Rollout
from campaigns.psro import PSROCampaign, interior, meta_mixture_opponent, train_best_response
from mlflow import MlflowClient
from solvers.population import PolicyVersion
from tests.conftest import SCENARIOS
from worlds.matrix import parallel_env

FILE = SCENARIOS / "campaigns" / "rps_psro.yaml"
runner = CliRunner()


def campaign(tmp_path, **overrides) -> PSROCampaign:
    return load_campaign(FILE, {"checkpoint.dir": str(tmp_path / "ck"), **overrides})


def test_shipped_file_is_a_psro_campaign():
    resolved = load_campaign(FILE)
    assert isinstance(resolved, PSROCampaign)
    assert [v.name for v in resolved.initial] == ["player_0/rock", "player_1/rock"]
    assert resolved.initial[0].spec["probs"] == [1.0, 0.0, 0.0]
    result = runner.invoke(app, ["validate", str(FILE)])
    assert result.exit_code == 0 and "PSRO campaign" in result.output and "oracle train" in result.output


def test_exact_oracle_is_double_oracle_on_rps(tmp_path):
    result = campaign(tmp_path, **{"oracle.id": "exact", "threshold": 1e-6}).run(track=False)
    # (rock, rock): each gains 1 by paper -> NashConv 2; Nash of {rock, paper} is paper, beaten by scissors -> 2; then
    # uniform
    assert [h["pop/nash_conv"] for h in result.history.values()] == pytest.approx([2.0, 2.0, 0.0], abs=1e-9)
    assert result.stop_reason == "threshold" and result.last_metrics["pop/exploitability"] < 1e-6
    assert [v.name for v in result.outputs["population"]] == [
        "player_0/rock",
        "player_1/rock",
        "player_0/br0",
        "player_1/br0",
        "player_0/br1",
        "player_1/br1",
    ]
    assert result.outputs["population"]["player_0/br0"].spec["probs"] == [0.0, 1.0, 0.0]  # paper answers rock
    assert result.outputs["population"]["player_0/br1"].spec["probs"] == [0.0, 0.0, 1.0]  # scissors answers paper
    for seat in ("player_0", "player_1"):
        np.testing.assert_allclose(result.outputs["mixtures"][seat], [1 / 3] * 3, atol=1e-8)
    # only new cells are played: 1, then 2x2 - 1, then 3x3 - 4
    assert [h["pop/cells_played"] for h in result.history.values()] == [1, 3, 5]


def test_train_oracle_reaches_the_uniform_mixture(tmp_path):
    result = campaign(tmp_path).run(track=False)
    assert result.stop_reason == "threshold"
    assert result.last_metrics["pop/exploitability"] < 0.05 and result.history[0][
        "pop/exploitability"
    ] == pytest.approx(1.0)
    for seat in ("player_0", "player_1"):
        np.testing.assert_allclose(result.outputs["mixtures"][seat], [1 / 3] * 3, atol=0.05)
    # lineage: the first best response was trained against the opponent's rock with weight 1, and is paper
    br0 = result.outputs["population"]["player_0/br0"]
    assert (
        br0.kind == "tabular"
        and br0.opponents == ["player_1/rock"]
        and br0.spec["opponent_weights"] == {"player_1/rock": pytest.approx(1.0)}
    )
    assert (
        br0.spec["probs"][1] > 0.95
        and min(br0.spec["probs"]) > 0
        and sum(br0.spec["probs"]) == pytest.approx(1.0, abs=1e-9)
    )
    br1 = result.outputs["population"]["player_0/br1"]
    assert (
        set(br1.opponents) <= {"player_1/rock", "player_1/br0"} and br1.spec["probs"][2] > 0.95
    )  # scissors answers paper
    assert result.history[0]["oracle/player_0/br_gap"] < 0.05 and result.history[0]["oracle/player_0/return"] > 0.9
    again = campaign(tmp_path / "again").run(track=False)
    assert again.outputs["population"].to_dict() == result.outputs["population"].to_dict()  # seeded


def test_uniform_meta_solver_stalls_with_the_exact_oracle(tmp_path):
    # uniform over {rock, paper} is (1/2, 1/2, 0): its best response, paper, is already there
    result = campaign(tmp_path, **{"oracle.id": "exact", "meta_solver": "uniform", "threshold": 1e-6}).run(track=False)
    assert result.stop_reason == "no new best response" and result.last_metrics["pop/exploitability"] == pytest.approx(
        0.5
    )


def test_budget_stops_and_resume_equals_a_straight_run(tmp_path, tracking_uri):
    straight = campaign(tmp_path / "a", **{"oracle.id": "exact", "threshold": 1e-6}).run(track=False)
    first = campaign(tmp_path / "b", **{"oracle.id": "exact", "threshold": 1e-6, "iterations": 2}).run()
    assert first.stop_reason == "budget" and len(first.outputs["population"]) == 4  # the last iteration only evaluates
    with pytest.raises(AgoraError, match="--resume"):
        campaign(tmp_path / "b", **{"oracle.id": "exact", "threshold": 1e-6}).start()
    resumed = campaign(tmp_path / "b", **{"oracle.id": "exact", "threshold": 1e-6}).run(resume=True)
    assert resumed.run_id == first.run_id and resumed.stop_reason == "threshold"
    assert resumed.outputs["population"].to_dict() == straight.outputs["population"].to_dict()
    assert [h["pop/nash_conv"] for h in resumed.history.values()] == pytest.approx(
        [h["pop/nash_conv"] for h in straight.history.values()]
    )
    client = MlflowClient(tracking_uri)
    assert [m.step for m in client.get_metric_history(first.run_id, "pop/exploitability")] == [0, 1, 2]  # none twice
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "oracle/player_0/br_value")) == [0, 1]
    # the σ table is rewritten whole: iteration 1, run again on resume, appears once
    table = json.loads(open(client.download_artifacts(first.run_id, "meta/strategies.json", str(tmp_path))).read())
    rows = [(row[0], row[2]) for row in table["data"]]  # (iteration, version)
    assert len(rows) == len(set(rows)) and {i for i, _ in rows} == set(resumed.history)
    assert client.get_run(first.run_id).data.tags["agora.resumes"] == "1"
    with pytest.raises(AgoraError, match="already finished"):  # said first, whatever else changed
        campaign(tmp_path / "b", **{"oracle.id": "exact", "seed": 5}).start(resume=True)
    campaign(tmp_path / "d", **{"oracle.id": "exact", "threshold": 1e-6, "iterations": 1}).run(track=False)
    with pytest.raises(AgoraError, match="another game"):  # a budget stop resumes, but only the same game
        campaign(tmp_path / "d", **{"oracle.id": "exact", "threshold": 1e-6, "seed": 5}).start(resume=True)
    with pytest.raises(AgoraError, match="nothing to resume"):
        campaign(tmp_path / "c").start(resume=True)


def test_cli_trains_a_psro_campaign_into_mlflow(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["train", str(FILE), "--tracking-uri", tracking_uri])
    assert out.exit_code == 0, out.output
    assert "iteration 0: exploitability 1.0000" in out.output and "stopped on threshold" in out.output
    assert re.search(r"iteration 0: .*, versions \d+[,\n]", out.output)  # a count prints as an integer
    assert list((tmp_path / "checkpoints" / "rps-psro").glob("iter-*/state.json"))
    again = runner.invoke(app, ["train", str(FILE), "--tracking-uri", tracking_uri])
    assert again.exit_code == 2 and "--resume" in again.output

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("psro").experiment_id])
    run_id = run.info.run_id
    assert (
        run.info.status == "FINISHED"
        and run.data.params["meta_solver"] == "nash"
        and run.data.tags["agora.stop_reason"] == "threshold"
    )
    steps = [m.step for m in client.get_metric_history(run_id, "pop/exploitability")]
    assert steps == list(range(len(steps))) and len(steps) >= 2
    for key in ("pop/nash_conv", "pop/size", "mixture/player_1/paper"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == steps, key
    for key in (
        "oracle/player_0/loss",
        "oracle/player_1/entropy",
        "oracle/player_0/br_gap",
        "oracle/player_0/regret_per_round",
    ):
        assert [m.step for m in client.get_metric_history(run_id, key)] == steps[:-1], key
    assert client.get_metric_history(run_id, "pop/size")[-1].value == 2 * len(steps)
    files = {a.path for a in client.list_artifacts(run_id, "figures")} | {
        a.path for a in client.list_artifacts(run_id, "payoffs")
    }
    assert {
        "figures/league.png",
        "figures/exploitability.png",
        "payoffs/heatmap_iter_000.png",
        f"payoffs/table_iter_{steps[-1]:03d}.json",
    } <= files
    population = json.loads(
        (tmp_path / client.download_artifacts(run_id, "population.json", str(tmp_path))).read_text()
    )
    assert [v["name"] for v in population][:2] == ["player_0/rock", "player_1/rock"] and len(population) == 2 * len(
        steps
    )
    # σ of every iteration: one table (a row per iteration and version) and one figure, no metric per version
    keys = set(run.data.metrics)
    assert not [k for k in keys if k.startswith("meta/")] and len(keys) <= 30, sorted(keys)
    assert "figures/meta_strategy.png" in files
    table = json.loads(open(client.download_artifacts(run_id, "meta/strategies.json", str(tmp_path))).read())
    assert table["columns"] == ["iteration", "seat", "version", "sigma", "strategy"]
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert sorted({r["iteration"] for r in rows}) == steps  # each iteration once
    for step in steps:  # its seats' σ: the versions then in the population, weights summing to 1
        for seat in ("player_0", "player_1"):
            sigma = [r["sigma"] for r in rows if r["iteration"] == step and r["seat"] == seat]
            assert len(sigma) == step + 1 and sum(sigma) == pytest.approx(1.0)
    first = {r["version"]: r for r in rows if r["iteration"] == 0}
    assert first["player_0/rock"]["sigma"] == 1.0 and first["player_0/rock"]["strategy"] == "1.000 / 0.000 / 0.000"
    # the description: the printed summary (a row per iteration) and the final metrics
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**psro** campaign · {len(steps)} of ") and "stopped on threshold" in note
    last = client.get_metric_history(run_id, "pop/exploitability")[-1].value
    assert f"| {steps[-1]} | {2 * len(steps)} | {last:.4f} |" in note
    final = [r for r in rows if r["iteration"] == steps[-1] and r["sigma"] > 0]  # the description's σ table
    assert "**Final meta-strategy**" in note and "`meta/strategies.json`" in note
    assert all(f"| {r['seat']} | `{r['version']}` | {r['sigma']:.3f} |" in note for r in final)


@pytest.mark.parametrize(
    "overrides, path, message",
    [
        ({"meta_solver": "best"}, "meta_solver", "'nash', 'uniform', 'replicator' or 'alpharank'"),
        ({"world.game": "chess"}, "world.game", "rock_paper_scissors"),
        ({"oracle.id": "rl"}, "oracle.id", "'exact' or 'train'"),
        ({"oracle.steps": 0}, "oracle.steps", "greater than or equal to 1"),
        ({"oracle.epochs": 3}, "oracle.epochs", "unknown key"),
        ({"world": {"id": "negotiation"}}, "world.id", "matrix world"),
        ({"world.game": "prisoners_dilemma"}, "meta_solver", "not constant-sum"),
        (
            {"population": {"*": {"tft": {"policy": "tit_for_tat"}}}},
            "population.*.tft.policy",
            "not a fixed mixed strategy",
        ),
        (
            {"population": {"*": {"r": {"policy": "mixed", "probs": [1, 0]}}}},
            "population.*.r.probs",
            "the game has 3 actions",
        ),
        (
            {"population": {"*": {"r": {"policy": "tabular", "probs": [1, 0, 0]}}}},
            "population.*.r.probs",
            "must be > 0",
        ),
        (
            {"population": {"player_0": {"r": {"policy": "mixed"}}}},
            "population",
            "seat 'player_1' has no initial strategy",
        ),
        ({"population": {"carol": {"r": {"policy": "mixed"}}}}, "population.carol", "no seat matches"),
    ],
)
def test_psro_campaign_mistakes_are_explained(tmp_path, overrides, path, message):
    with pytest.raises(ScenarioError) as info:
        load_campaign(FILE, overrides)
    assert info.value.path == path and message in str(info.value) and info.value.file == str(FILE)


def test_general_sum_games_run_with_alpharank(tmp_path):
    # prisoner's dilemma: defect dominates; from (cooperate, cooperate) both add defect, and alpha-Rank puts its mass
    # there
    overrides = {
        "world.game": "prisoners_dilemma",
        "meta_solver": "alpharank",
        "oracle.id": "exact",
        "threshold": 1e-6,
        "population": {"*": {"cooperate": {"policy": "mixed", "probs": [1, 0]}}},
    }
    result = campaign(tmp_path, **overrides).run(track=False)
    assert result.outputs["population"]["player_0/br0"].spec["probs"] == [0.0, 1.0]
    assert result.stop_reason == "threshold" and result.outputs["mixtures"]["player_0"][1] > 0.99


def test_meta_mixture_opponent_plays_the_version_drawn_for_each_episode():
    rock, paper = (MixedStrategy(MixedStrategy.Config(probs=p), seed=0) for p in ([1, 0, 0], [0, 1, 0]))
    drawn = ["rock", "paper", "paper", "rock"]
    seats = {
        "player_0": MixedStrategy(MixedStrategy.Config(), seed=1),
        "player_1": meta_mixture_opponent({"rock": rock, "paper": paper}, drawn),
    }
    episodes = Rollout(lambda: parallel_env(rounds=3), seats, {"player_0": "a", "player_1": "b"}, concurrency=4).run(4)
    for episode in episodes:
        plays = {s.action for s in episode.steps if s.agent == "player_1"}
        assert plays == {["rock", "paper"].index(drawn[episode.index])}


def test_train_oracle_learns_the_best_response_to_a_mixture(tmp_path):
    resolved = campaign(tmp_path, **{"oracle.steps": 25})
    # against 0.7 rock + 0.3 scissors, paper earns 0.7 - 0.3 = 0.4, rock 0.3, scissors -0.7
    opponents = [
        PolicyVersion("player_1/rock", "scripted", {"seat": "player_1", "policy": "mixed", "probs": [1, 0, 0]}),
        PolicyVersion("player_1/scissors", "scripted", {"seat": "player_1", "policy": "mixed", "probs": [0, 0, 1]}),
    ]
    probs, metrics = train_best_response(resolved, "player_0", opponents, np.array([0.7, 0.3]), seed=3)
    assert probs[1] > 0.9
    assert metrics["return"] > metrics["return_first"] and metrics["entropy"] < 0.5


def test_interior_keeps_strategies_away_from_zero_and_one():
    assert interior(np.array([1.0, 0.0, 0.0]), 1e-4) == pytest.approx([0.9998, 0.0001, 0.0001], abs=1e-6)
    kept = interior(np.array([0.5, 0.5 - 1e-9, 1e-9]), 1e-3)
    assert sum(kept) == pytest.approx(1.0, abs=1e-12) and min(kept) >= 1e-3 - 1e-6


def test_alpharank_of_a_single_profile():
    from solvers.meta import alpharank

    assert alpharank(np.array([[3.0]]), np.array([[3.0]])).tolist() == [
        [1.0]
    ]  # PSRO's first iteration: one version per seat


def test_a_psro_checkpoint_of_agora_0_1_resumes(tmp_path):
    """Agora 0.1 kept a PSRO campaign's state in one state.json in its checkpoint folder: --resume continues from it."""
    import shutil

    exact = {"oracle.id": "exact", "threshold": 1e-6}
    straight = campaign(tmp_path / "a", **exact).run(track=False)
    campaign(tmp_path / "b", **exact, iterations=2).run(track=False)
    folder = tmp_path / "b" / "ck"
    (sorted(folder.glob("iter-*"))[-1] / "state.json").rename(folder / "state.json")
    for old in folder.glob("iter-*"):
        shutil.rmtree(old)
    with pytest.raises(AgoraError, match="--resume"):
        campaign(tmp_path / "b", **exact).start(track=False)
    resumed = campaign(tmp_path / "b", **exact).run(resume=True, track=False)
    assert resumed.stop_reason == "threshold"
    assert resumed.outputs["population"].to_dict() == straight.outputs["population"].to_dict()
