"""Plug-ins: an installed package adds a world, an agent, a trainer and a campaign kind through entry points,
without editing Agora; the CLI lists them with their origin, scenario and campaign files use them, and the
conformance test checks them without being edited (and fails a broken one)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.plugin_toy import install

SCENARIO = """\
name: toy
world: {id: guess, tries: 4}
agents:
  player: {policy: always_seven}
episodes: 6
seed: 3
"""

CAMPAIGN = """\
kind: count
name: toy-count
iterations: 2
episodes: 3
checkpoint: {dir: CHECKPOINTS}
"""


@pytest.fixture
def plugin(tmp_path, tracking_uri):
    """Environment variables of a process in which the throwaway package `agora-toy 0.1` is installed."""
    site = install(tmp_path / "site")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MLFLOW_TRACKING_URI": tracking_uri}


def agora(env, *args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "agora.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_plugin_world_and_agent_play_a_scenario_file(tmp_path, plugin):
    listed = agora(plugin, "worlds")
    assert listed.returncode == 0 and "guess" in listed.stdout and "agora-toy 0.1" in listed.stdout, (
        listed.stdout + listed.stderr
    )
    agents = agora(plugin, "agents", "--world", "guess")
    assert "always_seven" in agents.stdout and "(world: guess)" in agents.stdout and "agora-toy 0.1" in agents.stdout
    assert "saez" not in agents.stdout  # another world's baseline
    kinds = agora(plugin, "trainers")
    assert "count" in kinds.stdout and "counting" in kinds.stdout
    file = tmp_path / "toy.yaml"
    file.write_text(SCENARIO)
    assert agora(plugin, "validate", str(file)).returncode == 0
    run = agora(plugin, "run", str(file))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6 episodes" in run.stdout and "hit" in run.stdout
    campaign = tmp_path / "count.yaml"
    campaign.write_text(CAMPAIGN.replace("CHECKPOINTS", str(tmp_path / "ck")))
    trained = agora(plugin, "train", str(campaign))
    assert trained.returncode == 0 and "iteration 1: hits" in trained.stdout, trained.stdout + trained.stderr
    assert sorted(p.name for p in (tmp_path / "ck").glob("iter-*")) == ["iter-000000", "iter-000001"]


def test_without_the_plugin_its_ids_are_unknown(tmp_path, tracking_uri):
    file = tmp_path / "toy.yaml"
    file.write_text(SCENARIO)
    out = agora({**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}, "validate", str(file))
    assert out.returncode == 2 and "unknown world 'guess'" in out.stderr


def test_the_conformance_test_checks_plugin_units_and_fails_a_broken_one(plugin):
    select = ["-k", "guess or always_seven or count"]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_conformance.py"),
        "-rA",
        *select,
    ]
    ok = subprocess.run(cmd, cwd=ROOT, env=plugin, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout[-3000:]
    for test in (
        "test_world_passes_the_pettingzoo_api_and_seed_tests[guess]",
        "test_world_text_interface_round_trips_on_legal_actions[guess]",
        "test_agent_defaults_validate_and_it_plays_its_seats[always_seven@guess]",
        "test_trainer_defaults_validate_and_it_updates[counting]",
        "test_campaign_kind_validates_its_files_and_runs_its_example[count]",
    ):
        assert f"PASSED tests/test_conformance.py::{test}" in ok.stdout, test
    broken = subprocess.run(
        cmd[:-2] + ["-k", "guess"],
        cwd=ROOT,
        env={**plugin, "AGORA_TOY_BROKEN": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (
        broken.returncode == 1
        and "FAILED tests/test_conformance.py::test_world_text_interface_round_trips_on_legal_actions[guess]"
        in broken.stdout
    )


def test_a_broken_plugin_is_named_not_a_traceback(tmp_path, tracking_uri):
    """Plug-ins that cannot be imported, name no attribute or are no `Policy`: the listing names each with its origin
    and shows the rest, other scenarios still run, a file that uses one gets one message and exit code 2; a name given
    twice is refused with both origins."""
    broken = (
        "\n[agora.agents]\nhaunted = agora_toy_gone:Ghost\nno_colon = agora_toy\nnot_a_policy = agora_toy:GuessConfig\n"
        "\n[agora.trainers]\ngrpo = agora_toy:CountingTrainer\n"
    )
    site = install(tmp_path / "site", broken)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "MLFLOW_TRACKING_URI": tracking_uri}
    listed = agora(env, "agents")
    assert listed.returncode == 0 and "Traceback" not in listed.stdout + listed.stderr
    assert "haunted" in listed.stderr and "agora-toy 0.1" in listed.stderr and "always_seven" in listed.stdout
    assert "no_colon" in listed.stderr and "is not a Policy subclass" in listed.stderr
    scripted = agora(env, "run", str(ROOT / "scenarios" / "negotiation_scripted.yaml"), "--no-track", "--episodes", "2")
    assert scripted.returncode == 0, scripted.stderr
    file = tmp_path / "haunted.yaml"
    file.write_text(SCENARIO.replace("always_seven", "haunted"))
    out = agora(env, "validate", str(file))
    assert out.returncode == 2 and "cannot be loaded" in out.stderr and "Traceback" not in out.stderr
    out = agora(env, "validate", str(ROOT / "scenarios" / "campaigns" / "negotiation_grpo.yaml"))  # a second `grpo`
    assert (
        out.returncode == 2 and "2 registered trainers are named 'grpo'" in out.stderr and "agora-toy 0.1" in out.stderr
    )
