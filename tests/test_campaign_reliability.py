"""`agora train` campaigns under signals, disk faults and hostile names and paths (issue 14).

In-process fault injection on the cheapest campaign (PSRO with the exact oracle on rock-paper-scissors,
three iterations): a real SIGINT sent to this process at a chosen phase (the start, an iteration, a
checkpoint, the end-of-campaign outputs), a second one during clean-up, an OSError (ENOSPC, EROFS)
while a checkpoint is written. Whatever happens the run ends KILLED, FAILED or FINISHED with every
finished iteration logged, and `--resume` completes it into the same run. Every kind shares this
lifecycle (agora/campaign.py's CampaignRunner.run); tests/test_conformance.py resumes each kind's example
whose end was cut short. All tests share one MLflow store (creating one costs seconds) and draw no
figures (matplotlib is most of a tracked PSRO run's time); each test has its own experiment.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agora.campaign import END_TAG, load_campaign
from agora.checkpoint import RunFolder, folder_name
from agora.cli import app
from agora.errors import AgoraError, ScenarioError
from agora.interrupts import interruptible
from agora.tracking import Tracker
from campaigns.psro import PSROCampaign, PSRORunner
from mlflow import MlflowClient
from tests.conftest import SCENARIOS

FILE = SCENARIOS / "campaigns" / "rps_psro.yaml"
CHEAP = {"oracle.id": "exact", "threshold": 1e-6, "episodes_per_cell": 1, "world.rounds": 2}  # 3 iterations
VERSIONS = ["player_0/rock", "player_1/rock", "player_0/br0", "player_1/br0", "player_0/br1", "player_1/br1"]
cli = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def uri(store, monkeypatch) -> str:
    """The shared store, as the process default; figures logged as a placeholder text under their name."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setattr(Tracker, "log_figure", lambda self, figure, name: self.log_text("(figure)", name))
    return store


def psro(tmp_path: Path, **overrides) -> PSROCampaign:
    experiment = tmp_path.name  # one per test
    return load_campaign(FILE, {**CHEAP, "checkpoint.dir": str(tmp_path / "ck"), "tracking.experiment": experiment})


