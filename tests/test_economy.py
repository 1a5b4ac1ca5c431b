"""The economy world (LLM Economist): PettingZoo contract, each rule on hand-checked cases, the
best response against a brute-force grid, GB2 and Saez against independent computations, the
strict parsers, the scripted planners, and end-to-end runs (scripted and a tiny LLM)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from scipy import stats

from agents.scripted.economy import (
    BestResponseWorker,
    FederalPlanner,
    FlatPlanner,
    HillClimbingPlanner,
    SaezPlanner,
    best_platforms,
    best_votes,
    federal_marginal_rates,
)
from agora.errors import ScenarioError
from agora.policy import ActRequest
from agora.rollout import Rollout
from agora.scenario import load_scenario, resolve_scenario
from agora.world import ParseError, TextWorld
from tests.conftest import SCENARIOS
from worlds.economy.rules import (
    BRACKETS,
    GB2_ACS_2023,
    PERSONAS,
    PLANNER,
    US_FEDERAL_RATES,
    EconomyConfig,
    best_response_labor,
    best_response_value,
    gini,
    platform_deltas,
    plurality_winner,
    post_tax_incomes,
    saez_rates,
    sample_gb2,
    social_welfare,
    tax,
    utility,
)
from worlds.economy.world import env, raw_env


def small_world(**kwargs) -> raw_env:
    return raw_env(EconomyConfig(**{"num_workers": 3, "steps": 6, "warmup": 2, "tax_period": 2, **kwargs}))


def scripted_rollout(config: EconomyConfig, planner, worker=None, *, concurrency: int = 1) -> Rollout:
    worker = worker or BestResponseWorker(BestResponseWorker.Config(), seed=0)
    world = raw_env(config)
    seats = {a: planner if a == PLANNER else worker for a in world.possible_agents}
    return Rollout(lambda: raw_env(config), seats, {a: "scripted" for a in seats}, seed=3, concurrency=concurrency)


# --- PettingZoo contract ------------------------------------------------------------------------


def test_pettingzoo_parallel_api_and_seed():
    parallel_api_test(raw_env(num_workers=5, steps=40, tax_period=5, warmup=3), num_cycles=100)
    parallel_seed_test(lambda: raw_env(num_workers=5, steps=20, tax_period=5, warmup=3), num_cycles=20)
    api_test(env(num_workers=3, steps=8, tax_period=2, warmup=1), num_cycles=20)  # the AEC conversion too
    assert isinstance(raw_env(), TextWorld)


def test_same_seed_same_population_and_other_seed_differs():
    a, b, c = raw_env(), raw_env(), raw_env()
    a.reset(seed=5)
    b.reset(seed=5)
    c.reset(seed=6)
    assert np.array_equal(a.skills, b.skills) and np.array_equal(a.personas, b.personas)
    assert not np.array_equal(a.skills, c.skills)


# --- tax, rebate, utility, SWF, Gini by hand ------------------------------------------------------


def test_tax_piecewise_by_hand():
    cutoffs, rates = [0, 10, 20], [10, 20, 50]
    # T(5) = 0.1·5; T(15) = 0.1·10 + 0.2·5; T(30) = 0.1·10 + 0.2·10 + 0.5·10
    assert tax([0, 5, 15, 30], cutoffs, rates) == pytest.approx([0.0, 0.5, 2.0, 8.0])
    # 2024 federal at $50,000: 0.10·11,600 + 0.12·(47,150 − 11,600) + 0.22·(50,000 − 47,150) = 1,160 + 4,266 + 627
    assert tax([50_000], BRACKETS["us_federal"], US_FEDERAL_RATES)[0] == pytest.approx(6053.0)
    assert tax([123.0], [0], [25])[0] == pytest.approx(30.75)  # flat


def test_rebate_and_post_tax_income_by_hand():
    post, taxes, rebate = post_tax_incomes([0, 10, 30], [0], [10])
    assert taxes.tolist() == pytest.approx([0, 1, 3])
    assert rebate == pytest.approx(4 / 3)
    assert post.tolist() == pytest.approx([4 / 3, 9 + 4 / 3, 27 + 4 / 3])
    assert post.sum() == pytest.approx(40)  # the rebate hands back all revenue


def test_utility_and_social_welfare_by_hand():
    u = utility([4.0, 10.0, 30.0], [0.0, 1.0, 2.0], labor_cost=0.5, labor_exponent=2.0)
    assert u.tolist() == pytest.approx([4.0, 9.5, 28.0])  # z̃ − 0.5·l²
    incomes = [0.0, 0.5, 10.0]
    # inverse income: 4/max(0,1) + 9.5/max(0.5,1) + 28/10
    assert social_welfare(u, incomes) == pytest.approx(4.0 + 9.5 + 2.8)
    assert social_welfare(u, incomes, "utilitarian") == pytest.approx(41.5)


def test_gini_by_hand():
    assert gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)  # (n − 1)/n for one holder of everything
    assert gini([1, 3]) == pytest.approx(0.25)  # Σ|xi − xj| / (2 n² mean) = 2·2 / (2·4·2)
    assert gini([0, 0]) == 0.0


def test_world_step_pays_the_hand_computed_rewards():
    world = small_world(brackets="flat", initial_rate=10, labor_cost=0.5, labor_exponent=2.0)
    world.reset(seed=0)
    world.skills = np.array([1.0, 2.0, 3.0])
    _, rewards, _, _, _ = world.step(
        {"worker_0": np.array(0.0), "worker_1": np.array(5.0), "worker_2": np.array(10.0), PLANNER: world.rates}
    )
    # z = [0, 10, 30]; T = [0, 1, 3]; rebate 4/3; u = z̃ − 0.5·l² = [4/3, 9 + 4/3 − 12.5, 27 + 4/3 − 50]
    expected = [4 / 3, 9 + 4 / 3 - 12.5, 27 + 4 / 3 - 50]
    assert [rewards[f"worker_{i}"] for i in range(3)] == pytest.approx(expected)
    assert rewards[PLANNER] == pytest.approx(4 / 3 + (9 + 4 / 3 - 12.5) / 10 + (27 + 4 / 3 - 50) / 30)
    assert world.log["tax_revenue"][-1] == pytest.approx(4.0) and world.log["total_income"][-1] == pytest.approx(40.0)


def test_bad_actions_are_clipped_not_fatal():
    world = small_world()
    world.reset(seed=0)
    world.step({"worker_0": np.array(250.0), "worker_1": np.array(np.nan), "worker_2": "garbage", PLANNER: "x"})
    assert world.labor.tolist() == [100.0, 0.0, 0.0]
    assert world.rates.tolist() == [50.0] * 7


# --- timing: warm-up, tax periods, passive planner ------------------------------------------------


def test_planner_acts_every_k_steps_after_warmup_and_its_schedule_taxes_that_step():
    world = small_world(steps=7, warmup=2, tax_period=2)
    world.reset(seed=0)
    assert [t for t in range(7) if world.is_planning_step(t)] == [2, 4, 6]
    labor = {a: np.array(40.0) for a in world.workers}
    world.step({**labor, PLANNER: np.full(7, 0.0)})  # step 0: not a planning step, ignored
    assert world.passive_action(PLANNER).tolist() == [50.0] * 7 and world.rates.tolist() == [50.0] * 7
    world.step({**labor, PLANNER: world.passive_action(PLANNER)})
    assert world.passive_action(PLANNER) is None and world.passive_action("worker_0") is None  # step 2: it decides
    obs, *_ = world.step({**labor, PLANNER: np.full(7, 0.0)})
    assert world.log["tax_revenue"][-1] == 0.0  # the new schedule taxed step 2 itself
    assert obs["worker_0"]["rates"].tolist() == [0.0] * 7  # and the workers see it from step 3


def test_engine_asks_the_planner_only_on_its_steps_and_credits_it_its_periods_swf():
    config = EconomyConfig(num_workers=4, steps=9, warmup=3, tax_period=3)
    rollout = scripted_rollout(config, FlatPlanner(FlatPlanner.Config(rate=20), seed=0))
    episode = rollout.run(1)[0]
    planner_steps = [s for s in episode.steps if s.agent == PLANNER]
    assert [s.observation["step"] for s in planner_steps] == [3, 6]
    swf = episode.info["series"]["swf"]
    assert planner_steps[0].reward == pytest.approx(sum(swf[3:6]))
    assert planner_steps[1].reward == pytest.approx(sum(swf[6:9]))
    assert episode.returns[PLANNER] == pytest.approx(sum(swf))
    assert episode.info["decisions"] == [3, 6]
    assert [s.agent for s in episode.steps].count("worker_0") == 9


# --- best response ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_best_response_matches_a_brute_force_grid(seed):
    rng = np.random.default_rng(seed)
    skills = np.concatenate([rng.uniform(1.24, 159.1, 6), sample_gb2(rng, 6, **GB2_ACS_2023) / 40])
    cutoffs = np.asarray(BRACKETS["us_federal" if seed % 2 else "three"], dtype=float)
    rates = rng.choice(np.arange(0, 101, 10), size=len(cutoffs)).astype(float)  # often non-monotone
    c, delta, share = 0.0005, 3.5, 1 / 12
    best = best_response_labor(skills, cutoffs, rates, c, delta, share)
    grid = np.linspace(0, 100, 200_001)  # 0.0005 h apart

    def objective(v, labor):
        z = v * labor
        return z - (1 - share) * tax(z, cutoffs, rates) - c * labor**delta

    for v, l_star in zip(skills, best):
        values = objective(v, grid)
        assert 0 <= l_star <= 100
        assert objective(v, np.array([l_star]))[0] >= values.max() - 1e-6 * max(1.0, abs(values.max()))
        assert abs(l_star - grid[values.argmax()]) < 0.01 or np.isclose(
            objective(v, np.array([grid[values.argmax()]]))[0], objective(v, np.array([l_star]))[0]
        )


def test_best_response_closed_form_without_tax():
    # no tax: v = c·δ·l^{δ−1}  ->  l = (v / (c·δ))^{1/(δ−1)}
    v = np.array([1.0, 10.0, 50.0])
    expected = np.minimum((v / (0.0005 * 3.5)) ** (1 / 2.5), 100)
    assert best_response_labor(v, [0], [0], 0.0005, 3.5).tolist() == pytest.approx(expected.tolist())
    assert best_response_labor(v, [0], [100], 0.0005, 3.5).tolist() == [0.0, 0.0, 0.0]  # everything taxed away


def test_best_response_workers_have_zero_gap_and_random_ones_do_not():
    config = EconomyConfig(num_workers=20, steps=6, warmup=2, tax_period=2, skill_distribution="uniform")
    episode = scripted_rollout(config, HillClimbingPlanner(HillClimbingPlanner.Config(), seed=0)).run(1)[0]
    assert episode.metrics["br_gap"] == pytest.approx(0.0, abs=1e-9)
    world = raw_env(config)
    world.reset(seed=1)
    world.step({a: np.array(100.0) for a in world.workers} | {PLANNER: world.rates})
    assert world.log["br_gap"][-1] > 1.0


# --- GB2 skills -------------------------------------------------------------------------------------


def gb2_pdf(y, mu, sigma, nu, tau):
    """σ (y/μ)^{σν} / (y · B(ν, τ) · (1 + (y/μ)^σ)^{ν+τ})."""
    from scipy.special import beta

    r = (y / mu) ** sigma
    return sigma * r**nu / (y * beta(nu, tau) * (1 + r) ** (nu + tau))


def test_gb2_sampler_matches_scipy():
    p = GB2_ACS_2023
    y = np.array([5_000.0, 30_000.0, 72_402.78, 150_000.0, 1_000_000.0])
    # density: Y = μ X^{1/σ} with X ~ BetaPrime(ν, τ), so f_Y(y) = f_X((y/μ)^σ) · σ/μ · (y/μ)^{σ−1}
    via_scipy = (
        stats.betaprime.pdf((y / p["mu"]) ** p["sigma"], p["nu"], p["tau"])
        * p["sigma"]
        / p["mu"]
        * (y / p["mu"]) ** (p["sigma"] - 1)
    )
    assert gb2_pdf(y, **p) == pytest.approx(via_scipy, rel=1e-9)
    draws = sample_gb2(np.random.default_rng(0), 20_000, **p)
    cdf = lambda x: stats.betaprime.cdf((np.asarray(x) / p["mu"]) ** p["sigma"], p["nu"], p["tau"])  # noqa: E731
    assert stats.kstest(draws, cdf).pvalue > 0.01
    assert np.median(draws) == pytest.approx(
        p["mu"] * stats.betaprime.median(p["nu"], p["tau"]) ** (1 / p["sigma"]), rel=0.05
    )


def test_skill_modes():
    uniform = raw_env(num_workers=2000, skill_distribution="uniform")
    uniform.reset(seed=0)
    assert 1.24 <= uniform.skills.min() and uniform.skills.max() <= 159.1
    gb2 = raw_env(num_workers=2000)
    gb2.reset(seed=0)
    annual = 40 * gb2.skills
    assert np.median(annual) == pytest.approx(
        GB2_ACS_2023["mu"]
        * stats.betaprime.median(GB2_ACS_2023["nu"], GB2_ACS_2023["tau"]) ** (1 / GB2_ACS_2023["sigma"]),
        rel=0.1,
    )


# --- Saez ---------------------------------------------------------------------------------------------


def saez_by_hand(incomes, cutoffs, e):
    """An independent, loop-by-loop reading of the Saez formula (as the LLM Economist paper, arXiv 2507.15815, states
    it)."""
    z = [max(float(x), 1.0) for x in incomes]
    n = len(z)
    kde = stats.gaussian_kde(np.array(z))
    total_weight = sum(1 / x for x in z)
    out = []
    for j, b in enumerate(cutoffs):
        if j + 1 < len(cutoffs):
            point = (b + cutoffs[j + 1]) / 2
        else:
            point = sum(x for x in z if x > b) / len([x for x in z if x > b])
        tail = len([x for x in z if x > point]) / n
        g = sum(1 / x for x in z if x > point) / total_weight / tail
        a = point / (point - b) if j + 1 == len(cutoffs) else point * kde(point)[0] / tail
        out.append(100 * min(1.0, max(0.0, (1 - g) / (1 - g + a * e))))
    return out


def test_saez_rates_against_an_independent_computation():
    incomes = np.random.default_rng(7).lognormal(np.log(60_000), 0.8, size=400)
    cutoffs = BRACKETS["three"]
    rates = saez_rates(incomes, cutoffs, 0.4)
    assert rates.tolist() == pytest.approx(saez_by_hand(incomes, cutoffs, 0.4), rel=1e-9)
    assert all(0 <= r <= 100 for r in rates)
    # a tiny sample checked by hand for the top bracket: incomes above 159,100 are 200k, 300k, 400k
    sample = [10_000, 50_000, 100_000, 200_000, 300_000, 400_000]
    m = 300_000  # mean above the cutoff; only 400k is above m
    g = (1 / 400_000) / sum(1 / x for x in sample) / (1 / 6)
    a = m / (m - 159_100)
    assert saez_rates(sample, cutoffs, 0.4)[2] == pytest.approx(100 * (1 - g) / (1 - g + 0.4 * a))


def test_saez_bracket_above_everyone_takes_the_rate_below():
    rates = saez_rates([1_000, 2_000, 3_000, 4_000], BRACKETS["us_federal"])
    assert rates[-1] == rates[-2] == rates[1]  # nobody reaches the brackets above $47,150


# --- scripted planners ------------------------------------------------------------------------------


def planner_request(world, episode=0):
    obs, _ = world.reset(seed=0)
    return ActRequest(episode, PLANNER, obs[PLANNER], [], world.action_space(PLANNER))


def test_federal_flat_and_saez_planners():
    assert federal_marginal_rates(BRACKETS["us_federal"]).tolist() == US_FEDERAL_RATES
    assert federal_marginal_rates(BRACKETS["three"]).tolist() == [
        10,
        22,
        24,
    ]  # $0: 10%; $90,000 in [47,150, 100,525): 22%; $159,100: 24%
    world = small_world(brackets="three")
    request = planner_request(world)
    assert FederalPlanner(FederalPlanner.Config(), seed=0).act([request])[0].action.tolist() == [10, 22, 24]
    assert FlatPlanner(FlatPlanner.Config(rate=30), seed=0).act([request])[0].action.tolist() == [30, 30, 30]
    saez = SaezPlanner(SaezPlanner.Config(), seed=0).act([request])[0].action
    assert saez.tolist() == pytest.approx(saez_rates(40 * world.skills, BRACKETS["three"]).tolist())


def test_hill_climbing_moves_are_legal_deltas_and_it_improves_welfare():
    config = EconomyConfig(
        num_workers=50, steps=60, warmup=2, tax_period=2, brackets="three", skill_distribution="uniform"
    )
    episode = scripted_rollout(config, HillClimbingPlanner(HillClimbingPlanner.Config(), seed=0)).run(1)[0]
    rates = np.asarray(episode.info["series"]["rates"])
    changes = np.diff(rates, axis=0)
    assert set(np.unique(changes)) <= {-20.0, -10.0, 0.0, 10.0, 20.0}
    assert np.count_nonzero(np.abs(changes).sum(axis=1)) > 5  # it did explore
    swf = episode.info["series"]["swf"]
    assert np.mean(swf[-10:]) > np.mean(swf[:2])  # better than the 50% schedule it started from


def test_hill_climbing_keeps_separate_state_per_episode():
    planner = HillClimbingPlanner(HillClimbingPlanner.Config(), seed=0)
    rates = np.array([50.0, 50.0, 50.0])
    obs = {"rates": rates, "period_swf": np.array([1.0]), "step": 2}
    first = planner.decide(0, obs)
    assert first.tolist() == [60, 50, 50]
    assert planner.decide(1, obs).tolist() == [60, 50, 50]  # a second episode starts fresh
    worse = planner.decide(0, {"rates": first, "period_swf": np.array([0.5]), "step": 4})
    assert worse.tolist() == [40, 50, 50]  # the trial was worse: try the other direction from the best
    better = planner.decide(0, {"rates": worse, "period_swf": np.array([2.0]), "step": 6})
    assert better.tolist() == [30, 50, 50]  # it was better: keep going


# --- text interface -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, hours",
    [
        ("LABOR: 40", 40.0),
        ("labor = 37.5 hours", 37.5),
        ('{"LABOR": 40}', 40.0),
        ("**LABOR:** 12", 12.0),
        ("I will work hard.\nLABOR: 0", 0.0),
        ("LABOUR: 100.", 100.0),
        ("LABOR: 40\nLABOR: 40.0", 40.0),
    ],
)
def test_worker_parser_accepts(text, hours):
    assert small_world().parse("worker_0", text).tolist() == hours


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no 'LABOR"),
        ("I will work 40 hours", "no 'LABOR"),
        ("LABOR: 120", "from 0 to 100"),
        ("LABOR: -3", "from 0 to 100"),
        ("LABOR: 40\nLABOR: 50", "more than one"),
        ("LABOR: forty", "no 'LABOR"),
        ('{"LABOR": "a lot"}', "no 'LABOR"),
        ("LABOR: 4e9", "no 'LABOR"),
    ],
)
def test_worker_parser_rejects_with_an_actionable_message(text, message):
    with pytest.raises(ParseError, match=message):
        small_world().parse("worker_0", text)


def test_planner_parser_applies_legal_deltas_and_rejects_the_rest():
    world = small_world(brackets="three", initial_rate=10)
    world.reset(seed=0)
    assert world.parse(PLANNER, "DELTAS: +10, 0, -10").tolist() == [20, 10, 0]
    assert world.parse(PLANNER, "Raise the middle.\n**DELTAS:** [-20, +20, 20%]").tolist() == [
        0,
        30,
        30,
    ]  # clipped at 0
    assert world.parse(PLANNER, "DELTAS: \u201310, \u221210, +0").tolist() == [0, 0, 10]  # en dash and minus sign
    for text, message in [
        ("DELTAS: +10, 0", "exactly 3"),
        ("DELTAS: 15, 0, 0", "not a legal change"),
        ("raise taxes", "no 'DELTAS"),
        ("DELTAS: 0, 0, 0\nDELTAS: 10, 0, 0", "more than one"),
    ]:
        with pytest.raises(ParseError, match=message):
            world.parse(PLANNER, text)


def test_render_parse_round_trip_and_fallbacks():
    world = small_world(brackets="three")
    world.reset(seed=0)
    for hours in (0.0, 12.345678901, 100.0):
        assert world.parse("worker_1", world.render_action("worker_1", np.array(hours))).tolist() == hours
    move = np.array([60.0, 30.0, 50.0])
    assert world.render_action(PLANNER, move) == "DELTAS: +10, -20, 0"
    assert world.parse(PLANNER, world.render_action(PLANNER, move)).tolist() == move.tolist()
    assert world.render_action(PLANNER, np.array([12.5, 30.0, 41.0])).startswith(
        "RATES:"
    )  # a scripted baseline's direct schedule
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert world.action_space("worker_0").contains(world.fallback_action("worker_0", rng))
        assert set(world.fallback_action(PLANNER, rng) - world.rates) <= {-20, -10, 0, 10, 20}


def test_prompts_show_persona_schedule_and_history():
    world = small_world(brackets="three")
    obs, _ = world.reset(seed=0)
    obs, *_ = world.step({a: np.array(30.0) for a in world.workers} | {PLANNER: world.rates})
    text = world.prompt("worker_1", obs["worker_1"])
    persona = world.personas[1]
    for column, index in zip(PERSONAS, persona):
        assert PERSONAS[column][index] in text
    assert "LABOR: <hours>" in text and "$90,000 to $159,100: 50%" in text and "Last step: you worked 30 h" in text
    plan = world.prompt(PLANNER, obs[PLANNER])
    assert "DELTAS:" in plan and "3 workers" in plan and "mean hours 30.0" in plan
    demo = world.demonstration("worker_2")
    assert demo[1]["content"] == "LABOR: 40" and world.parse("worker_2", demo[1]["content"]).tolist() == 40.0
    assert world.parse(PLANNER, world.demonstration(PLANNER)[1]["content"]).shape == (3,)


# --- scenarios, report, scale --------------------------------------------------------------------------


def test_config_mistakes_are_explained():
    with pytest.raises(ScenarioError, match="warmup"):
        resolve_scenario(
            {
                "name": "x",
                "world": {"id": "economy", "steps": 10, "warmup": 10},
                "agents": {"*": {"policy": "best_response"}},
                "episodes": 1,
            }
        )
    with pytest.raises(ScenarioError, match="brackets"):
        resolve_scenario(
            {
                "name": "x",
                "world": {"id": "economy", "brackets": "uk"},
                "agents": {"*": {"policy": "best_response"}},
                "episodes": 1,
            }
        )


def test_scripted_scenario_runs_and_reports_the_comparison(tracking_uri):
    from agora.run import run_scenario
    from mlflow import MlflowClient

    scenario = load_scenario(SCENARIOS / "economy_scripted.yaml", {"episodes": 2})
    data = scenario.spec.model_dump()
    data["world"] = {**scenario.world_config.model_dump(), "id": "economy", "num_workers": 30, "steps": 40}
    result = run_scenario(resolve_scenario(data), tracking_uri=tracking_uri)
    report = result.report
    table = report.tables["economy/comparison.json"]
    assert table["episode"] == [0, 1] and set(table) >= {"planner", "saez", "us_federal", "flat", "planner_final_br"}
    assert all(np.isfinite(table[k]).all() for k in ("planner", "saez", "us_federal", "flat"))
    assert report.metrics["compare/saez_swf"] == pytest.approx(np.mean(table["saez"]))
    # the Stackelberg optimum on each population: no fixed schedule does better with best-response workers
    for k in range(2):
        best = table["optimum"][k]
        assert best >= table["optimum_lattice"][k] - 1e-9
        assert all(best >= table[name][k] - 1e-9 for name in ("planner_final_br", "saez", "us_federal", "flat"))
        assert len(table["optimum_rates"][k]) == len([s for s in report.series if s.startswith("schedule/b")])
    assert report.metrics["compare/planner_over_optimum"] == pytest.approx(
        np.mean(table["planner_final_br"]) / np.mean(table["optimum"])
    )
    assert len(report.series["step/swf"]) == 40 and "schedule/b2" in report.series
    assert "economy/schedule.png" in report.figures
    for key in (
        "eval/swf",
        "eval/gini_pre",
        "eval/gini_post",
        "eval/mean_labor",
        "eval/tax_revenue",
        "eval/br_gap",
        "eval/rate/b0",
    ):
        assert key in result.summary
    client = MlflowClient(tracking_uri)
    history = client.get_metric_history(result.run_id, "schedule/b0")
    assert len(history) == 40
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "economy")}
    assert {"economy/schedule.png", "economy/comparison.json"} <= artifacts


def test_scenario_files_validate():
    assert load_scenario(SCENARIOS / "economy.yaml").world_entry.name == "economy"
    scripted = load_scenario(SCENARIOS / "economy_scripted.yaml")
    assert scripted.world_config.num_workers == 100
    assert (
        scripted.seats[PLANNER].entry.name == "hill_climbing"
        and scripted.seats["worker_99"].entry.name == "best_response"
    )


def test_a_thousand_scripted_workers_step():
    config = EconomyConfig(num_workers=1000, steps=3, warmup=1, tax_period=1)
    episode = scripted_rollout(config, SaezPlanner(SaezPlanner.Config(), seed=0)).run(1)[0]
    assert len(episode.steps) == 3 * 1000 + 2 and episode.metrics["br_gap"] == pytest.approx(0.0, abs=1e-9)


def test_llm_workers_are_batched_into_one_call_per_step(tiny_model_dir):
    from agents.llm import LLMConfig, LLMPolicy

    llm = LLMPolicy(LLMConfig(model=tiny_model_dir, max_new_tokens=6, device="cpu"), seed=0)
    config = EconomyConfig(num_workers=5, steps=3, warmup=1, tax_period=1, brackets="three")
    world = raw_env(config)
    planner = FlatPlanner(FlatPlanner.Config(), seed=0)
    seats = {a: planner if a == PLANNER else llm for a in world.possible_agents}
    rollout = Rollout(lambda: raw_env(config), seats, {a: "x" for a in seats}, seed=0, max_retries=0)
    episode = rollout.run(1)[0]
    assert llm.stats.calls == 3 and llm.stats.requests == 15  # 5 workers' turns per generate call
    counters = [c for a, c in rollout.counters.items() if a != PLANNER]
    assert sum(c.text_attempts for c in counters) == 15
    assert sum(c.fallbacks for c in counters) == sum(
        c.parse_failures for c in counters
    )  # garbage text -> fallbacks, no crash
    assert np.isfinite(episode.metrics["br_gap"])


def test_rollout_keeps_the_callers_gc_setting():
    """The engine turns automatic cyclic GC off during a run (collecting between ticks) and restores it."""
    import gc

    config = EconomyConfig(num_workers=3, steps=3, warmup=1, tax_period=1)
    planner = FlatPlanner(FlatPlanner.Config(), seed=0)
    assert gc.isenabled()
    scripted_rollout(config, planner).run(1)
    assert gc.isenabled()
    gc.disable()
    try:
        scripted_rollout(config, planner).run(1)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_finished_worlds_are_freed():
    """Nothing class-level (e.g. an lru_cache keyed by the env) keeps a run's N-sized worlds alive."""
    import gc
    import weakref

    world = raw_env(num_workers=5, steps=2, warmup=1, tax_period=1)
    obs, _ = world.reset(seed=0)
    (
        world.observation_space("worker_1"),
        world.action_space(PLANNER),
        world.demonstration("worker_1"),
        world.prompt("worker_1", obs["worker_1"]),
    )
    ref = weakref.ref(world)
    del world, obs
    gc.collect()
    assert ref() is None


