"""The `agora` command as a user drives it: --version, env, key=value overrides, validate --print, runs,
wrong-kind files, live progress, quiet output and the `agora ui` hint (issue 16)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import pytest
import yaml
from typer.testing import CliRunner

import agora
from agora.campaign import load_campaign
from agora.cli import Ticks, app, progress_bar, ui_hint
from agora.errors import ScenarioError
from agora.overrides import apply_overrides
from agora.policy import ActResponse, Policy
from agora.rollout import Rollout, ticks_to
from agora.run import build_policies
from agora.scenario import file_kind, is_campaign, load_scenario, parse_override
from mlflow import MlflowClient
from tests.conftest import ROOT, SCENARIOS

runner = CliRunner()
SCRIPTED = str(SCENARIOS / "negotiation_scripted.yaml")
PSRO = str(SCENARIOS / "campaigns" / "rps_psro.yaml")


def run_id(output: str) -> str:
    return output.split("MLflow run ", 1)[1].split()[0]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"agora {agora.__version__}"


def test_env_reports_versions_store_and_model_without_importing_mlflow(tmp_path):
    table = runner.invoke(app, ["env", "--tracking-uri", "sqlite:///x.db"])
    assert table.exit_code == 0
    for label in ("python", "torch", "transformers", "peft", "mlflow", "llguidance", "CUDA", "MPS", "model cache"):
        assert label in table.output
    assert "sqlite:///x.db" in table.output
    code = (
        "import json, sys; from agora.cli import app; app(['env', '--json'], standalone_mode=False); "
        "print(json.dumps('mlflow' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report_text, imported = out.stdout.rsplit("\n", 2)[:2]
    report = json.loads(report_text)
    assert imported == "false"  # mlflow takes ~2 s to import: `agora env` reads its version from metadata only
    assert report["agora"] == agora.__version__ and report["python"] == sys.version.split()[0]
    assert set(report["packages"]) >= {"torch", "transformers", "peft", "mlflow", "pettingzoo", "gymnasium", "typer"}
    assert report["packages"]["mlflow"] and isinstance(report["cuda_available"], bool)
    assert report["embedded_model"]["path"].endswith("smollm2-135m-instruct") and not out.stderr


@pytest.mark.parametrize(
    "arg, key, value",
    [
        ("agents.alice.temperature=0", "agents.alice.temperature", 0),
        ("x=0.5", "x", 0.5),
        ("x=true", "x", True),
        ("x=[1,2]", "x", [1, 2]),
        ("x={a: 1}", "x", {"a": 1}),
        ("x=null", "x", None),
        ("x='0'", "x", "0"),
        ("name=my run", "name", "my run"),
        ("x=a=b", "x", "a=b"),
    ],
)
def test_override_values_are_yaml(arg, key, value):
    assert parse_override(arg) == (key, value)


def test_overrides_reach_into_the_file_and_are_recorded(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["world.max_turns=4", "agents.alice.accept_ratio=0.5", "episodes=50", "tracking.experiment=cli"]
    result = runner.invoke(app, ["run", SCRIPTED, *args, "--seed", "7", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert f"(browse with `agora ui --tracking-uri {uri}`)" in result.output
    assert re.search(r"\d turns", result.output)  # the bar's last frame (not "turns per episode")
    client = MlflowClient(uri)
    run = client.get_run(run_id(result.output))
    params, tags = run.data.params, run.data.tags
    assert params["world.max_turns"] == "4" and params["agents.alice.accept_ratio"] == "0.5"
    assert params["episodes"] == "50" and params["seed"] == "7" and params["agents.bob.target_ratio"] == "0.5"
    assert json.loads(tags["agora.overrides"]) == [*args, "seed=7"]
    resolved = json.loads(open(client.download_artifacts(run.info.run_id, "scenario/resolved.json")).read())
    assert resolved["world"]["max_turns"] == 4 and resolved["episodes"] == 50
    assert client.get_experiment(run.info.experiment_id).name == "cli"

    listed = runner.invoke(app, ["runs", "--tracking-uri", uri])
    assert listed.exit_code == 0 and run.info.run_id[:8] in listed.output and "agreement" in listed.output
    assert "FINISHED" in listed.output
    records = json.loads(runner.invoke(app, ["runs", "--tracking-uri", uri, "--json"]).stdout)
    assert [r["run_id"] for r in records] == [run.info.run_id]
    assert records[0]["metrics"] == {
        key: run.data.metrics[key] for key in ("eval/agreement", "eval/pareto_optimal", "eval/joint_welfare")
    }
    assert records[0]["status"] == "FINISHED" and records[0]["duration_s"] >= 0
    assert records[0]["name"] == "negotiation-greedy-vs-fair" and records[0]["experiment"] == "cli"
    unknown = runner.invoke(app, ["runs", "--tracking-uri", uri, "--experiment", "nope"])
    assert unknown.exit_code == 2 and "no experiment named 'nope'" in unknown.output and "cli" in unknown.output


BAD_OVERRIDES = [
    ("episodes", ["has no '='"]),
    ("=3", ["empty key"]),
    ("world..max_turns=3", ["empty key"]),
    ("episodes=[1,", ["not valid YAML"]),
    ("bogus.deep=1", ["bogus: unknown key", "from the override `bogus.deep=1`"]),
    ("tracking.bogus=1", ["tracking.bogus: unknown key", "enabled, experiment, uri"]),
    ("agents.alice.temperature=0", ["agents.alice.temperature: unknown key; allowed here: accept_ratio"]),
    ("world.max_turns=many", ["world.max_turns: Input should be a valid integer", "from the override"]),
    ("world.id.x=1", ["`world.id` is a str, not a mapping"]),
    ("agents.carol.policy=fair", ["agents.carol: no seat matches 'carol'"]),
    ("episodes=0", ["episodes: Input should be greater than or equal to 1", "from the override `episodes=0`"]),
]


@pytest.mark.parametrize("arg, fragments", BAD_OVERRIDES, ids=[a for a, _ in BAD_OVERRIDES])
def test_a_bad_override_gets_one_message_and_exit_2(tmp_path, tracking_uri, arg, fragments):
    result = runner.invoke(app, ["run", SCRIPTED, arg])
    assert result.exit_code == 2 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert result.output.count("error:") == 1 and not (tmp_path / "mlruns").exists()


def test_validate_prints_resolved_files_with_overrides(tmp_path):
    result = runner.invoke(app, ["validate", SCRIPTED, PSRO, "world.max_turns=3", "seed=5", "--print"])
    assert result.exit_code == 2  # the matrix world has no max_turns: the campaign is invalid, the scenario printed
    assert "world.max_turns: unknown key" in result.stderr and f"ok {SCRIPTED}" in result.stderr
    scenario = yaml.safe_load(result.stdout)
    assert scenario["world"]["max_turns"] == 3 and scenario["seed"] == 5 and scenario["concurrency"] == 64
    assert scenario["agents"]["bob"] == {"policy": "fair", "target_ratio": 0.5}
    (tmp_path / "resolved.yaml").write_text(result.stdout)
    again = load_scenario(tmp_path / "resolved.yaml")  # what --print writes is a scenario file
    assert again.resolved_config() == load_scenario(SCRIPTED, ["world.max_turns=3", "seed=5"]).resolved_config()

    both = runner.invoke(app, ["validate", SCRIPTED, PSRO, "oracle.steps=5", "--print"])
    assert both.exit_code == 2 and "oracle: unknown key" in both.stderr  # scenarios have no oracle
    campaign = runner.invoke(app, ["validate", PSRO, "oracle.steps=5", "world.rounds=3", "--print"])
    assert campaign.exit_code == 0, campaign.output
    config = yaml.safe_load(campaign.stdout)
    assert config["kind"] == "psro" and config["oracle"]["steps"] == 5 and config["world"]["rounds"] == 3
    assert config["oracle"]["learning_rate"] == 1.0  # the file's value is kept beside the override
    malformed = runner.invoke(app, ["validate", SCRIPTED, PSRO, "=1"])
    assert malformed.exit_code == 2 and malformed.output.count("empty key") == 1


EVERY_FILE = sorted([*SCENARIOS.glob("*.yaml"), *(SCENARIOS / "campaigns").glob("*.yaml")])


@pytest.mark.parametrize("file", EVERY_FILE, ids=lambda p: str(p.relative_to(SCENARIOS)))
def test_validate_print_writes_a_file_that_validates_to_the_same_config(tmp_path, file):
    result = runner.invoke(app, ["validate", str(file), "--print"])
    assert result.exit_code == 0, result.output
    saved = tmp_path / "resolved.yaml"
    saved.write_text(result.stdout)
    again = runner.invoke(app, ["validate", str(saved)])
    assert again.exit_code == 0, again.output
    if is_campaign(yaml.safe_load(file.read_text())):
        assert next(iter(yaml.safe_load(result.stdout))) == "kind"  # `kind:` first, as in a campaign file
        assert load_campaign(saved).resolved_config() == load_campaign(file).resolved_config()
    else:
        assert load_scenario(saved).resolved_config() == load_scenario(file).resolved_config()


def test_a_seat_override_under_a_pattern_changes_that_seat_alone():
    werewolf = SCENARIOS / "werewolf.yaml"
    seats = load_scenario(werewolf, ["agents.seer_0.temperature=0"]).seats
    assert seats["seer_0"].key == "seer_0" and seats["seer_0"].config.temperature == 0
    assert seats["seer_0"].config.model == seats["doctor_0"].config.model  # the rest copied from its pattern '*'
    assert {s.config.temperature for a, s in seats.items() if a != "seer_0" and s.key == "*"} == {0.7}
    assert seats["werewolf_0"].entry.name == "rule_based"
    # a seat of no pattern starts empty: its missing policy is blamed on the override that created it
    with pytest.raises(ScenarioError) as err:
        load_scenario(SCRIPTED, ["agents.carol.target_ratio=0.3"])
    assert err.value.path == "agents.carol.policy" and "from the override `agents.carol.target_ratio=0.3`" in str(
        err.value
    )
    with pytest.raises(ScenarioError, match="from the override `agents.sear_0.temperature=0`; did you mean 'seer_0'"):
        load_scenario(werewolf, ["agents.sear_0.temperature=0"])


def test_a_seat_starts_as_a_copy_of_the_first_pattern_that_matches_it():
    data = {"opponents": {"bob": {"policy": "fair"}, "b*": {"policy": "greedy", "t": 1}, "*": {"policy": "x"}}}
    created = apply_overrides(
        data, {"opponents.bill.t": 2, "opponents.bob.t": 3, "world.n": 4}, seat_keys=("opponents",)
    )
    assert data["opponents"]["bill"] == {"policy": "greedy", "t": 2} and data["opponents"]["b*"]["t"] == 1
    assert data["opponents"]["bob"] == {"policy": "fair", "t": 3} and data["world"] == {"n": 4}
    assert created == {"opponents.bill": "opponents.bill.t", "world": "world.n"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["seed=3"], "no files to check"),
        ([SCRIPTED, "world.max_turns"], "override 'world.max_turns' has no '='"),
        ([SCRIPTED, "missing.yaml"], "missing.yaml: file not found"),
    ],
)
def test_validate_without_files_or_with_a_bare_key_says_so(args, message):
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_train_takes_overrides_and_records_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    args = ["iterations=2", "oracle.steps=3", "episodes_per_cell=4", f"checkpoint.dir={tmp_path / 'ck'}"]
    result = runner.invoke(app, ["train", PSRO, *args, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "iteration 1:" in result.output and "iteration 2:" not in result.output
    assert re.search(r"iteration 0: .*, versions \d+[,\n]", result.output)  # a count prints as an integer
    assert f"`agora ui --tracking-uri {uri}`" in result.output
    run = MlflowClient(uri).get_run(run_id(result.output))
    assert json.loads(run.data.tags["agora.overrides"]) == args
    assert run.data.params["oracle.steps"] == "3" and run.data.params["iterations"] == "2"
    listed = runner.invoke(app, ["runs", "--tracking-uri", uri, "--json"])
    assert list(json.loads(listed.stdout)[0]["metrics"]) == ["pop/exploitability", "pop/nash_conv", "pop/size"]
    resume = load_campaign(PSRO, [*args, "name=rps b"]).command()  # what a stopped run's messages tell
    assert resume == f"agora train {PSRO} {' '.join(args)} 'name=rps b'"


def test_runs_on_a_missing_or_empty_store_creates_nothing(tmp_path):
    missing = tmp_path / "none" / "mlflow.db"
    result = runner.invoke(app, ["runs", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 0 and "no store there yet" in result.output
    assert not missing.parent.exists()
    assert json.loads(runner.invoke(app, ["runs", "--tracking-uri", f"sqlite:///{missing}", "--json"]).stdout) == []
    result = runner.invoke(app, ["runs", "--tracking-uri", str(tmp_path / "mlruns")])  # a file store's folder
    assert result.exit_code == 0 and "no store there yet" in result.output and not (tmp_path / "mlruns").exists()
    assert f"start one with `agora run scenarios/negotiation_scripted.yaml --tracking-uri {tmp_path / 'mlruns'}`" in (
        result.output.replace("\n", "")
    )


def test_runs_on_a_plain_path_to_a_database_says_how_to_write_it(tmp_path):
    db = tmp_path / "m.db"
    db.write_bytes(b"")
    for path in (db, tmp_path / "other.db"):  # an existing file, or a name ending .db
        result = runner.invoke(app, ["runs", "--tracking-uri", str(path)])
        assert result.exit_code == 2 and f"write --tracking-uri sqlite:///{path}" in result.output


WRONG_KIND = [
    ("run", "campaigns/negotiation_grpo.yaml", "this is a campaign file: use `agora train`"),
    ("run", "campaigns/rps_psro.yaml", "this is a campaign file: use `agora train`"),
    ("train", "negotiation.yaml", "this is a scenario file: use `agora run`"),
    ("train", "matrix_scripted.yaml", "this is a scenario file: use `agora run`"),
]


@pytest.mark.parametrize("command, file, message", WRONG_KIND)
def test_a_file_of_the_other_kind_is_sent_to_its_command(tmp_path, command, file, message):
    text = (SCENARIOS / file).read_text()
    path = tmp_path / "f.yaml"
    path.write_text("\n".join(line for line in text.splitlines() if not line.startswith(("trainer:", "kind:"))))
    result = runner.invoke(app, [command, str(path)])  # without `trainer:` or `kind:`: told by its other keys
    assert result.exit_code == 2 and message in result.output
    assert "allowed here" not in result.output and "required key" not in result.output


def test_file_kind_from_keys():
    assert file_kind({"name": "x", "agents": {}, "episodes": 3}) == "scenario"
    assert file_kind({"name": "x", "learner": {}, "iterations": 3}) == "campaign"
    assert file_kind({"kind": "psro", "agents": {}}) == "campaign"
    assert file_kind({"name": "x"}) is None and file_kind({"agents": {}, "iterations": 2}) is None
    with pytest.raises(ScenarioError, match="has no '='"):
        load_scenario(SCRIPTED, ["episodes"])


class CountingTokens(Policy):
    """An expensive (model-like) policy that plays action 0 and counts 5 generated tokens per request."""

    expensive = True

    def act(self, requests):
        self.stats.generated_tokens += 5 * len(requests)
        return [ActResponse("", action=0) for _ in requests]


def test_rollouts_report_every_tick():
    scenario = load_scenario(SCENARIOS / "matrix_scripted.yaml", ["world.rounds=4", "concurrency=2"])
    policies = {**build_policies(scenario, skip=["player_1"]), "player_1": CountingTokens(None, seed=0)}
    ids = {"player_0": "mixed", "player_1": "counting"}
    rollout = Rollout(scenario.make_world, policies, ids, seed=0, concurrency=scenario.spec.concurrency)
    ticks, episodes = [], []
    rollout.run(3, on_tick=lambda turns, tokens: ticks.append((turns, tokens)), on_episode=episodes.append)
    assert len(ticks) == 8 > len(episodes) == 3  # 4 rounds of 2 episodes together, then 4 of the third
    assert ticks[0] == (4, 10) and ticks[-1] == (24, 60)  # both seats' turns; 5 tokens per counting turn
    assert all(a < b for a, b in zip(ticks, ticks[1:]))
    heard = []
    with ticks_to(lambda turns, tokens: heard.append(turns)):  # how `agora train` hears rollouts deep in a campaign
        rollout.run(1)
    rollout.run(1)  # outside: nobody listens
    assert heard == [2, 4, 6, 8]


def test_the_bar_shows_turns_tokens_and_rate(monkeypatch):
    clock = iter([0.0, 2.0, 3.0])
    monkeypatch.setattr("agora.cli.time.perf_counter", lambda: next(clock))
    with progress_bar(disable=True) as progress:
        task = progress.add_task("loading x", total=2, live="")
        ticks = Ticks(progress, task, "x")
        ticks(4, 100)
        assert progress.tasks[0].fields["live"] == "4 turns, 100 tokens" and progress.tasks[0].description == "x"
        ticks(8, 300)
        assert progress.tasks[0].fields["live"] == "8 turns, 300 tokens (100 tokens/s)"
        ticks(2, 0)  # a new rollout starts over
        assert progress.tasks[0].fields["live"] == "2 turns"


def test_ui_hint_names_a_store_other_than_the_default(monkeypatch, tmp_path):
    from agora.tracking import default_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui_hint(default_uri()) == "agora ui"
    other = f"sqlite:///{tmp_path / 'a b' / 'mlflow.db'}"
    assert ui_hint(other) == f"agora ui --tracking-uri '{other}'"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)  # plain `agora ui` opens $MLFLOW_TRACKING_URI's store
    assert ui_hint(other) == "agora ui"


def test_train_output_has_no_library_warnings_or_progress_bars(tmp_path, tracking_uri, tiny_model_dir):
    from tests.test_campaign import tiny_campaign

    file = tiny_campaign(tmp_path, tiny_model_dir, iterations=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = ["groups_per_iteration=1", "group_size=2", "world.max_turns=2", "evaluation.episodes=1"]
        small.append("evaluation.opponents={fair: {policy: fair}}")
        result = runner.invoke(app, ["train", str(file), *small, "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert "checkpoint" in result.output  # saved (where transformers would draw its "Writing model shards" bar)
    assert " tokens" in result.output  # the bar's last frame: turns and tokens of the last rollout
    assert [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)] == []
    for foreign in ("Warning", "shards", "it/s", "%|"):
        assert foreign not in result.output, result.output


def test_gguf_conversion_draws_no_bar():
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from agora.models import quiet_gguf

    bar = gguf_utils.tqdm
    with quiet_gguf():
        assert gguf_utils.tqdm(range(3)).disable
    assert gguf_utils.tqdm is bar