def runs(uri: str, tmp_path: Path) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(tmp_path.name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def steps(uri: str, run_id: str, key: str = "pop/exploitability") -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def artifacts(uri: str, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in MlflowClient(uri).list_artifacts(run_id, folder)}


def signal_self(*_args) -> None:
    """Ctrl-C, as the terminal sends it: SIGINT to this process (agora.interrupts' handler is installed)."""
    os.kill(os.getpid(), signal.SIGINT)


def inject(monkeypatch, phase: str) -> None:
    """A SIGINT at `phase` of the campaign."""
    if phase == "start":  # the run exists; its config is being logged
        log_config = Tracker.log_campaign_config
        monkeypatch.setattr(Tracker, "log_campaign_config", lambda self, *a: (signal_self(), log_config(self, *a)))
    elif phase == "iteration":
        evaluate = PSRORunner.evaluate
        monkeypatch.setattr(
            PSRORunner, "evaluate", lambda self, i, **k: (i == 1 and signal_self(), evaluate(self, i, **k))[1]
        )
    elif phase == "checkpoint":  # while iter-000001's files are written
        save = RunFolder.save
        monkeypatch.setattr(
            RunFolder,
            "save",
            lambda self, i, state, write=None, **k: save(self, i, state, signal_self if i == 1 else write, **k),
        )
    else:  # the end-of-campaign outputs: figures logged, population.json not yet
        log_text = Tracker.log_text
        monkeypatch.setattr(
            Tracker,
            "log_text",
            lambda self, text, name: (name == "population.json" and signal_self(), log_text(self, text, name))[1],
        )


@pytest.mark.parametrize(
    "phase, logged, again, said",
    [
        ("start", [], [0, 1, 2], "the start"),
        ("iteration", [0], [1, 2], "the iterations (after iter-000000)"),
        ("checkpoint", [0, 1], [1, 2], "checkpoint iter-000001; newest complete checkpoint: iter-000000"),
        ("end", [0, 1, 2], [], "the end-of-campaign outputs; newest complete checkpoint: iter-000002"),
    ],
)
def test_a_signal_at_any_phase_ends_the_run_killed_and_resume_completes_it(
    tmp_path, uri, monkeypatch, phase, logged, again, said
):
    with monkeypatch.context() as m, interruptible(), pytest.raises(KeyboardInterrupt):
        inject(m, phase)
        psro(tmp_path).run()
    (run,) = runs(uri, tmp_path)
    run_id = run.info.run_id
    assert run.info.status == "KILLED" and f"interrupted (Ctrl-C or SIGTERM) during {said}" in run.data.tags[END_TAG]
    assert steps(uri, run_id) == logged  # every finished iteration's metrics
    assert json.loads((tmp_path / "ck" / "run.json").read_text())["run_id"] == run_id
    with pytest.raises(AgoraError, match="--resume"):  # a second start never makes a second run
        psro(tmp_path).start()

    ran: list[int] = []
    result = psro(tmp_path).run(resume=True, on_iteration=lambda i, _: ran.append(i))
    (run,) = runs(uri, tmp_path)
    assert result.run_id == run_id and run.info.status == "FINISHED" and ran == again
    assert steps(uri, run_id) == [0, 1, 2] and run.data.tags["agora.stop_reason"] == result.stop_reason == "threshold"
    assert [v.name for v in result.outputs["population"]] == VERSIONS
    assert result.outputs["mixtures"]["player_0"] == pytest.approx([1 / 3] * 3)
    assert {"population.json", "figures"} <= artifacts(uri, run_id) and run.data.params["meta_solver"] == "nash"
    assert {"figures/league.png", "figures/exploitability.png"} <= artifacts(uri, run_id, "figures")
    table = json.loads(open(MlflowClient(uri).download_artifacts(run_id, "meta/strategies.json", str(tmp_path))).read())
    rows = [(row[0], row[2]) for row in table["data"]]  # (iteration, version): an iteration run again is there once
    assert len(rows) == len(set(rows)) and {i for i, _ in rows} == {0, 1, 2}
    assert run.data.tags["mlflow.note.content"].startswith(
        "**psro** campaign · 3 of 8 iterations · stopped on threshold"
    )
    with pytest.raises(AgoraError, match="already finished"):
        psro(tmp_path).start(resume=True)


def test_a_run_killed_before_its_config_was_logged_gets_it_on_resume(tmp_path, uri, monkeypatch):
    def killed(self, config, source):  # as SIGKILL or a signal without Agora's handler leaves it
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(Tracker, "log_campaign_config", killed)
        psro(tmp_path).run()
    (run,) = runs(uri, tmp_path)
    assert run.info.status == "KILLED" and not run.data.params
    result = psro(tmp_path).run(resume=True)
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["meta_solver"] == "nash"
    assert "campaign" in artifacts(uri, result.run_id)


def test_a_second_signal_during_clean_up_cannot_leave_the_run_running(tmp_path, uri, monkeypatch):
    end = Tracker.end
    monkeypatch.setattr(Tracker, "end", lambda self, status="FINISHED": (signal_self(), end(self, status)))
    inject(monkeypatch, "iteration")
    with interruptible(), pytest.raises(KeyboardInterrupt):  # one, not a second one from the clean-up
        psro(tmp_path).run()
    (run,) = runs(uri, tmp_path)
    assert run.info.status == "KILLED" and END_TAG in run.data.tags and steps(uri, run.info.run_id) == [0]


def test_cli_ctrl_c_between_start_and_the_first_iteration_and_again_in_clean_up(tmp_path, uri, monkeypatch):
    file = tmp_path / "c.yaml"
    file.write_text(FILE.read_text().replace("oracle:\n  id: train", "oracle:\n  id: exact"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("agora.cli.run_campaign", signal_self)  # the run exists; the bar is being set up
    end = Tracker.end
    monkeypatch.setattr(Tracker, "end", lambda self, status="FINISHED": (signal_self(), end(self, status)))
    out = cli.invoke(app, ["train", str(file), "--tracking-uri", uri])
    assert out.exit_code == 130 and f"continue with `agora train {file} --resume`" in " ".join(out.output.split())
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("psro").experiment_id], "tags.`agora.campaign` = 'rps-psro'"
    )
    assert run.info.status == "KILLED" and "during the start" in run.data.tags[END_TAG]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_checkpoint_folder_fails_the_run_and_keeps_what_was_saved(tmp_path, uri, monkeypatch, code):
    def fault(folder: Path) -> None:
        (folder / "partial.bin").write_bytes(b"x")
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as m:
        save = RunFolder.save
        m.setattr(
            RunFolder,
            "save",
            lambda self, i, state, write=None, **k: save(self, i, state, fault if i == 1 else write, **k),
        )
        with pytest.raises(AgoraError, match=f"cannot write checkpoint iter-000001 .*{os.strerror(code)}.*iter-000000"):
            psro(tmp_path).run()
    (run,) = runs(uri, tmp_path)
    assert run.info.status == "FAILED" and "failed during checkpoint iter-000001" in run.data.tags[END_TAG]
    assert steps(uri, run.info.run_id) == [0, 1]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["iter-000000", "run.json"]  # no half checkpoint
    result = psro(tmp_path).run(resume=True)  # the disk has room again
    assert result.run_id == run.info.run_id and result.stop_reason == "threshold"
    assert MlflowClient(uri).get_run(result.run_id).info.status == "FINISHED" and steps(uri, result.run_id) == [0, 1, 2]


# --- names and paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, folder",
    [
        ("/tmp/x", "tmp-x"),
        ("../../../../tmp/x", "tmp-x"),
        ("rps psro/v2", "rps-psro-v2"),
        (".hidden", "hidden"),
        ("rps-psro", "rps-psro"),
    ],
)
def test_a_name_becomes_one_folder_under_checkpoints(tmp_path, monkeypatch, name, folder):
    assert folder_name(name) == folder
    monkeypatch.chdir(tmp_path)
    campaign = load_campaign(FILE, {**CHEAP, "name": name})
    assert campaign.checkpoint_dir == Path("checkpoints") / folder
    if name.startswith("../"):
        campaign.run(track=False)
        assert [p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("run.json")] == [("checkpoints", folder)]