def test_a_scripted_policy_in_the_wrong_seat_is_a_scenario_error():
    data = {
        "name": "x",
        "world": {"id": "economy", "num_workers": 2, "steps": 3, "warmup": 1, "tax_period": 1},
        "agents": {"*": {"policy": "best_response"}},
        "episodes": 1,
    }
    wrong = r"policy 'best_response' plays the seats 'worker_\*', not 'planner'"
    with pytest.raises(ScenarioError, match=wrong) as info:
        resolve_scenario(data)  # caught when the file is read, before anything runs
    assert info.value.path == "agents.*.policy"
    data["agents"] = {"planner": {"policy": "saez"}, "worker_*": {"policy": "saez"}}
    with pytest.raises(ScenarioError, match="'saez' plays the seats 'planner', not 'worker_0'"):
        resolve_scenario(data)
    world = small_world()
    obs, _ = world.reset(seed=0)
    with pytest.raises(ScenarioError, match="'saez' plays the planner only"):
        SaezPlanner(SaezPlanner.Config(), seed=0).act([ActRequest(0, "worker_0", obs["worker_0"], [])])


# --- democratic mode (LLM Economist, arXiv 2507.15815, "Voting") ------------------------------------------------


def democratic_world(**kwargs) -> raw_env:
    world = raw_env(
        EconomyConfig(
            **{
                "num_workers": 4,
                "steps": 8,
                "warmup": 2,
                "tax_period": 3,
                "brackets": "three",
                "democratic": True,
                **kwargs,
            }
        )
    )
    world.reset(seed=0)
    return world


