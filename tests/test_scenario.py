"""Scenario files: every kind of bad input gets a clear message (file, key path, fix) and exit code 2."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from agora.cli import app
from agora.errors import ScenarioError
from agora.scenario import load_scenario
from tests.conftest import SCENARIOS

GOOD = """\
name: t
world: {id: negotiation, max_turns: 6}
agents:
  alice: {policy: greedy, accept_ratio: 0.7}
  bob: {policy: fair}
episodes: 3
seed: 1
"""

runner = CliRunner()


def write(tmp_path, text: str):
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_resolves_defaults_and_params(tmp_path):
    resolved = load_scenario(write(tmp_path, GOOD))
    assert resolved.world_config.max_turns == 6
    assert resolved.world_config.total_value == 10  # default filled in
    assert resolved.seats["alice"].config.accept_ratio == 0.7
    assert resolved.seats["bob"].entry.name == "fair"
    config = resolved.resolved_config()
    assert config["agents"]["bob"]["target_ratio"] == 0.5 and config["concurrency"] == 8


def test_glob_pattern_and_exact_name_precedence(tmp_path):
    text = GOOD.replace(
        "  alice: {policy: greedy, accept_ratio: 0.7}\n  bob: {policy: fair}\n",
        "  '*': {policy: fair}\n  bob: {policy: random}\n",
    )
    seats = load_scenario(write(tmp_path, text)).seats
    assert seats["alice"].entry.name == "fair" and seats["bob"].entry.name == "random"


BAD = [
    # (what, file text or replacement, expected fragments of the message)
    ("bad yaml", "name: t\nworld: {id: negotiation\nepisodes: 3\n", ["invalid YAML", "line"]),
    ("empty file", "", ["the file is empty"]),
    ("not a mapping", "- a\n- b\n", ["expected a mapping"]),
    (
        "unknown world",
        GOOD.replace("id: negotiation", "id: negotiaton"),
        ["world.id", "unknown world 'negotiaton'", "did you mean 'negotiation'"],
    ),
    (
        "unknown agent",
        GOOD.replace("policy: greedy", "policy: gready"),
        ["agents.alice.policy", "unknown agent 'gready'", "did you mean 'greedy'"],
    ),
    ("wrong type", GOOD.replace("episodes: 3", "episodes: many"), ["episodes", "valid integer", "'many'"]),
    ("missing field", GOOD.replace("episodes: 3\n", ""), ["episodes", "required key is missing"]),
    ("extra field", GOOD + "episode: 4\n", ["episode", "unknown key", "did you mean 'episodes'"]),
    (
        "out of range",
        GOOD.replace("accept_ratio: 0.7", "accept_ratio: 7"),
        ["agents.alice.accept_ratio", "less than or equal"],
    ),
    ("world param out of range", GOOD.replace("max_turns: 6", "max_turns: 0"), ["world.max_turns"]),
    (
        "unknown world param",
        GOOD.replace("max_turns: 6", "max_turn: 6"),
        ["world.max_turn", "unknown key", "did you mean 'max_turns'"],
    ),
    (
        "unknown agent param",
        GOOD.replace("bob: {policy: fair}", "bob: {policy: fair, target_ration: 0.4}"),
        ["agents.bob.target_ration", "did you mean 'target_ratio'"],
    ),
    (
        "unknown seat",
        GOOD.replace("episodes:", "  carol: {policy: fair}\nepisodes:"),
        ["agents.carol", "no seat matches 'carol'", "alice, bob"],
    ),
    ("seat without agent", GOOD.replace("  bob: {policy: fair}\n", ""), ["seat 'bob'", "has no agent"]),
    ("negative seed", GOOD.replace("seed: 1", "seed: -1"), ["seed", "greater than or equal to 0"]),
    ("bad tracking key", GOOD + "tracking: {experimnt: x}\n", ["tracking.experimnt", "did you mean 'experiment'"]),
]


@pytest.mark.parametrize("what,text,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_explained(tmp_path, what, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{what}: {fragment!r} not in {message!r}"
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and fragments[0] in result.output


def test_missing_file(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "file not found" in result.output


def test_invalid_file_writes_nothing_to_mlflow(tmp_path, tracking_uri):
    path = write(tmp_path, GOOD.replace("policy: greedy", "policy: gready"))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert not (tmp_path / "mlruns").exists()


def test_shipped_scenarios_validate():
    files = sorted(SCENARIOS.rglob("*.yaml"))
    assert files
    result = runner.invoke(app, ["validate", *map(str, files)])
    assert result.exit_code == 0, result.output


def test_registry_listings():
    worlds = runner.invoke(app, ["worlds"])
    assert worlds.exit_code == 0 and "negotiation" in worlds.output and "max_turns" in worlds.output
    agents = runner.invoke(app, ["agents", "--world", "negotiation"])
    assert agents.exit_code == 0 and all(
        name in agents.output for name in ("llm", "greedy", "fair", "random", "temperature")
    )
    unknown = runner.invoke(app, ["agents", "--world", "chess"])
    assert unknown.exit_code == 2 and "unknown world 'chess'" in unknown.output


def test_reader_reads_json_like_values():
    """YAML 1.2 floats (`1e-4`), dates kept as text, merge keys that may be overridden."""
    from agora.scenario import parse_yaml

    data = parse_yaml("lr: 1e-4\nbig: 2E3\nday: 2024-01-01\nbase: &b {x: 1, y: 2}\nmerged: {<<: *b, y: 3}\n")
    assert data == {
        "lr": 1e-4,
        "big": 2000.0,
        "day": "2024-01-01",
        "base": {"x": 1, "y": 2},
        "merged": {"x": 1, "y": 3},
    }


def test_strict_validation_keeps_what_json_would_fill(tmp_path):
    """Strict, but as JSON: an int fills a float, a list fills a tuple (matrix payoffs)."""
    text = GOOD.replace("accept_ratio: 0.7", "accept_ratio: 1")
    assert load_scenario(write(tmp_path, text)).seats["alice"].config.accept_ratio == 1.0
    custom = (
        "name: t\nworld: {id: matrix, game: custom, actions: [a, b], payoffs: [[[1, 0], [0, 1]], [[0, 1], [1, 0]]]}\n"
    )
    resolved = load_scenario(write(tmp_path, custom + "agents: {'*': {policy: mixed}}\nepisodes: 1\n"))
    assert resolved.world_config.payoffs[0][1] == (0.0, 1.0)


def test_json_reader_limits():
    from agora.scenario import MAX_DEPTH, parse_json

    assert parse_json('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    for text, fragment in [
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "levels deep"),
        ("[" * 100_000 + "]" * 100_000, "levels deep"),
        ("1" * 5000, "5,000 digits"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": ', "not JSON"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            parse_json(text)


def test_long_input_is_quoted_briefly(tmp_path):
    """A message quotes a few dozen characters of a bad value, never the value (a 1 MB name here)."""
    result = runner.invoke(
        app, ["validate", str(write(tmp_path, GOOD.replace("seed: 1", f"seed: [{'x' * 1_000_000}]")))]
    )
    assert result.exit_code == 2 and "seed" in result.output and len(result.output) < 1000