@pytest.mark.parametrize("name", ["...", "///", "../..", "¿?"])
def test_a_name_with_nothing_to_name_a_folder_is_refused(name):
    with pytest.raises(ScenarioError, match="no letter or digit") as caught:
        load_campaign(FILE, {**CHEAP, "name": name})
    assert caught.value.path == "name"


@pytest.mark.parametrize(
    "where, message",
    [
        ("/", "is the filesystem root itself"),
        ("~", "is your home folder itself"),
        ("file", "file is a file, not a folder"),
        ("file/ck", "file is a file, not a folder"),
        ("read-only/ck", "cannot write in"),
    ],
)
def test_a_checkpoint_dir_that_cannot_hold_a_campaign_is_refused_before_anything_runs(
    tmp_path, monkeypatch, where, message
):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    Path("file").write_text("not a folder")
    Path("read-only").mkdir()
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: Path(p).name != "read-only" and access(p, mode)
    )  # root writes anywhere
    with pytest.raises(ScenarioError, match=message) as caught:
        load_campaign(FILE, {**CHEAP, "checkpoint.dir": where})
    assert caught.value.path == "checkpoint.dir" and "folder of its own" in caught.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "read-only"]  # nothing written


def test_cli_refuses_the_home_folder_as_checkpoint_dir_with_one_message_and_nothing_in_mlflow(
    tmp_path, uri, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))  # (`dir: /` is refused the same way; home is the safer test)
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "c.yaml"
    file.write_text(
        FILE.read_text().replace("dir: null", "dir: '~'").replace("experiment: psro", f"experiment: {tmp_path.name}")
    )
    for command in (["train", str(file), "--tracking-uri", uri], ["validate", str(file)]):
        out = cli.invoke(app, command)
        assert out.exit_code == 2 and "is your home folder itself" in out.output and "Traceback" not in out.output
    assert runs(uri, tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


def test_a_full_disk_under_torch_save_is_an_oserror(tmp_path):
    """torch's writer reports a full disk as a RuntimeError; a checkpoint's tensors are written through
    memory so that it is the OSError `RunFolder.save` turns into its message (a file-size limit stands in
    for the full disk)."""
    import resource
    import signal

    import torch

    from agora.checkpoint import write_torch

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError):
            write_torch({"w": torch.zeros(10_000)}, tmp_path / "trainer.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