def vote_action(hours=10.0, stand=0, platform=(2, 2, 2), vote=-1) -> dict:
    return {"labor": np.array(hours), "stand": stand, "platform": np.array(platform), "vote": vote}


def test_plurality_winner_counts_valid_votes_and_breaks_ties_with_the_seed():
    rng = np.random.default_rng(0)
    assert plurality_winner([3, 3, 1, 0], [1, 3], rng) == 3
    assert plurality_winner([], [], rng) is None
    assert plurality_winner([], [2], rng) == 2  # a lone candidate wins without votes
    winners = {plurality_winner([1, 3], [1, 3], np.random.default_rng(s)) for s in range(20)}
    assert winners == {1, 3}  # a tie goes either way ...
    assert plurality_winner([1, 3], [1, 3], np.random.default_rng(5)) == plurality_winner(
        [1, 3], [1, 3], np.random.default_rng(5)
    )  # ... by the seed


def test_democratic_phases_stand_before_each_decision_and_vote_on_it():
    world = democratic_world()
    assert [world.phase(t) for t in range(8)] == [0, 1, 2, 0, 1, 2, 0, 0]  # decisions at 2 and 5 (8 is past the end)
    assert world.passive_action(PLANNER) is not None  # the planner is never asked
    with pytest.raises(ValueError, match="warmup >= 1 and tax_period >= 2"):
        EconomyConfig(democratic=True, warmup=0)


