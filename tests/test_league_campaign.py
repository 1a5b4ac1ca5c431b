"""League campaigns (`league:` in a train campaign): schema, matchmaking, snapshots and lineage, ratings, payoff
artifacts, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agora.campaign import load_campaign
from agora.errors import ScenarioError
from campaigns.league import League
from mlflow import MlflowClient
from solvers.population import WinRecord
from solvers.ratings import OpenSkillRatings

LEAGUE = """\
name: tiny-league
world: {{id: negotiation, max_turns: 4}}
learner:
  seats: [alice]
  model: {model}
  temperature: 1.0
  max_new_tokens: 4
  lora: {{r: 4, alpha: 8}}
league:
  seats: [bob]
  matchmaking: {rule}
  members: {{fair: {{policy: fair}}, random: {{policy: random}}}}
  max_snapshots: 2
  swap_sides: true
  payoff: {{every: 1, episodes_per_cell: 1, bootstrap: 20}}
trainer: {{id: grpo, learning_rate: 0.01, micro_batch_size: 16, statistics: batch}}
iterations: {iterations}
groups_per_iteration: 2
group_size: 2
max_retries: 0
evaluation: {{every: 0, episodes: 2, opponents: {{fair: {{policy: fair}}}}}}
checkpoint: {{every: 1, dir: {dir}}}
"""


def league_file(tmp_path, model="smollm2-135m-instruct", *, rule="uniform", iterations=2, name="c.yaml"):
    path = tmp_path / name
    path.write_text(LEAGUE.format(model=model, rule=rule, iterations=iterations, dir=tmp_path / "ck"))
    return path


def logged_exploitability(client, run_id: str) -> float:
    return client.get_metric_history(run_id, "league/exploitability")[-1].value


def state(folder) -> dict:
    return json.loads((folder / "state.json").read_text())


@pytest.mark.parametrize(
    "change, path, message",
    [
        (("matchmaking: uniform", "matchmaking: elo"), "league.matchmaking", "'latest', 'uniform', 'pfsp' or 'psro'"),
        (("seats: [bob]", "seats: [alice]"), "league.seats", "both the learner's and the league's"),
        (("seats: [bob]", "seats: [carol]"), "league.seats.0", "no seat matches 'carol'"),
        (("league:\n", "self_play: {seats: [bob]}\nleague:\n"), "league", "not both"),
        (("random: {policy: random}", "learner-3: {policy: random}"), "league.members.learner-3", "reserved"),
        (("random: {policy: random}", "random: {policy: rule_based}"), "league.members.random.policy", "rule_based"),
        (
            ("random: {policy: random}", "random: {policy: fair, target_ratio: 2}"),
            "league.members.random.target_ratio",
            "less than or equal to 1",
        ),
        (
            ("every: 1, episodes_per_cell: 1", "every: 1, episodes_per_cell: 0"),
            "league.payoff.episodes_per_cell",
            "greater than or equal to 1",
        ),
        (
            ("evaluation: {every: 0, episodes: 2, opponents: {fair: {policy: fair}}}", "evaluation: {every: 0}"),
            "evaluation.opponents",
            "name the fixed opponents",
        ),
    ],
)
def test_league_mistakes_are_explained(tmp_path, change, path, message):
    text = league_file(tmp_path).read_text()
    assert change[0] in text
    (tmp_path / "bad.yaml").write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(ScenarioError) as info:
        load_campaign(tmp_path / "bad.yaml")
    assert info.value.path == path and message in str(info.value), str(info.value)


def test_matchmaking_is_seeded_and_follows_the_rule(tmp_path, tiny_model_dir):
    """pfsp never draws an opponent the learner always beats; psro draws from the opponents' side of the
    meta-strategy; latest draws the newest snapshot; the same seed draws the same opponents."""
    from campaigns.league import Match

    def runner(rule: str, folder: str, **league):
        campaign = load_campaign(
            league_file(tmp_path, tiny_model_dir, rule=rule),
            {"checkpoint.dir": str(tmp_path / folder), "groups_per_iteration": 40}
            | {f"league.{k}": v for k, v in league.items()},
        )
        return campaign.start(track=False)

    pfsp = runner("pfsp", "a")
    assert pfsp.opponents.league.candidates() == ["fair", "random", "learner-0"]
    for _ in range(5):
        pfsp.opponents.league.play(Match(0, "train", League.LEARNER, "random", 1.0))  # the learner always beats random
    pfsp.opponents.league.play(
        Match(0, "train", "fair", League.LEARNER, 1.0)
    )  # and lost to fair on the other side, once
    candidates, probs, drawn = pfsp.opponents.draw(0)
    # hard pfsp, p = 2: x = (0, 1, 1/2) -> (1 - x)^2 = (1, 0, 1/4) -> (0.8, 0, 0.2)
    np.testing.assert_allclose(probs, [0.8, 0.0, 0.2])
    assert "random" not in drawn and len(drawn) == 40 and drawn.count("fair") > drawn.count("learner-0")
    assert pfsp.opponents.draw(0)[2] == drawn and pfsp.opponents.draw(1)[2] != drawn  # seeded by (seed, iteration)
    again = runner("pfsp", "b")
    for game in pfsp.opponents.league.games:
        again.opponents.league.play(game)
    assert again.opponents.draw(0)[2] == drawn
    steep = runner("pfsp", "e", pfsp_exponent=5.0)  # the campaign's exponent reaches matchmaking
    for game in pfsp.opponents.league.games:
        steep.opponents.league.play(game)
    # p = 5: (1 - x)^5 = (1, 0, 1/32) -> (32/33, 0, 1/33)
    np.testing.assert_allclose(steep.opponents.draw(0)[1], [32 / 33, 0.0, 1 / 33])

    psro = runner("psro", "c")
    assert set(psro.opponents.draw(0)[2]) == {"fair", "random", "learner-0"}  # no payoff matrix yet: uniform
    psro.opponents.league.meta = {"a": {"random": 1.0}, "b": {"fair": 0.25, "learner-0": 0.75}}
    _, probs, drawn = psro.opponents.draw(0)  # the learner plays side a: opponents come from side b's mixture
    np.testing.assert_allclose(probs, [0.25, 0.0, 0.75])
    assert psro.opponents.draw(1)[2] == ["random"] * 40  # swap_sides: odd iterations the league plays side a

    latest = runner("latest", "d")
    latest.opponents.snapshot(1)
    assert latest.opponents.draw(0)[2] == ["learner-1"] * 40


def test_league_campaign_snapshots_lineage_ratings_and_artifacts(tmp_path, tracking_uri, tiny_model_dir):
    from solvers.meta import exploitability
    from solvers.psro import meta_strategy

    runner = load_campaign(league_file(tmp_path, tiny_model_dir, iterations=2)).start()
    result = runner.run()
    first, last = tmp_path / "ck" / "iter-000000", tmp_path / "ck" / "iter-000001"
    league = state(last)["league"]
    games = league["games"]
    train = [g for g in games if g["kind"] == "train"]
    assert (
        len(train) == 2 * 2 * 2
        and [g["a"] for g in train[:4]] == ["learner"] * 4
        and [g["b"] for g in train[4:]] == ["learner"] * 4
    )  # swap_sides

    # lineage: each snapshot's parent is the previous one, its opponents those the learner met since
    versions = {v["name"]: v for v in league["population"]}
    assert list(versions) == ["fair", "random", "learner-0", "learner-1", "learner-2"]
    met = [
        list(dict.fromkeys(g["b"] if g["a"] == "learner" else g["a"] for g in train if g["iteration"] == i))
        for i in (0, 1)
    ]
    assert (versions["learner-0"]["parent"], versions["learner-0"]["opponents"]) == (None, [])
    assert (versions["learner-1"]["parent"], versions["learner-1"]["opponents"]) == ("learner-0", met[0])
    assert (versions["learner-2"]["parent"], versions["learner-2"]["opponents"]) == ("learner-1", met[1])
    # max_snapshots = 2: learner-0 left play (weights dropped); learner-1 holds the learner's weights after iteration 0
    assert sorted(p.name for p in (last / "league").iterdir()) == ["learner-1.safetensors", "learner-2.safetensors"]
    snapshot, learner_0 = (
        load_file(str(last / "league" / "learner-1.safetensors")),
        load_file(str(first / "adapter" / "adapter_model.safetensors")),
    )
    assert snapshot.keys() == learner_0.keys() and all(torch.equal(snapshot[k], learner_0[k]) for k in snapshot)

    # ratings and records are exactly the recorded games, replayed
    ratings, records = OpenSkillRatings(), WinRecord()
    for g in games:
        if g["a"] != g["b"]:
            ratings.rate(
                [[g["a"]], [g["b"]]], ranks=[0, 1] if g["score_a"] == 1 else [1, 0] if g["score_a"] == 0 else [0, 0]
            )
            records.record(g["a"], g["b"], g["score_a"])
    assert league["ratings"] == {n: [ratings.mu(n), ratings.sigma(n)] for n in ratings.ratings}
    assert league["records"] == records.to_dict()
    assert len([g for g in games if g["kind"] == "payoff"]) == 16 + 16  # 4 versions in play, one game per cell, twice

    client = MlflowClient(tracking_uri)
    run_id = result.run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    paths = {
        a.path
        for folder in ("league", "league/payoff", "league/graph", "league/bradley_terry")
        for a in client.list_artifacts(run_id, folder)
    }
    assert {
        "league/games.json",
        "league/ratings.json",
        "league/payoff/step-0001.png",
        "league/payoff/step-0002.json",
        "league/graph/step-0002.png",
        "league/bradley_terry/step-0002.json",
    } <= paths
    assert [m.step for m in client.get_metric_history(run_id, "league/learner_rating")] == [1, 2]
    assert client.get_metric_history(run_id, "league/learner_rating")[-1].value == pytest.approx(ratings.mu("learner"))
    # every version's rating: one leaderboard table (a row per rated version and step) and one figure, no
    # metric per version: the run's metrics are a few dozen whatever the league's size
    assert {"league/leaderboard.json", "league/ratings.png"} <= paths
    keys = set(client.get_run(run_id).data.metrics)
    versions = {"fair", "random", "learner", "learner-0", "learner-1", "learner-2"}
    league_keys = [k for k in keys if not k.startswith("eval/")]  # eval/fair/*: the held-out opponent, not a version
    assert len(keys) <= 64 and not [k for k in league_keys if set(k.split("/")) & versions - {"learner"}], keys
    assert not [k for k in keys if k.startswith(("league/rating/", "league/p/", "league/drawn/", "league/meta/"))]
    table = json.loads(open(client.download_artifacts(run_id, "league/leaderboard.json", str(tmp_path))).read())
    assert table["columns"] == [
        "step",
        "version",
        "in_play",
        "mu",
        "sigma",
        "ci95_low",
        "ci95_high",
        "conservative",
        "games",
        "mean_score",
        "matchmaking_p",
        "drawn",
        "meta_a",
        "meta_b",
    ]
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) and {r["step"] for r in rows} == {1, 2}
    final = [r for r in rows if r["step"] == 2]
    assert {r["version"] for r in final} == set(ratings.ratings)  # every rated version, once
    for r in final:  # the league's ratings and games, replayed above
        assert (r["mu"], r["sigma"]) == pytest.approx((ratings.mu(r["version"]), ratings.sigma(r["version"])))
        assert r["ci95_low"] == pytest.approx(r["mu"] - 1.96 * r["sigma"], abs=1e-3) and r["ci95_high"] > r["mu"]
        mine = [
            g["score_a"] if g["a"] == r["version"] else 1 - g["score_a"]
            for g in games
            if g["a"] != g["b"] and r["version"] in (g["a"], g["b"])
        ]
        assert r["games"] == len(mine) and r["mean_score"] == pytest.approx(sum(mine) / len(mine))
    assert [r["conservative"] for r in final] == sorted((r["conservative"] for r in final), reverse=True)
    # the run's description: the final leaderboard, as the table's last step
    note = client.get_run(run_id).data.tags["mlflow.note.content"]
    assert note.startswith("**train** campaign · 2 of 2 iterations · stopped on budget")
    assert "**League leaderboard after 2 iterations**" in note and "league/leaderboard.json" in note
    for r in final:
        assert f"| {r['mu']:.2f} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}] | {r['conservative']:.2f} |" in note
    assert (
        f"Exploitability of the meta-strategy within the population: {logged_exploitability(client, run_id):.4f}"
        in note
    )
    step_2_meta = state(last)["league"]["meta"]
    assert {r["version"]: r["meta_a"] for r in final if r["in_play"]} == pytest.approx(step_2_meta["a"])
    drawn = {r["version"]: r["drawn"] for r in final if r["drawn"] is not None}  # iteration 1's draws
    assert sum(drawn.values()) == pytest.approx(1.0) and {v for v, d in drawn.items() if d > 0} == set(met[1])
    assert [m.step for m in client.get_metric_history(run_id, "league/win_rate/a")] == [0, 1]
    assert [m.value for m in client.get_metric_history(run_id, "league/learner_side")] == [0.0, 1.0]
    # the logged payoff table is the step's payoff games, and the logged exploitability is its meta-strategy's
    payoff = json.loads(open(client.download_artifacts(run_id, "league/payoff/step-0002.json", str(tmp_path))).read())
    names = payoff["columns"][1:]
    U = np.array([row[1:] for row in payoff["data"]])
    assert [row[0] for row in payoff["data"]] == names == ["fair", "random", "learner-1", "learner-2"]
    for g in [g for g in games if g["kind"] == "payoff" and g["iteration"] == 2]:
        assert U[names.index(g["a"]), names.index(g["b"])] == g["score_a"]
    x, y = meta_strategy(U, 1 - U, "nash")
    logged = client.get_metric_history(run_id, "league/exploitability")
    assert [m.step for m in logged] == [1, 2] and logged[-1].value == pytest.approx(exploitability(U, 1 - U, x, y))
    # the newest matrix and Bradley-Terry fit stay on the league's side for experiments (`Arm.collect`): the logged ones
    assert runner.opponents.payoff_matrix[0] == names and np.array_equal(runner.opponents.payoff_matrix[1], U)
    fit = json.loads(
        open(client.download_artifacts(run_id, "league/bradley_terry/step-0002.json", str(tmp_path))).read()
    )
    kept = runner.opponents.fit.as_dict()
    assert sorted(kept) == sorted(row[0] for row in fit["data"])
    assert all(kept[row[0]] == pytest.approx(tuple(row[1:4])) for row in fit["data"])


def test_resume_restores_the_league(tmp_path, tiny_model_dir):
    """Stopping after 1 iteration and resuming for 1 more gives the league (population, lineage, records,
    ratings, games, snapshot weights) of 2 iterations in one go."""
    small = {"league.members": {"fair": {"policy": "fair"}}, "league.max_snapshots": 1, "groups_per_iteration": 1}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = load_campaign(league_file(tmp_path / "a", tiny_model_dir), small).run(track=False)
    file = league_file(tmp_path / "b", tiny_model_dir)
    load_campaign(file, {**small, "iterations": 1}).run(track=False)
    runner = load_campaign(file, small).start(resume=True, track=False)
    assert runner.first_iteration == 1 and runner.opponents.league.population.names == [
        "fair",
        "learner-0",
        "learner-1",
    ]
    assert list(runner.opponents.league.adapters) == ["learner-1"]
    resumed = runner.run()
    a, b = state(straight.checkpoint)["league"], state(resumed.checkpoint)["league"]
    assert [v["name"] for v in b["population"]] == ["fair", "learner-0", "learner-1", "learner-2"]
    assert b == a
    wa, wb = (load_file(str(r.checkpoint / "league" / "learner-2.safetensors")) for r in (straight, resumed))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_members_are_resolved_as_written(tmp_path):
    campaign = load_campaign(league_file(tmp_path))
    members = {n: (s.entry.name, s.config.model_dump()) for n, s in campaign.league_members.items()}
    assert members == {
        "fair": ("fair", {"target_ratio": 0.5}),
        "random": ("random", {"accept_prob": 0.5, "walk_prob": 0.0}),
    }
