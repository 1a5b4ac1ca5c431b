"""The economy's Stackelberg ground truth (worlds/economy/stackelberg.py) against hand-solved cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from worlds.economy import EconomyConfig, sample_gb2
from worlds.economy.rules import GB2_ACS_2023, REFERENCE_HOURS, fixed_schedule_welfare
from worlds.economy.stackelberg import planner_lattice, stackelberg_optimum

C, DELTA = 0.0005, 3.5


def test_identical_workers_inverse_income_optimum_is_the_full_rate_in_closed_form():
    # N identical workers at wage v, one bracket: everyone earns the same, so the rebate returns each one's own tax
    # and u = z - c*l^delta. Inverse-income SWF = N * (1 - c*l^(delta-1)/v) falls with labor, so the leader taxes
    # 100%: each worker keeps 1/N of a marginal dollar, l = (v/(N*c*delta))^(1/(delta-1)) and SWF = N - 1/delta.
    n, v = 10, 30.0
    config = EconomyConfig(num_workers=n, brackets="flat")
    best = stackelberg_optimum(np.full(n, v), [0.0], config)
    assert best.rates == pytest.approx([100.0], abs=0.01)
    assert best.swf == pytest.approx(n - 1 / DELTA, rel=1e-6)
    labor = (v / (n * C * DELTA)) ** (1 / (DELTA - 1))
    assert v * labor > 1  # the closed form holds where incomes are above the weight's floor of 1
    assert fixed_schedule_welfare(np.full(n, v), [0.0], [0.0], config)["swf"] == pytest.approx(n * (1 - 1 / DELTA))
    assert best.lattice_rates.tolist() == [100.0] and best.lattice_swf == pytest.approx(best.swf)


def test_identical_workers_utilitarian_optimum_is_no_tax_in_closed_form():
    # Utilitarian SWF = sum(z - c*l^delta) (taxes and rebate cancel): the undistorted labor l0 = (v/(c*delta))^0.4,
    # reached at a zero rate; SWF* = N*v*l0*(1 - 1/delta).
    n, v = 5, 30.0
    config = EconomyConfig(num_workers=n, brackets="flat", welfare="utilitarian")
    best = stackelberg_optimum(np.full(n, v), [0.0], config)
    l0 = (v / (C * DELTA)) ** (1 / (DELTA - 1))
    assert best.rates == pytest.approx([0.0], abs=0.01)
    assert best.swf == pytest.approx(n * v * l0 * (1 - 1 / DELTA), rel=1e-6)


def test_utilitarian_optimum_is_no_tax_for_any_population():
    # Quasi-linear utility: whatever the skills and brackets, the sum of utilities is largest without distortion.
    rng = np.random.default_rng(0)
    skills = sample_gb2(rng, 40, **GB2_ACS_2023) / REFERENCE_HOURS
    config = EconomyConfig(num_workers=40, brackets="three", welfare="utilitarian")
    cutoffs = config.cutoffs()
    best = stackelberg_optimum(skills, cutoffs, config)
    untaxed = fixed_schedule_welfare(skills, cutoffs, [0.0, 0.0, 0.0], config)["swf"]
    assert best.swf == pytest.approx(untaxed, rel=1e-9)
    assert best.lattice_rates.tolist() == [0.0, 0.0, 0.0]


def test_optimum_matches_a_brute_force_grid_on_two_brackets():
    rng = np.random.default_rng(3)
    skills = sample_gb2(rng, 20, **GB2_ACS_2023) / REFERENCE_HOURS
    config = EconomyConfig(num_workers=20, brackets="three")
    cutoffs = np.array([0.0, 60_000.0])
    best = stackelberg_optimum(skills, cutoffs, config)
    grid = np.arange(0.0, 101.0, 2.0)
    brute = max(
        fixed_schedule_welfare(skills, cutoffs, [a, b], config)["swf"] for a, b in itertools.product(grid, grid)
    )
    assert best.swf >= brute - 1e-9  # at least as good as every point of a 2-point grid
    assert best.swf <= brute * 1.01  # and close to it (SWF is continuous in the rates)
    assert best.swf == pytest.approx(fixed_schedule_welfare(skills, cutoffs, best.rates, config)["swf"])
    lattice = planner_lattice(50.0)
    on_lattice = max(
        fixed_schedule_welfare(skills, cutoffs, [a, b], config)["swf"] for a, b in itertools.product(lattice, lattice)
    )
    assert best.exhaustive and best.lattice_swf == pytest.approx(on_lattice)
    assert best.swf >= best.lattice_swf


def test_planner_lattice_is_what_moves_of_ten_reach():
    assert planner_lattice(50.0).tolist() == [float(x) for x in range(0, 101, 10)]
    assert planner_lattice(55.0).tolist() == [0.0, *[float(x) for x in range(5, 100, 10)], 100.0]
    assert planner_lattice(0.0).tolist() == [float(x) for x in range(0, 101, 10)]


def test_large_lattices_use_coordinate_ascent_and_beat_the_baselines():
    rng = np.random.default_rng(7)
    skills = sample_gb2(rng, 30, **GB2_ACS_2023) / REFERENCE_HOURS
    config = EconomyConfig(num_workers=30)  # us_federal: 7 brackets, 11^7 lattice points
    cutoffs = config.cutoffs()
    best = stackelberg_optimum(skills, cutoffs, config)
    assert not best.exhaustive and best.evaluations < 20_000
    for rates in ([50.0] * 7, [10, 12, 22, 24, 32, 35, 37], [25.0] * 7):
        assert best.swf >= fixed_schedule_welfare(skills, cutoffs, rates, config)["swf"]