def test_election_applies_the_plurality_winners_platform_and_counts_turnout_and_candidates():
    world = democratic_world()
    world.step({a: vote_action() for a in world.workers})  # step 0: work
    # step 1: worker_1 stands with (-20, 0, +10), worker_3 with (+20, +20, +20); worker_2's platform is malformed
    world.step(
        {
            "worker_0": vote_action(),
            "worker_1": vote_action(stand=1, platform=(0, 2, 3)),
            "worker_2": vote_action(stand=1, platform=(9, 9)),
            "worker_3": vote_action(stand=1, platform=(4, 4, 4)),
        }
    )
    assert world.candidates.tolist() == [0, 1, 0, 1]
    # step 2: two votes for worker_1, one for worker_3, one for a non-candidate (invalid)
    world.step(
        {
            "worker_0": vote_action(vote=1),
            "worker_1": vote_action(vote=1),
            "worker_2": vote_action(vote=2),
            "worker_3": vote_action(vote=3),
        }
    )
    assert world.rates.tolist() == [30.0, 50.0, 60.0]  # 50 + (-20, 0, +10), and it taxes this step
    assert world.log["rates"][-1] == [30.0, 50.0, 60.0]
    election = world.elections[-1]
    assert election["winner"] == 1 and election["votes"] == [2, 1] and election["candidates"] == [1, 3]
    assert election["turnout"] == pytest.approx(0.75) and election["candidate_share"] == pytest.approx(0.5)
    assert not world.candidates.any()  # candidacies last one election


