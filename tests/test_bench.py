"""The benchmarks' harnesses compare like with like: every side starts cold (fresh policies, empty prefix caches),
warm-ups play seeds no measured side plays, and the sides' order rotates. Tiny model, tiny sizes."""

from __future__ import annotations

import re

import pytest
import yaml

from agora.scenario import resolve_scenario
from bench import economy, judges, review_logging, rollout, werewolf
from bench.harness import cache_hit_fraction, side_orders, warmup_seed


@pytest.fixture
def one_thread():
    """One torch thread: the tiny model's products are too small to share, and spinning threads cost more."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_side_orders_rotate_so_each_side_leads_as_often_and_warmups_use_unmeasured_seeds():
    assert side_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [order[0] for order in side_orders(["a", "b"], 4)] == ["a", "b", "a", "b"]
    assert warmup_seed([4, 8, 32]) not in {4, 8, 32}


def negotiation(model: str):
    data = yaml.safe_load(rollout.SCENARIO.read_text())
    data["world"]["max_turns"] = 4
    data["agents"]["alice"].update(model=model, temperature=0.0, max_new_tokens=4)
    return resolve_scenario({**data, "episodes": 2, "concurrency": 2})


def test_rollout_bench_sides_start_cold_and_reuse_only_their_own_prompts(tiny_model_dir, one_thread):
    scenario = negotiation(tiny_model_dir)
    sides = [rollout.BATCHED, "agora"]
    scenarios = {rollout.BATCHED: scenario}
    results, orders = rollout.compare(scenarios, sides, episodes=2, concurrency=2, repeats=2, warmup_episodes=1)
    assert orders == [sides, sides[::-1]]  # the baseline also runs first
    # Run alone in a fresh state, each side reuses exactly what it reuses inside the comparison: no side's
    # prefix-cache hits come from the other side's (or the warm-up's) prompts.
    alone = {
        rollout.BATCHED: rollout.batched_side(scenario, 2, 2, scenario.spec.seed),
        "agora": rollout.sequential_side(scenario, 2, scenario.spec.seed, "agora"),
    }
    for name in sides:
        for run in results[name]:
            assert run.tally.prompt_tokens == alone[name].tally.prompt_tokens > 0
            assert run.tally.reused_tokens == alone[name].tally.reused_tokens
            assert cache_hit_fraction(run.tally) < 0.9  # the old shared policy gave the second side ~0.999


def test_werewolf_llm_sides_each_get_fresh_policies(tiny_model_dir, one_thread):
    data = yaml.safe_load((werewolf.SCENARIOS / "werewolf.yaml").read_text())
    for spec in data["agents"].values():
        if spec["policy"] == "llm":
            spec.update(model=tiny_model_dir, temperature=0.0, max_new_tokens=2)
    data["world"]["max_days"] = 1
    scenario = resolve_scenario({**data, "episodes": 1})
    first = werewolf.llm_side(scenario, 1, 1)
    second = werewolf.llm_side(scenario, 1, 1)  # the same games again: a shared policy would hit its cache
    assert first[4].prompt_tokens == second[4].prompt_tokens > 0
    assert first[4].reused_tokens == second[4].reused_tokens
    assert first[5] == second[5]


def test_economy_bench_gives_every_size_a_fresh_policy_and_warms_up_on_another_seed(
    tiny_model_dir, one_thread, monkeypatch
):
    from agents.llm import LLMConfig, LLMPolicy

    seeds = []
    play = economy.play

    def recording_play(n, steps, worker, planner, *, seed=None, max_retries=0):
        seeds.append(n if seed is None else seed)
        return play(n, steps, worker, planner, seed=seed, max_retries=max_retries)

    monkeypatch.setattr(economy, "play", recording_play)
    config = LLMConfig(model=tiny_model_dir, temperature=0.0, max_new_tokens=2)
    rows, notes, policies = economy.llm_rows([2, 2], 1, lambda: LLMPolicy(config, seed=0))
    assert seeds[0] not in seeds[1:] and seeds[1:] == [2, 2]  # the warm-up plays no measured episode
    assert policies[0] is not policies[1]
    assert notes[2].startswith("generate calls/step 1.0")
    # the same N twice: the second policy reuses no more than the first (a shared one would start warm)
    assert policies[0].prefix_cache.reused_tokens == policies[1].prefix_cache.reused_tokens
    seeds.clear()
    economy.scripted_rows([3, 4], 1, 1)
    assert seeds[0] not in {3, 4} and seeds[1:] == [3, 4]


def test_judges_bench_reports_the_cached_pass_as_lookups_without_a_ratio():
    line = judges.cached_pass_line(0, 8, 0.0001)
    assert "look-ups" in line and "0 model calls" in line
    assert "speed-up" not in line and not re.search(r"\d\s*x\b", line)  # no ratio of a look-up to a model call


def test_review_logging_sides_play_the_same_episodes_and_only_one_writes_traces(tmp_path):
    from mlflow import MlflowClient

    data = yaml.safe_load((rollout.SCENARIO.parent / "negotiation_scripted.yaml").read_text())
    (tmp_path / "plain").mkdir(), (tmp_path / "traced").mkdir()
    _, plain = review_logging.play(data, 3, 0, tmp_path / "plain")
    _, traced = review_logging.play(data, 3, 3, tmp_path / "traced")
    assert plain == traced > 0
    counts = {}
    for side in ("plain", "traced"):
        client = MlflowClient(f"sqlite:///{tmp_path / side / 'mlflow.db'}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        counts[side] = len(client.search_traces(locations=experiments, max_results=100))
    assert counts == {"plain": 0, "traced": 6}  # the untimed first run and the timed one, 3 episodes each
