"""Populations, win records, matchmaking and league figures (solvers/population.py, campaigns/league.py,
campaigns/figures.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from campaigns.figures import league_figure, payoff_heatmap, payoff_table
from solvers.population import (
    PolicyVersion,
    Population,
    WinRecord,
    matchmaking_distribution,
    pfsp_weights,
    sample_opponents,
)


def league() -> Population:
    return Population(
        [
            PolicyVersion("fair", "scripted", {"policy": "fair"}),
            PolicyVersion("learner@0", "lora", {"adapter": "a0"}, opponents=["fair"], iteration=0),
            PolicyVersion(
                "learner@1", "lora", {"adapter": "a1"}, parent="learner@0", opponents=["fair", "learner@0"], iteration=1
            ),
            PolicyVersion(
                "learner@2", "lora", {"adapter": "a2"}, parent="learner@1", opponents=["learner@1"], iteration=2
            ),
        ]
    )


def test_population_lineage_and_round_trip():
    pop = league()
    assert pop.names == ["fair", "learner@0", "learner@1", "learner@2"]
    assert pop.latest().name == "learner@2" and pop.latest("scripted").name == "fair"
    assert pop.ancestors("learner@2") == ["learner@1", "learner@0"] and pop.ancestors("fair") == []
    again = Population.from_dict(json.loads(json.dumps(pop.to_dict())))
    assert again.to_dict() == pop.to_dict()
    with pytest.raises(ValueError, match="already holds"):
        pop.add(PolicyVersion("fair", "scripted"))
    with pytest.raises(ValueError, match="not in the population"):
        pop.add(PolicyVersion("x", "lora", parent="ghost"))


def test_win_record_is_symmetric_and_counts_draws_half():
    r = WinRecord()
    r.record("a", "b", 1.0)
    r.record("b", "a", 0.5)
    r.record("a", "b", 0.0)
    assert r.games("a", "b") == r.games("b", "a") == 3
    assert r.win_rate("a", "b") == pytest.approx(1.5 / 3) and r.win_rate("b", "a") == pytest.approx(1.5 / 3)
    assert r.win_rate("a", "c") == 0.5 and r.win_rate("a", "c", prior=0.0) == 0.0
    r.record("a", "c", 1.0)
    W = r.matrix(["a", "b", "c"])
    np.testing.assert_allclose(W, [[0.5, 0.5, 1.0], [0.5, 0.5, 0.5], [0.0, 0.5, 0.5]])
    assert WinRecord.from_dict(json.loads(json.dumps(r.to_dict()))).matrix(["a", "b", "c"]).tolist() == W.tolist()
    assert r.pairs() == [("a", "b"), ("a", "c")]


def test_pfsp_weights_by_hand():
    # x = P(learner beats o): hard (1 - x)^2 -> 0.25, 0.01, 1.0 over 1.26; variance x(1-x) -> 0.25, 0.09, 0
    np.testing.assert_allclose(pfsp_weights(np.array([0.5, 0.9, 0.0])), np.array([0.25, 0.01, 1.0]) / 1.26)
    np.testing.assert_allclose(pfsp_weights(np.array([0.5, 0.9, 0.0]), "variance"), np.array([0.25, 0.09, 0.0]) / 0.34)
    np.testing.assert_allclose(pfsp_weights(np.array([1.0, 1.0])), [0.5, 0.5])  # beats everyone: uniform


def test_matchmaking_rules():
    names = ["fair", "learner@0", "learner@1"]
    records = WinRecord()
    for _ in range(3):
        records.record("learner@2", "fair", 1.0)  # always beats fair
    records.record("learner@2", "learner@0", 0.5)
    np.testing.assert_allclose(matchmaking_distribution("latest", names), [0, 0, 1])
    np.testing.assert_allclose(matchmaking_distribution("uniform", names), [1 / 3] * 3)
    # pfsp hard: x = 1, 0.5, 0.5 (never met) -> weights 0, 0.25, 0.25
    np.testing.assert_allclose(
        matchmaking_distribution("pfsp", names, learner="learner@2", records=records), [0, 0.5, 0.5]
    )
    # the exponent and the weighting reach pfsp: x = 1, 0.5, 0.75 -> p = 2: (0, 1/4, 1/16) -> (0, 0.8, 0.2);
    # p = 5: (0, 1/32, 1/1024) -> (0, 32/33, 1/33); variance x(1 - x): (0, 1/4, 3/16) -> (0, 4/7, 3/7)
    records.record("learner@2", "learner@1", 1.0)
    records.record("learner@2", "learner@1", 0.5)
    pfsp = {"learner": "learner@2", "records": records}
    np.testing.assert_allclose(matchmaking_distribution("pfsp", names, **pfsp), [0, 0.8, 0.2])
    np.testing.assert_allclose(matchmaking_distribution("pfsp", names, p=5.0, **pfsp), [0, 32 / 33, 1 / 33])
    np.testing.assert_allclose(matchmaking_distribution("pfsp", names, weighting="variance", **pfsp), [0, 4 / 7, 3 / 7])
    np.testing.assert_allclose(
        matchmaking_distribution("psro", names, meta_strategy={"fair": 0.2, "learner@1": 0.6}), [0.25, 0, 0.75]
    )
    with pytest.raises(ValueError, match="meta-strategy"):
        matchmaking_distribution("psro", names)
    with pytest.raises(ValueError, match="unknown matchmaking rule"):
        matchmaking_distribution("elo", names)
    draws = sample_opponents(
        np.random.default_rng(0), names, 4000, rule="psro", meta_strategy={"fair": 0.2, "learner@1": 0.6}
    )
    assert "learner@0" not in draws and abs(draws.count("learner@1") / 4000 - 0.75) < 0.03
    assert (
        draws[:20]
        == sample_opponents(
            np.random.default_rng(0), names, 4000, rule="psro", meta_strategy={"fair": 0.2, "learner@1": 0.6}
        )[:20]
    )


def test_league_graph_edges_and_figures():
    pop = league()
    records = WinRecord()
    records.record("learner@2", "learner@1", 1.0)
    records.record("learner@2", "learner@1", 1.0)
    records.record("learner@2", "learner@1", 0.0)  # 2/3
    records.record("fair", "learner@0", 1.0)
    records.record("learner@0", "learner@1", 0.5)  # even: no edge
    g = pop.graph(records)
    edges = {(a, b, d["relation"]) for a, b, d in g.edges(data=True)}
    assert ("learner@1", "learner@2", "trained_from") in edges and ("fair", "learner@1", "trained_against") in edges
    assert ("learner@2", "learner@1", "beats") in edges and ("fair", "learner@0", "beats") in edges
    assert not any(r == "beats" and {a, b} == {"learner@0", "learner@1"} for a, b, r in edges)
    beats = [d for a, b, d in g.edges(data=True) if d["relation"] == "beats" and a == "learner@2"]
    assert beats[0]["win_rate"] == pytest.approx(2 / 3) and beats[0]["games"] == 3
    assert league_figure(g).axes and payoff_heatmap(np.eye(3), pop.names[:3], pop.names[:3]).axes
    assert payoff_table(np.array([[0.5, 1.0], [0.0, 0.5]]), ["a", "b"], ["a", "b"]) == {
        "row": ["a", "b"],
        "a": [0.5, 0.0],
        "b": [1.0, 0.5],
    }


def test_side_score_and_league_bookkeeping():
    from campaigns.league import League, Match, side_score

    # werewolf: +1 winners, -1 losers; a draw is 0 all round
    assert side_score({"w0": 1.0, "w1": 1.0, "v0": -1.0}, ["w0", "w1"], ["v0"]) == 1.0
    assert (
        side_score({"a": 3.0, "b": 3.0}, ["a"], ["b"]) == 0.5 and side_score({"a": 2.0, "b": 5.0}, ["a"], ["b"]) == 0.0
    )
    league = League([PolicyVersion("fair", "scripted", {"policy": "fair"})], max_snapshots=2)
    league.snapshot("learner-0", 0, {"w": 0})
    league.play(Match(0, "train", "learner", "fair", 1.0))
    league.play(Match(0, "train", "learner-0", "learner", 0.5))  # swapped sides: the opponent is on side a
    league.play(Match(0, "train", "learner", "fair", 0.0))
    league.play(Match(1, "payoff", "fair", "fair", 0.0))  # a version against itself: logged, not rated
    assert league.records.win_rate("learner", "fair") == 0.5 and league.records.games("fair", "fair") == 0
    assert set(league.ratings.ratings) == {"learner", "fair", "learner-0"}
    v1 = league.snapshot("learner-1", 1, {"w": 1})
    assert (v1.parent, v1.opponents, league.since_snapshot) == ("learner-0", ["fair", "learner-0"], [])
    league.snapshot("learner-2", 2, {"w": 2})
    assert league.candidates() == ["fair", "learner-1", "learner-2"] and list(league.adapters) == [
        "learner-1",
        "learner-2",
    ]
    assert league.population.names == [
        "fair",
        "learner-0",
        "learner-1",
        "learner-2",
    ]  # learner-0 left play, not the lineage
    again = League.from_dict(json.loads(json.dumps(league.to_dict())), league.adapters)
    assert again.to_dict() == league.to_dict() and again.ratings.mu("learner") == league.ratings.mu("learner")


def test_version_router_sends_each_episode_to_its_version():
    from agora.policy import ActRequest, ActResponse
    from campaigns.league import VersionPool, VersionRouter

    calls, loaded = [], []

    class Echo:
        expensive, uses_text = False, False

        def __init__(self, name):
            self.name = name

        def act(self, requests):
            calls.append((self.name, [r.episode for r in requests]))
            return [ActResponse(f"{self.name}:{r.episode}") for r in requests]

    pool = VersionPool(Echo, loaded.append)
    router = VersionRouter(pool, {0: "x", 1: "y", 2: "x", 3: "y"})
    out = router.act([ActRequest(e, "bob", None, []) for e in (3, 0, 2, 1)])
    assert [r.text for r in out] == ["y:3", "x:0", "x:2", "y:1"]  # answers in the requests' order
    assert calls == [("y", [3, 1]), ("x", [0, 2])] and loaded == [
        "y",
        "x",
    ]  # one call per version, weights swapped in first
    assert router.expensive is False and router.uses_text is False