def test_an_election_without_candidates_keeps_the_schedule():
    world = democratic_world()
    for _ in range(3):
        world.step({a: vote_action(vote=0) for a in world.workers})
    assert world.rates.tolist() == [50.0] * 3 and world.elections[-1]["winner"] is None
    assert world.elections[-1]["turnout"] == 0.0
    metrics = world.episode_metrics()
    assert metrics["election/count"] == 1 and metrics["election/turnout"] == 0.0


def test_democratic_pettingzoo_api_and_seed():
    config = EconomyConfig(num_workers=5, steps=10, warmup=1, tax_period=2, brackets="three", democratic=True)
    parallel_api_test(raw_env(config), num_cycles=20)
    parallel_seed_test(lambda: raw_env(config))


def test_democratic_worker_parser_is_strict():
    world = democratic_world()
    world.step({a: vote_action() for a in world.workers})  # now a stand step
    action = world.parse("worker_0", "LABOR: 40\nSTAND: -20, 0, +10")
    assert (
        float(action["labor"]) == 40
        and action["stand"] == 1
        and platform_deltas(action["platform"]).tolist() == [-20, 0, 10]
    )
    assert world.parse("worker_0", "LABOR: 40\nSTAND: NO")["stand"] == 0
    for text, message in (
        ("LABOR: 40", "STAND"),
        ("LABOR: 40\nSTAND: -20, 0", "exactly 3"),
        ("LABOR: 40\nSTAND: -15, 0, 0", "not a legal change"),
        ("STAND: NO", "LABOR"),
    ):
        with pytest.raises(ParseError, match=message):
            world.parse("worker_0", text)
    world.step(
        {
            "worker_0": vote_action(),
            "worker_1": vote_action(),
            "worker_2": vote_action(stand=1, platform=(0, 2, 2)),
            "worker_3": vote_action(stand=1, platform=(4, 2, 2)),
        }
    )
    prompt = world.prompt("worker_0", world._observations()["worker_0"])
    assert (
        "Candidate 1: -20, 0, 0" in prompt
        and "Candidate 2: +20, 0, 0" in prompt
        and prompt.endswith("VOTE: <candidate number>")
    )
    assert world.parse("worker_0", "LABOR: 5\nVOTE: 2")["vote"] == 3  # candidate 2 is worker_3
    for text in ("LABOR: 5\nVOTE: 3", "LABOR: 5", "LABOR: 5\nVOTE: two"):
        with pytest.raises(ParseError, match="VOTE|candidate"):
            world.parse("worker_0", text)
    fallback = world.fallback_action("worker_0", np.random.default_rng(0))
    assert fallback["vote"] in (2, 3) and fallback["stand"] == 0
    assert world.parse("worker_0", world.render_action("worker_0", vote_action(hours=7, vote=3)))["vote"] == 3


