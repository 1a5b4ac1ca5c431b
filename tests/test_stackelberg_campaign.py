"""The stackelberg campaign kind: its file's mistakes, its GRPO groups and return, the held-out welfare evaluation
against hand-computed values, a tiny-model run through `agora train`, and SIGKILL-and-resume into the same run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from agora.campaign import load_campaign
from agora.cli import app
from agora.errors import ScenarioError
from agora.trajectory import Episode
from campaigns.stackelberg_welfare import Baselines, comparison_table, population_table, welfare_metrics
from mlflow import MlflowClient
from tests.conftest import ROOT, train_killed_at
from worlds.economy.rules import (
    BRACKETS,
    REFERENCE_HOURS,
    US_FEDERAL_RATES,
    EconomyConfig,
    fixed_schedule_welfare,
    saez_rates,
)
from worlds.economy.stackelberg import stackelberg_optimum

runner = CliRunner()

TINY = """\
kind: stackelberg
name: tiny-stackelberg
world: {{num_workers: 5, steps: 3, tax_period: 1, warmup: 1, brackets: three}}
learner: {{model: {model}, temperature: 1.0, max_new_tokens: 12, demonstrations: false, lora: {{r: 4, alpha: 8}}}}
workers: {{policy: best_response}}
trainer: {{id: grpo, learning_rate: 0.01, micro_batch_size: 16}}
iterations: {iterations}
groups_per_iteration: 2
group_size: 2
evaluation: {{populations: 2, every: 0}}
checkpoint: {{every: 1, dir: {dir}}}
"""


def campaign_file(tmp_path, model="smollm2-135m-instruct", iterations=2, name="c.yaml"):
    path = tmp_path / name
    path.write_text(TINY.format(model=model, iterations=iterations, dir=tmp_path / "ck"))
    return path


@pytest.mark.parametrize(
    "change, path, message",
    [
        (("world: {", "world: {id: negotiation, "), "world.id", "trains the economy's planner"),
        (("world: {", "world: {democratic: true, "), "world.democratic", "planner is passive"),
        (("world: {", "world: {num_workrs: 3, "), "world.num_workrs", "did you mean 'num_workers'"),
        (("{policy: best_response}", "{policy: best_responce}"), "workers.policy", "did you mean 'best_response'"),
        (("micro_batch_size: 16", "epsilonn: 0.3"), "trainer.epsilonn", "did you mean 'epsilon'"),
        (("group_size: 2", "group_size: 1"), "group_size", "greater than or equal to 2"),
        (("populations: 2", "populations: 1"), "evaluation.populations", "greater than or equal to 2"),
        (("populations: 2", "episodes: 2"), "evaluation.episodes", "unknown key"),
        (("temperature: 1.0", "policy: server"), "learner.policy", "cannot be a server agent"),
        (("iterations: 2", "iterations: 2\nexecution: {backend: ray}"), "execution.backend", "in this process only"),
    ],
)
def test_campaign_mistakes_are_explained(tmp_path, change, path, message):
    text = campaign_file(tmp_path).read_text()
    assert change[0] in text
    (tmp_path / "bad.yaml").write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(ScenarioError) as info:
        load_campaign(tmp_path / "bad.yaml")
    assert info.value.path == path and message in str(info.value)


def test_cli_refuses_a_bad_file_with_exit_2_and_nothing_in_mlflow(tmp_path, tracking_uri):
    bad = tmp_path / "bad.yaml"
    bad.write_text(campaign_file(tmp_path).read_text().replace("best_response}", "best_response, speed: 3}"))
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "workers.speed" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "ck").exists()


def test_shipped_campaign_validates():
    campaign = load_campaign(ROOT / "scenarios" / "campaigns" / "economy_stackelberg.yaml")
    assert campaign.kind == "stackelberg" and campaign.world_config.num_workers == 100
    assert campaign.resolved_config()["workers"]["policy"] == "best_response"


def test_groups_share_population_and_seed_and_the_return_is_planner_welfare(tmp_path, tiny_model_dir):
    runner_ = load_campaign(campaign_file(tmp_path, tiny_model_dir)).start(track=False)
    episodes = runner_.training_episodes(0)
    assert len(episodes) == 4
    groups = [episodes[0:2], episodes[2:4]]
    for group in groups:
        assert len({e.seed for e in group}) == 1
        assert all(e.info["skills"] == group[0].info["skills"] for e in group)
    assert groups[0][0].seed != groups[1][0].seed and groups[0][0].info["skills"] != groups[1][0].info["skills"]
    for episode in episodes:  # the mean welfare per step after the one warm-up step, not the sum of rewards
        swf = episode.info["series"]["swf"]
        assert episode.returns["planner"] == pytest.approx(np.mean(swf[1:]))
        assert episode.returns["planner"] != pytest.approx(sum(swf))
    runner_.end()


def fake_episode(index: int, seed: int, skills, rates, planner_swf: float, swf_series) -> Episode:
    return Episode(
        index=index,
        seed=seed,
        policies={},
        metrics={"planner_swf": planner_swf, "mean_labor": 10.0 + index, "mean_utility": 1.0, "br_gap": 0.0},
        info={"skills": list(skills), "series": {"rates": [[50, 50, 50], list(rates)], "swf": list(swf_series)}},
    )


def test_welfare_evaluation_against_hand_computed_values():
    config = EconomyConfig(num_workers=4, brackets="three")
    cutoffs = config.cutoffs()
    skills = [[5.0, 20.0, 60.0, 150.0], [8.0, 30.0, 45.0, 300.0], [2.0, 12.0, 90.0, 110.0]]
    rates = [[80, 60, 70], [50, 50, 50], [100, 90, 90]]
    episodes = [fake_episode(k, 100 + k, skills[k], rates[k], 3.0 + k, [1.0, 2.0 + k, 4.0]) for k in range(3)]
    baselines = Baselines(config, cutoffs)
    out = welfare_metrics(episodes, baselines)

    def hand(sk, cut, r):
        return fixed_schedule_welfare(np.asarray(sk), np.asarray(cut, dtype=float), r, config)["swf"]

    saez = [hand(s, cutoffs, saez_rates(REFERENCE_HOURS * np.asarray(s), cutoffs)) for s in skills]
    federal = [hand(s, BRACKETS["us_federal"], US_FEDERAL_RATES) for s in skills]
    flat = [hand(s, [0.0], [25.0]) for s in skills]
    final = [hand(s, cutoffs, r) for s, r in zip(skills, rates)]
    optimum = [stackelberg_optimum(np.asarray(s), cutoffs, config).swf for s in skills]
    planner = [3.0, 4.0, 5.0]
    for key, values in [
        ("saez", saez),
        ("us_federal", federal),
        ("flat", flat),
        ("planner_final", final),
        ("optimum", optimum),
        ("planner", planner),
    ]:
        mean, half = np.mean(values), 1.96 * np.std(values, ddof=1) / math.sqrt(3)
        assert out[f"eval/{key}_swf"] == pytest.approx(mean)
        assert out[f"eval/{key}_swf_ci_low"] == pytest.approx(mean - half)
        assert out[f"eval/{key}_swf_ci_high"] == pytest.approx(mean + half)
    diff = np.asarray(final) - np.asarray(saez)  # paired by population
    assert out["eval/planner_final_minus_saez"] == pytest.approx(diff.mean())
    assert out["eval/planner_final_minus_saez_ci_high"] == pytest.approx(
        diff.mean() + 1.96 * diff.std(ddof=1) / math.sqrt(3)
    )
    assert out["eval/planner_final_over_optimum"] == pytest.approx(np.mean(final) / np.mean(optimum))
    assert out["eval/rate/b1"] == pytest.approx(np.mean([60, 50, 90]))
    assert out["eval/mean_labor"] == pytest.approx(11.0)
    assert [out[f"series/swf/{t}"] for t in range(3)] == pytest.approx([1.0, 3.0, 4.0])

    # the in-context planner is the first evaluation, the trained one the newest
    later = [fake_episode(k, 100 + k, skills[k], [100, 90, 90], 10.0 + k, [1.0, 2.0, 3.0]) for k in range(3)]
    evaluations = {0: out, 5: welfare_metrics(later, baselines)}
    table = comparison_table(evaluations)
    row = {name: k for k, name in enumerate(table["policy"])}
    assert table["swf"][row["in_context"]] == pytest.approx(4.0)
    assert table["swf"][row["trained"]] == pytest.approx(11.0)
    trained_final = [hand(s, cutoffs, [100, 90, 90]) for s in skills]
    assert table["swf"][row["trained_final"]] == pytest.approx(np.mean(trained_final))
    assert table["minus_saez"][row["trained"]] == pytest.approx(11.0 - np.mean(saez))
    assert table["share_of_optimum"][row["trained_final"]] == pytest.approx(np.mean(trained_final) / np.mean(optimum))
    assert table["share_of_optimum"][row["optimum"]] == pytest.approx(1.0)
    populations = population_table(evaluations)
    assert populations["seed"] == [100, 101, 102] and populations["saez"] == pytest.approx(saez)
    assert populations["trained"] == pytest.approx([10.0, 11.0, 12.0])


def test_baselines_match_the_run_report():
    """The evaluation's baselines are the world's own comparison (worlds/economy/report.py) on the same episode."""
    from worlds.economy import parallel_env

    world = parallel_env(num_workers=8, steps=4, tax_period=1, warmup=1, brackets="three")
    world.reset(seed=7)
    schedule = np.array([70.0, 60.0, 80.0])
    swf = []
    for _ in range(4):
        actions = {a: world.passive_action(a) for a in world.agents}
        actions["planner"] = schedule
        actions.update({w: 30.0 for w in world.workers})
        world.step(actions)
        swf.append(world.log["swf"][-1])
    episode = Episode(index=0, seed=7, policies={}, metrics=world.episode_metrics(), info=world.episode_info())
    report = world.run_report([episode]).tables["economy/comparison.json"]
    out = welfare_metrics([episode], Baselines(world.config, world.cutoffs))
    for mine, theirs in [
        ("saez", "saez"),
        ("us_federal", "us_federal"),
        ("flat", "flat"),
        ("optimum", "optimum"),
        ("planner_final", "planner_final_br"),
        ("planner", "planner"),
    ]:
        assert out[f"population/0/{mine}"] == pytest.approx(report[theirs][0]), mine


def test_a_sigkilled_tiny_campaign_resumes_into_the_same_run_with_its_levels_tables_and_figures(
    tmp_path, tracking_uri, tiny_model_dir
):
    """`agora train` killed after its first checkpoint, then `agora train --resume` (in this process: no second
    start-up) finishes the same MLflow run: per-level metrics, the evaluations (the in-context one restored from the
    checkpoint), the two tables and the three figures."""
    file = campaign_file(tmp_path, tiny_model_dir, iterations=2)
    train_killed_at(file, tracking_uri, tmp_path / "ck" / "iter-000000" / "state.json")
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny-stackelberg").experiment_id
    run_id = client.search_runs([experiment])[0].info.run_id
    assert client.get_run(run_id).info.status == "RUNNING"

    result = runner.invoke(app, ["train", str(file), "--resume"])
    assert result.exit_code == 0, result.output
    assert "held-out populations" in result.output and "trained_final" in result.output
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["agora.kind"] == "stackelberg"
    assert run.data.tags["agora.resumes"] == "1"
    for key in ("leader/planner_swf", "leader/rate/b0", "follower/mean_labor", "follower/br_gap", "train/loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 1], key  # none lost or twice
    for key in ("eval/planner_swf", "eval/planner_final_swf", "eval/saez_swf", "eval/optimum_swf"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 2], key
    assert not [k for k in run.data.metrics if k.startswith(("population/", "series/")) or k.endswith("_ci_low")]
    assert "train/planner_swf" not in run.data.metrics  # by level instead
    path = client.download_artifacts(run_id, "economy/welfare_comparison.json", str(tmp_path))
    table = json.loads(open(path).read())
    rows = {r[0]: dict(zip(table["columns"], r)) for r in table["data"]}
    assert list(rows) == [
        "saez",
        "us_federal",
        "flat",
        "in_context",
        "in_context_final",
        "trained",
        "trained_final",
        "optimum_lattice",
        "optimum",
    ]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "eval/planner_swf"))
    assert rows["in_context"]["swf"] == pytest.approx(history[0][1])  # logged by the killed process
    assert rows["trained"]["swf"] == pytest.approx(history[-1][1])
    assert rows["optimum"]["share_of_optimum"] == pytest.approx(1)
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == {
        "figures/leader.png",
        "figures/follower.png",
        "figures/welfare_over_steps.png",
    }
    assert "economy/welfare_populations.json" in {a.path for a in client.list_artifacts(run_id, "economy")}
