"""Bad files and paths: each is one clear message, exit code 2, no traceback, nothing in MLflow, quickly.

Every case goes through the real CLI in-process (`agora run`, `train` or `validate`) with a temporary
MLflow store (`tracking_uri`) in a temporary working folder; the store must not even be created.
Model cases use broken copies of the tiny model (`tiny_model_dir`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agora.cli import app

runner = CliRunner()
SECONDS_PER_CASE = 2.0  # reading and validating a file
SECONDS_PER_LOAD = 5.0  # a case that tries to load a model

SCENARIO = """\
name: t
world: {id: matrix, rounds: 2}
agents:
  '*': {policy: mixed}
episodes: 2
"""
CAMPAIGN = """\
kind: psro
name: c
world: {id: matrix, rounds: 2}
population:
  '*':
    rock: {policy: mixed, probs: [1, 0, 0]}
iterations: 2
"""


def alias_bomb(levels: int = 9) -> str:
    """The billion laughs: 9 aliases per level, `levels` levels (9**9 = 387,420,489 strings expanded)."""
    lines = ['  - &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def scenario_with(key: str, value: str) -> str:
    return SCENARIO.replace("episodes: 2\n", f"{key}: {value}\nepisodes: 2\n")


# (case id, command, file name, file bytes or text, fragments the message must hold)
FILE_CASES = [
    ("alias bomb in description", "run", "s.yaml", SCENARIO + "description:\n" + alias_bomb(), ["alias"]),
    (
        "alias bomb in campaign name",
        "train",
        "c.yaml",
        CAMPAIGN.replace("name: c\n", "bombs:\n" + alias_bomb() + "name: *l9\n"),
        ["alias"],
    ),
    (
        "alias bomb in a world parameter",
        "run",
        "s.yaml",
        SCENARIO.replace("world: {id: matrix, rounds: 2}", "world:\n  id: matrix\n  payoffs:\n" + alias_bomb()),
        ["alias"],
    ),
    ("non-UTF-8 campaign", "train", "c.yaml", CAMPAIGN.encode().replace(b"name: c", b"name: c\xff"), ["UTF-8"]),
    ("non-UTF-8 scenario", "run", "s.yaml", SCENARIO.encode("utf-16"), ["UTF-8"]),
    ("nested 10,000 deep", "run", "s.yaml", scenario_with("description", nested(10_000)), ["levels deep"]),
    (
        "block nested 200 deep",
        "validate",
        "s.yaml",
        SCENARIO.replace("rounds: 2}", "rounds: 2, x: {a: 1}}") + "".join(f"{'  ' * i}k{i}:\n" for i in range(200)),
        ["levels deep"],
    ),
    (
        "5,000-digit integer",
        "run",
        "s.yaml",
        SCENARIO.replace("episodes: 2", "episodes: " + "9" * 5000),
        ["5,000 digits"],
    ),
    ("duplicate key", "run", "s.yaml", SCENARIO + "episodes: 3\n", ["duplicate key 'episodes'", "line 6", "line 5"]),
    (
        "duplicate nested key",
        "validate",
        "s.yaml",
        SCENARIO.replace("rounds: 2}", "rounds: 2, rounds: 3}"),
        ["duplicate"],
    ),
    ("episodes: true", "run", "s.yaml", SCENARIO.replace("episodes: 2", "episodes: true"), ["episodes", "integer"]),
    ("episodes: '2'", "run", "s.yaml", SCENARIO.replace("episodes: 2", "episodes: '2'"), ["episodes", "integer"]),
    ("seed: 1.5", "run", "s.yaml", scenario_with("seed", "1.5"), ["seed", "integer"]),
    (
        "campaign iterations: true",
        "train",
        "c.yaml",
        CAMPAIGN.replace("iterations: 2", "iterations: true"),
        ["iterations"],
    ),
    ("world parameter rounds: '2'", "run", "s.yaml", SCENARIO.replace("rounds: 2", "rounds: '2'"), ["world.rounds"]),
    (
        "matrix payoff .nan",
        "run",
        "s.yaml",
        SCENARIO.replace(
            "world: {id: matrix, rounds: 2}",
            "world: {id: matrix, game: custom, actions: [a, b], payoffs: [[[1, 1], [.nan, 0]], [[0, 0], [1, 1]]]}",
        ),
        ["finite"],
    ),
    (
        "matrix payoff .inf",
        "run",
        "s.yaml",
        SCENARIO.replace(
            "world: {id: matrix, rounds: 2}",
            "world: {id: matrix, game: custom, actions: [a, b], payoffs: [[[1, 1], [-.inf, 0]], [[0, 0], [1, 1]]]}",
        ),
        ["finite"],
    ),
    ("name with ANSI escapes", "run", "s.yaml", SCENARIO.replace("name: t", 'name: "\\e[31mred\\e[0m"'), ["printable"]),
    ("campaign name with a newline", "train", "c.yaml", CAMPAIGN.replace("name: c", 'name: "a\\nb"'), ["printable"]),
    ("binary tag", "run", "s.yaml", scenario_with("description", "!!binary aGk="), ["!!binary"]),
    ("recursive alias", "run", "s.yaml", scenario_with("description", "&a [*a]"), ["alias"]),
]


def problems_scenario(problems: Path) -> str:
    return (
        f"name: t\nworld: {{id: deferral, problems_file: '{problems}'}}\n"
        "agents:\n  'agent_*': {policy: never_defer}\n  expert: {policy: simulated}\nepisodes: 1\n"
    )


PROBLEM_CASES = [
    ("problems line nested 100,000 deep", '{"question": "q", "answer": ' + nested(100_000) + "}\n", ["levels deep"]),
    ("problems line with a huge integer", '{"question": "q", "answer": ' + "7" * 5000 + "}\n", ["digits"]),
    ("problems line with a duplicate key", '{"question": "q", "answer": 1, "answer": 2}\n', ["duplicate key"]),
    ("problems file not UTF-8", b'{"question": "q\xff", "answer": 1}\n', ["UTF-8"]),
    ("problems difficulty true", '{"question": "q", "answer": 1, "difficulty": true}\n', ["difficulty"]),
]


@pytest.fixture(scope="module", autouse=True)
def base_files_are_valid(tmp_path_factory):
    """The files every case breaks are valid as they are (this also imports what they use, outside the timing)."""
    folder = tmp_path_factory.mktemp("base")
    for name, text in (("s.yaml", SCENARIO), ("c.yaml", CAMPAIGN)):
        (folder / name).write_text(text)
    result = runner.invoke(app, ["validate", str(folder / "s.yaml"), str(folder / "c.yaml")])
    assert result.exit_code == 0, result.output


@pytest.fixture
def workdir(tmp_path, monkeypatch, tracking_uri):
    """A fresh working folder (checkpoints land here) with the temporary MLflow store as the default."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(
    workdir: Path, command: str, name: str, content: str | bytes, fragments: list[str], limit: float = SECONDS_PER_CASE
) -> None:
    """Run `agora <command> <file>` and check: exit 2, one error (and its hint), the fragments, no traceback,
    no MLflow store and no checkpoint folder created, within the time bound."""
    path = workdir / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.perf_counter()
    result = runner.invoke(app, [command, str(path)])
    elapsed = time.perf_counter() - start
    output = result.output.replace(str(path), "<file>")  # fragments must not match the file's own name
    assert result.exit_code == 2, output
    assert "Traceback" not in output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in output.splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if line.startswith(("error:", "invalid:")))
    assert len(lines) - first <= 2 and all(line.startswith("loading ") for line in lines[:first]), output
    assert len(output) < 1000 and "\x1b" not in output, output  # never the input repeated back, no raw escapes
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in {output!r}"
    assert not (workdir / "mlruns").exists() and not (workdir / "checkpoints").exists()
    assert elapsed < limit, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("what,command,name,content,fragments", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_file(workdir, what, command, name, content, fragments):
    invoke(workdir, command, name, content, fragments)


@pytest.mark.parametrize("what,content,fragments", PROBLEM_CASES, ids=[c[0] for c in PROBLEM_CASES])
def test_bad_problems_file(workdir, what, content, fragments):
    problems = workdir / "problems.jsonl"
    problems.write_bytes(content if isinstance(content, bytes) else content.encode())
    invoke(workdir, "run", "s.yaml", problems_scenario(problems), ["problems.jsonl", *fragments])


def broken_copies(tiny: Path, root: Path) -> dict[str, Path]:
    """Copies of the tiny model, each broken one way."""

    def copy(i: int) -> Path:  # folders named so that no message fragment matches their names
        return Path(shutil.copytree(tiny, root / f"model-{i}"))

    out = {
        name: copy(i) for i, name in enumerate(("garbage", "truncated", "wrong shape", "no tokenizer", "bad config"))
    }
    (out["garbage"] / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    weights = out["truncated"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = json.loads((tiny / "config.json").read_text())
    (out["wrong shape"] / "config.json").write_text(json.dumps({**config, "hidden_size": 64, "intermediate_size": 96}))
    for file in ("tokenizer.json", "tokenizer_config.json"):
        (out["no tokenizer"] / file).unlink()
    (out["bad config"] / "config.json").write_text('{"model_type": "llama", "model_type": "gpt2"}')
    out["no weights"] = root / "model-5"
    out["no weights"].mkdir()
    shutil.copy(tiny / "config.json", out["no weights"])
    shutil.copy(tiny / "tokenizer.json", out["no weights"])
    out["garbage gguf"] = root / "model-6.gguf"
    out["garbage gguf"].write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 8)
    out["gguf folder"] = root / "model-7"
    out["gguf folder"].mkdir()
    (out["gguf folder"] / "m.gguf").write_bytes(b"not a gguf at all")
    return out


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    return broken_copies(Path(tiny_model_dir), tmp_path_factory.mktemp("broken-models"))


MODEL_CASES = [
    ("garbage", ["model.safetensors", "not a safetensors file"]),
    ("truncated", ["cut off"]),
    ("wrong shape", ["do not fit config.json", "[49152, 32]"]),
    ("no tokenizer", ["no tokenizer"]),
    ("bad config", ["config.json", "duplicate key"]),
    ("no weights", ["no weights"]),
    ("garbage gguf", ["not a GGUF model"]),
    ("gguf folder", ["not a GGUF model"]),
]


def llm_scenario(model: str, device: str = "cpu") -> str:
    agent = f"{{policy: llm, model: '{model}', device: {device}}}"
    return f"name: t\nworld: {{id: matrix, rounds: 1}}\nagents:\n  '*': {agent}\nepisodes: 1\n"


@pytest.mark.parametrize("what,fragments", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_broken_model_is_named_before_any_run(workdir, broken_models, what, fragments):
    model = broken_models[what]
    limit = SECONDS_PER_LOAD if what == "wrong shape" else SECONDS_PER_CASE  # found only by loading
    invoke(workdir, "run", "s.yaml", llm_scenario(str(model)), [model.name, *fragments], limit)


def test_a_path_that_is_no_model_does_not_validate(workdir):
    hostile = "../" * 32 + "etc/passwd"  # reaches /etc/passwd from any depth of the test folder (e.g. under xdist)
    invoke(workdir, "validate", "s.yaml", llm_scenario(hostile), ["not a .gguf model"])
    invoke(workdir, "validate", "s.yaml", llm_scenario("../../../../no/such/model"), ["not found"])


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")
def test_a_device_this_machine_lacks_is_refused_at_validation(workdir, tiny_model_dir):
    invoke(workdir, "run", "s.yaml", llm_scenario(tiny_model_dir, "mps"), ["mps", "use device: cpu"])
    if not torch.cuda.is_available():
        invoke(workdir, "validate", "s.yaml", llm_scenario(tiny_model_dir, "cuda:1"), ["no CUDA GPU"])


def test_markup_in_a_name_is_printed_as_text(workdir):
    """A name is the user's text: `[/]` or `[bold]` in it is printed as is, never read as rich markup."""
    path = workdir / "s.yaml"
    path.write_text(SCENARIO.replace("name: t", "name: 'x[/] [bold]y'"))
    result = runner.invoke(app, ["run", str(path), "--no-track"])
    assert result.exit_code == 0, result.output
    assert "x[/] [bold]y: 2 episodes" in result.output