def test_best_response_voters_stand_with_and_vote_for_their_own_best_platform():
    world = democratic_world()
    obs = world._observations()["worker_0"]
    obs = {**obs, "rates": np.array([50.0, 50.0, 50.0])}
    skills = np.array([10.0, 3000.0])  # $10/h never leaves the first bracket; $3,000/h reaches the top one
    # Own value V falls with every rate its income reaches and ignores the rest: -20 where it pays, 0 elsewhere.
    assert platform_deltas(best_platforms(skills, obs)).tolist() == [[-20, 0, 0], [-20, -20, -20]]
    candidates, platforms = np.zeros(4, dtype=np.int8), np.full((4, 3), 2)
    candidates[[1, 2]] = 1
    platforms[1], platforms[2] = (0, 2, 2), (2, 0, 0)  # (-20, 0, 0) and (0, -20, -20)
    votes = best_votes(skills, {**obs, "candidates": candidates, "platforms": platforms})
    c, delta, share = obs["utility_params"]
    for v, vote in zip(skills, votes):  # brute force: the candidate with the highest V
        values = {
            k: best_response_value([v], obs["cutoffs"], 50 + platform_deltas(platforms[k]), c, delta, share)[0]
            for k in (1, 2)
        }
        assert vote == max(values, key=values.get)
    assert votes.tolist() == [1, 2]


