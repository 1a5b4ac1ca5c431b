"""League campaigns (`league:` in a train campaign): schema, matchmaking, snapshots and lineage, ratings, payoff artifacts, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from agora.campaign import CampaignRunner, load_campaign, run_campaign
from agora.errors import ScenarioError
from tests.conftest import SCENARIOS
from trainers.league import League, WinRecord
from trainers.ratings import OpenSkillRatings

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
  payoff: {{every: 1, episodes_per_cell: 2, bootstrap: 20}}
trainer: {{id: grpo, learning_rate: 0.01, micro_batch_size: 16, statistics: batch}}
iterations: {iterations}
groups_per_iteration: 4
group_size: 2
evaluation: {{every: 0, episodes: 2, opponents: {{fair: {{policy: fair}}}}}}
checkpoint: {{every: 1, dir: {dir}}}
"""


def league_file(tmp_path, model="smollm2-135m-instruct", *, rule="uniform", iterations=2, name="c.yaml"):
    path = tmp_path / name
    path.write_text(LEAGUE.format(model=model, rule=rule, iterations=iterations, dir=tmp_path / "ck"))
    return path


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
        (("random: {policy: random}", "random: {policy: fair, target_ratio: 2}"), "league.members.random.target_ratio", "less than or equal to 1"),
        (("every: 1, episodes_per_cell: 2", "every: 1, episodes_per_cell: 0"), "league.payoff.episodes_per_cell", "greater than or equal to 1"),
        (("evaluation: {every: 0, episodes: 2, opponents: {fair: {policy: fair}}}", "evaluation: {every: 0}"), "evaluation.opponents", "name the fixed opponents"),
    ],
)
def test_league_mistakes_are_explained(tmp_path, change, path, message):
    text = league_file(tmp_path).read_text()
    assert change[0] in text
    (tmp_path / "bad.yaml").write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(ScenarioError) as info:
        load_campaign(tmp_path / "bad.yaml")
    assert info.value.path == path and message in str(info.value), str(info.value)


def test_league_campaign_snapshots_lineage_ratings_and_artifacts(tmp_path, tracking_uri, tiny_model_dir):
    result = run_campaign(load_campaign(league_file(tmp_path, tiny_model_dir, iterations=2)))
    print(result.last_metrics)
