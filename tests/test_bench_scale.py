"""bench/scale.py at a tiny size: its sides play the same episodes, warm-ups play none of the measured ones,
start-up is reported apart from the timed play, and the projection is the model it prints. One local Ray
instance for the module (about 5 s)."""

from __future__ import annotations

import argparse

import pytest

from agora.run import start_rollout
from agora.scenario import load_scenario
from bench import scale

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance(ray_address):
    """The module's local Ray instance (`ray_address` in tests/conftest.py)."""
    yield


def test_warm_ups_play_none_of_the_measured_episodes(monkeypatch):
    warmed: list[list[int]] = []
    warm_up = scale.warm_up

    def recorded(rollout, scenario, indices):
        warm_up(rollout, scenario, indices)
        warmed.append(sorted({e.index for e in rollout.episodes}))  # what the warm-up played (local side)

    monkeypatch.setattr(scale, "warm_up", recorded)

    def side(warmup: int):
        return scale.play_side(scale.scenario_for(scale.SCRIPTED, 6, scale.Side("local", 0)), 6, warmup)

    cold, warm = side(0), side(3)
    assert warmed == [[], [6, 7, 8]]  # after the measured indices 0-5, none of them
    assert cold.digest == warm.digest and cold.warmup < warm.warmup
    other = load_scenario(scale.SCENARIOS / scale.SCRIPTED, {"seed": 1})
    assert scale.transcript_digest(start_rollout(other).run(6)) != cold.digest  # the digest sees what was played


def test_the_scripted_part_prints_every_figure_the_ratios_and_the_check():
    """Ray sides warm every worker up on indices after the measured ones and still play the local side's
    episodes; start-up is reported apart from the timed play."""
    lines: list[str] = []
    projection = scale.scripted_part(argparse.Namespace(games=6, rounds=1, warmup_games=2), lines.append)
    rounds = [line.split(":")[0].split(maxsplit=2)[2].strip() for line in lines if line.startswith("round ")]
    assert rounds == ["local", "1 worker", "2 workers"]
    assert "every side played the same episodes (transcript digest): yes" in lines
    assert any(line.startswith("2 workers / 1 worker: ") for line in lines)
    assert any(line.startswith("local / 1 worker: ") and "target <= 10%" in line for line in lines)
    startups = [line for line in lines if line.startswith("2 workers: episodes/s")]
    assert startups and float(startups[0].rsplit(" ", 1)[1]) > 0  # start-up + warm-up seconds, printed apart
    assert projection.two_workers > 0 and projection.one_worker > 0 and projection.driver_cpu > 0


def test_the_projection_is_n_times_the_per_worker_rate_capped_by_the_driver():
    projection = scale.Projection("x", two_workers=20.0, driver_cpu=1 / 35, one_worker=12.0)
    assert projection.per_worker == 10.0 and projection.driver_cap == pytest.approx(35.0)
    rows = scale.project(projection.per_worker, projection.driver_cap, [1, 2, 4, 8])
    assert [(n, round(r, 6), bound) for n, r, bound in rows] == [
        (1, 10.0, "workers"),
        (2, 20.0, "workers"),
        (4, 35.0, "driver"),
        (8, 35.0, "driver"),
    ]
    lines: list[str] = []
    scale.projection_part([projection], lines.append)
    assert lines[0].startswith("== PROJECTED, not measured")
    assert lines[-1].split()[:3] == ["128", "|", "35.0"]