def test_democratic_scenario_runs_with_scripted_voters(tracking_uri):
    from agora.run import run_scenario

    scenario = load_scenario(SCENARIOS / "economy_democratic.yaml", {"episodes": 1})
    assert scenario.world_config.democratic
    data = scenario.spec.model_dump()
    data["world"] = {
        **scenario.world_config.model_dump(),
        "id": "economy",
        "num_workers": 20,
        "steps": 25,
        "warmup": 4,
        "tax_period": 5,
    }
    result = run_scenario(resolve_scenario(data), tracking_uri=tracking_uri)
    table = result.report.tables["economy/elections.json"]
    assert table["step"] == [4, 9, 14, 19, 24]
    assert all(0 < s <= 1 for s in table["candidate_share"]) and all(t == 1.0 for t in table["turnout"])
    assert result.summary["eval/election/turnout"] == 1.0 and "election/platform/b0" in result.report.series
    assert result.summary["eval/br_gap"] == pytest.approx(0.0, abs=1e-9)


def test_out_of_range_hours_are_rejected_with_a_retry_hint_not_clipped():
    world = small_world(brackets="three")
    world.reset(seed=0)
    with pytest.raises(ParseError, match=r"1000 hours is not possible.*from 0 to 100.*LABOR: 45"):
        world.parse("worker_0", "LABOR: 1000")


def test_democratic_demonstration_is_a_plain_work_step():
    world = democratic_world()
    demo = world.demonstration("worker_0")
    assert demo[1]["content"] == "LABOR: 40" and "Election" not in demo[0]["content"]
    assert demo[0]["content"].endswith("LABOR: <hours>")


# --- hostile replies (issue #14): strict, bounded, linear ---------------------------------------


def parse_time(world, agent: str, text: str):
    """(the parse's result or its ParseError, seconds it took)."""
    start = time.perf_counter()
    try:
        result = world.parse(agent, text)
    except ParseError as error:
        result = error
    return result, time.perf_counter() - start


@pytest.mark.parametrize(
    "text",
    [
        '{"LABOR": ' + "9" * 5000 + "}",  # over Python's int-str digit limit: was a ValueError
        '{"LABOR": ' + "[" * 1000 + "40" + "]" * 1000 + "}",  # was a RecursionError
        '{"a":' * 1000 + "1" + "}" * 1000,
        "LABOR: " + "9" * 5000,
        "LABOR: 4,5",  # was 45 hours
        "LABOR: 1,,,,0",  # was 10 hours
        "LABOR: 4e1",
    ],
)
def test_worker_parser_rejects_huge_deep_and_comma_numbers(text):
    with pytest.raises(ParseError, match="LABOR"):
        small_world().parse("worker_0", text)


def test_worker_parser_keeps_json_and_decorated_replies():
    world = small_world()
    assert world.parse("worker_0", '{"LABOR": 40, "reason": "[tired]"}').tolist() == 40.0
    assert world.parse("worker_0", '{\n  "labor": 12.5\n}').tolist() == 12.5
    assert world.parse("worker_0", "LABOR: .5 h").tolist() == 0.5
    assert world.parse("worker_0", '"LABOR": "30",').tolist() == 30.0


@pytest.mark.parametrize(
    "text",
    [
        "labor:" + " " * 31_000 + "x",
        "LABOR: 5" + " " * 31_000 + "x",
        "LABOR:" + "\n" * 31_000,
        "VOTE:" + " " * 31_000 + "x",
    ],
)
def test_worker_parser_takes_linear_time(text):
    """These took 184-300 s at 100k characters (quadratic backtracking); 31k would take seconds."""
    for world in (small_world(), vote_step_world()):
        result, seconds = parse_time(world, "worker_0", text)
        assert seconds < 0.5 and isinstance(result, ParseError)


def vote_step_world() -> raw_env:
    """A democratic world at a vote step, with workers 1 and 3 standing."""
    world = democratic_world()
    for _ in range(2):
        world.step({a: vote_action() for a in world.workers})
    world.candidates[:] = [0, 1, 0, 1]
    return world


def test_vote_with_thousands_of_digits_is_a_parse_failure():
    world = vote_step_world()
    with pytest.raises(ParseError, match="VOTE"):
        world.parse("worker_0", "LABOR: 5\nVOTE: " + "9" * 5000)
    assert world.parse("worker_0", "LABOR: 5\n**VOTE:** Candidate #2.")["vote"] == 3


def test_democratic_worker_actions_always_lie_in_the_declared_space():
    world = democratic_world()
    rng = np.random.default_rng(0)
    space = world.action_space("worker_0")
    for _ in range(6):  # work, stand and vote steps
        for text in ("LABOR: 5", "LABOR: 5\nSTAND: NO", "LABOR: 5\nVOTE: 1"):
            try:
                action = world.parse("worker_0", text)
            except ParseError:
                continue
            assert space.contains(action), action
        assert space.contains(world.fallback_action("worker_0", rng))
        world.step({a: world.fallback_action(a, rng) for a in world.workers})


# --- in-context feedback and persona utilities ---------------------------------------------------------


def test_prompts_tell_the_last_change_and_the_best_schedule_so_far():
    world = small_world(brackets="three", steps=12, warmup=1, tax_period=2)
    obs, _ = world.reset(seed=0)
    moves = {1: [60.0, 50.0, 40.0], 3: [80.0, 50.0, 30.0]}
    hours = [20.0, 30.0, 30.0, 20.0, 20.0]
    for t in range(5):
        rates = moves.get(t, world.rates)
        obs, *_ = world.step({a: np.array(hours[t]) for a in world.workers} | {PLANNER: rates})
    assert world.is_planning_step()  # step 5: the planner's third decision
    plan = world.prompt(PLANNER, obs[PLANNER])
    now, before = float(obs[PLANNER]["period_swf"][0]), obs[PLANNER]["periods"][0]
    verb = "raised" if now > before[-1] else "lowered"
    assert f"Your last change (+20, 0, -10) {verb} welfare per step from {before[-1]:.3f} to {now:.3f}." in plan
    history = [(now, "[80%, 50%, 30%]"), *[(row[-1], None) for row in obs[PLANNER]["periods"][:2]]]
    best = max(history, key=lambda item: item[0])
    assert f"gave welfare {best[0]:.3f} per step." in plan.split("Best so far")[1]
    work = world.prompt("worker_1", obs["worker_1"])  # 20 h after 20 h: no change to tell
    assert "than the step before" not in work
    world.reset(seed=0)
    for t in range(2):
        obs, *_ = world.step({a: np.array(hours[t]) for a in world.workers} | {PLANNER: world.rates})
    u_now, u_before = obs["worker_1"]["history"][4], obs["worker_1"]["history"][9]
    verb = "raised" if u_now > u_before else "lowered"
    assert f"Working 10 more hours than the step before {verb} your utility." in world.prompt(
        "worker_1", obs["worker_1"]
    )


def test_persona_scaling_halves_a_dissatisfied_workers_utility_in_rewards_and_welfare():
    plain = small_world(brackets="flat")
    scaled = small_world(brackets="flat", persona_scaling=True, dissatisfied_scale=0.5)
    plain.reset(seed=3)
    scaled.reset(seed=3)
    labor = {a: np.array(30.0) for a in plain.workers}
    _, base, *_ = plain.step(labor | {PLANNER: plain.rates})
    said = {a: {"labor": np.array(30.0), "satisfied": int(i % 2 == 0)} for i, a in enumerate(scaled.workers)}
    _, rewards, *_ = scaled.step(said | {PLANNER: scaled.rates})
    for i, a in enumerate(scaled.workers):
        assert rewards[a] == pytest.approx(base[a] * (1.0 if i % 2 == 0 else 0.5))
    z = scaled.incomes
    u = np.array([rewards[a] for a in scaled.workers])
    assert rewards[PLANNER] == pytest.approx(float((u / np.maximum(z, 1.0)).sum()))
    assert scaled.log["satisfied"] == [pytest.approx(np.mean([i % 2 == 0 for i in range(len(scaled.workers))]))]
    scaled.reset(seed=3)
    _, unsaid, *_ = scaled.step(labor | {PLANNER: scaled.rates})  # no `satisfied`: counts as satisfied
    assert [unsaid[a] for a in scaled.workers] == pytest.approx([base[a] for a in plain.workers])


def test_persona_scaling_replies_parse_render_and_are_asked_for():
    world = small_world(brackets="three", persona_scaling=True)
    obs, _ = world.reset(seed=0)
    action = world.parse("worker_0", "LABOR: 40\nSATISFIED: no")
    assert action["labor"].tolist() == 40.0 and action["satisfied"] == 0
    assert world.parse("worker_0", "**LABOR:** 35\n**Satisfied:** Yes.")["satisfied"] == 1
    for bad in ("LABOR: 40", "LABOR: 40\nSATISFIED: maybe", "LABOR: 40\nSATISFIED: YES\nSATISFIED: NO"):
        with pytest.raises(ParseError, match="SATISFIED: YES"):
            world.parse("worker_0", bad)
    assert world.render_action("worker_0", action) == "LABOR: 40\nSATISFIED: NO"
    assert world.action_space("worker_0").contains({"labor": np.array(40.0), "satisfied": 0})
    assert "SATISFIED: YES or SATISFIED: NO" in world.prompt("worker_0", obs["worker_0"])
    assert world.demonstration("worker_0")[1]["content"] == "LABOR: 40\nSATISFIED: YES"
    fallback = world.fallback_action("worker_0", np.random.default_rng(0))
    assert world.action_space("worker_0").contains({**fallback, "labor": np.asarray(fallback["labor"])})
    assert world.parse("worker_0", world.render_action("worker_0", fallback))["satisfied"] == fallback["satisfied"]
