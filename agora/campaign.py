"""Campaign kinds: the contract `agora train` calls, and the plumbing every kind shares.

A campaign file's top-level `kind:` (default `train`) names a registered kind
(`agora.registry.CAMPAIGNS`, or a plug-in's `agora.campaigns` entry point). A kind is two classes:

- a `CampaignKind` subclass with a pydantic `Config` (the file's keys but `kind`) and an `example`. An instance is a
  resolved campaign file: `resolve(data, source=, text=)` validates it (a `ScenarioError` naming the
  file, the key path and the fix on bad input) and runs the kind's cross-checks; it knows its `name`,
  `iterations`, `checkpoint_dir`, its `describe()` line for `agora validate`, its `resolved_config()`
  (logged as MLflow params), an optional `loading_message()` printed before the slow start, and
  `start(resume=, tracking_uri=, track=) -> CampaignRunner`, which loads models, restores the last
  checkpoint on resume and opens the MLflow run;
- a `CampaignRunner` subclass: `first_iteration`, `tracker`, `resumed_from`, `progress` (metric ->
  label for the progress line), `run(on_iteration) -> CampaignResult` and `summary(result) -> Summary`
  (the table printed at the end).

Every kind checkpoints the same way (`RunFolder.save`): a folder `iter-NNNNNN/` per checkpoint,
written in a staging folder with `state.json` last and renamed into place, so a killed process
leaves only complete checkpoints; `--resume` continues from the newest into the same MLflow run.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import agora
from agora.errors import AgoraError, ScenarioError, in_file
from agora.scenario import TrackingSpec, is_campaign, read_mapping, validate_model

CHECKPOINT_PREFIX = "iter-"
METRIC_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # what a name must be to go into a metric key


# --- the contract -------------------------------------------------------------------------------


class CampaignConfig(BaseModel):
    """The keys every campaign file has; a kind's `Config` extends it (with `iterations` and `checkpoint`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="campaign name: the MLflow run name")
    description: str = ""
    seed: int = Field(0, ge=0, description="root seed: every episode, sampler and initialisation derives from it")
    tracking: TrackingSpec = TrackingSpec()


@dataclass
class Summary:
    """The table `agora train` prints when a campaign ends (the CLI renders it)."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class CampaignResult:
    """What every kind's `run` returns."""

    run_id: str | None
    tracking_uri: str | None
    iterations_done: int = 0
    history: dict[int, dict[str, float]] = field(default_factory=dict)  # iteration -> its metrics
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> held-out evaluation metrics
    checkpoint: Path | None = None  # the newest checkpoint
    stop_reason: str = "budget"  # budget: every iteration ran; or the kind's own reason (e.g. PSRO's threshold)
    outputs: dict[str, Any] = field(default_factory=dict)  # the kind's own results (e.g. PSRO's population)

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.history[max(self.history)] if self.history else {}


class CampaignKind(ABC):
    """A resolved campaign file of one kind (module docstring). Subclasses set `Config` and may
    extend `__init__` with cross-checks that raise `ScenarioError`."""

    # the file's keys besides `kind`: a `CampaignConfig` with `iterations` and `checkpoint`
    Config: ClassVar[type[CampaignConfig]]

    def __init__(self, spec: BaseModel, *, source: str | None = None, text: str | None = None):
        self.spec, self.source, self.text = spec, source, text

    @classmethod
    def resolve(cls, data: dict[str, Any], *, source: str | None = None, text: str | None = None) -> CampaignKind:
        """Validate a campaign file's mapping (without `kind`) into a campaign of this kind."""
        with in_file(source):
            return cls(validate_model(cls.Config, data, prefix="", file=source), source=source, text=text)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def iterations(self) -> int:
        return self.spec.iterations

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.spec.checkpoint.dir or Path("checkpoints") / self.spec.name)

    @classmethod
    @abstractmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        """A small campaign of this kind as a file's mapping: one iteration in seconds on a CPU, with `model`
        wherever an LLM plays (the conformance test runs it; users may start from it)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for `agora validate`: what the campaign runs."""

    @abstractmethod
    def resolved_config(self) -> dict[str, Any]:
        """Everything that determines the campaign, defaults filled in (logged as MLflow params)."""

    def loading_message(self) -> str | None:
        """Printed before `start`, when starting takes a while (loading a model)."""
        return None

    @abstractmethod
    def start(
        self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None
    ) -> CampaignRunner:
        """Build what the campaign runs with, restore the newest checkpoint on `resume`, open the MLflow run."""

    def run(
        self,
        *,
        resume: bool = False,
        tracking_uri: str | None = None,
        track: bool | None = None,
        on_iteration: Callable[[int, dict[str, float]], None] | None = None,
    ) -> CampaignResult:
        """`start(...).run(on_iteration)`: the whole campaign in one call."""
        return self.start(resume=resume, tracking_uri=tracking_uri, track=track).run(on_iteration)


class CampaignRunner(ABC):
    """A started campaign. The base class holds the run folder and the MLflow run every kind needs."""

    progress: ClassVar[dict[str, str]] = {}  # metric key -> label in the per-iteration line (the first also in the bar)

    def __init__(self, campaign: CampaignKind, *, resume: bool):
        self.campaign = campaign
        self.run_folder = RunFolder(campaign.checkpoint_dir, campaign.source, resume=resume)
        self.resumed_from: Path | None = self.run_folder.latest() if resume else None
        self.first_iteration = 0
        self.tracker = None

    def open_run(self, tags: dict[str, str], *, tracking_uri: str | None, track: bool | None) -> None:
        """Open the campaign's MLflow run (or reattach it on resume) unless tracking is off; mark the folder."""
        spec = self.campaign.spec
        if spec.tracking.enabled if track is None else track:
            tags = {
                "agora.campaign": spec.name,
                "agora.seed": str(spec.seed),
                "agora.version": agora.__version__,
                **tags,
            }
            where = self.resumed_from.name if self.resumed_from else "the start"
            self.tracker = self.run_folder.open_tracker(
                tracking_uri or spec.tracking.uri,
                spec,
                tags,
                self.campaign.resolved_config(),
                self.campaign.source,
                where,
            )
        self.run_folder.mark(self.tracker)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker:
            self.tracker.log_step(metrics, step)  # a resumed run skips the steps its killed process logged

    def new_result(self) -> CampaignResult:
        return CampaignResult(
            *((self.tracker.run_id, self.tracker.uri) if self.tracker else (None, None)),
            iterations_done=self.first_iteration,
            checkpoint=self.resumed_from,
        )

    @abstractmethod
    def run(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> CampaignResult:
        """Iterations `first_iteration` .. `iterations - 1` (or until the kind stops), then the final records."""

    def summary(self, result: CampaignResult) -> Summary | None:
        """The table printed when the campaign ends (None: nothing beyond the per-iteration lines)."""
        return None


def load_campaign(path: str | Path, overrides: dict[str, Any] | None = None) -> CampaignKind:
    """Read and validate a campaign file: its `kind:` (default `train`) picks the registered kind.

    `overrides` set keys before validation; dotted keys reach into mappings ("evaluation.episodes").
    """
    from agora.registry import CAMPAIGNS

    data, text, file = read_mapping(path, hint="copy a file in scenarios/campaigns/ to start from")
    if not is_campaign(data) and "agents" in data:
        raise ScenarioError(
            "this is a scenario file (it has `agents:` and no `trainer:` or `kind:`), not a campaign",
            file=file,
            hint=f"play it with `agora run {file}`",
        )
    for key, value in (overrides or {}).items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    kind = data.pop("kind", "train")
    with in_file(file):
        entry = CAMPAIGNS.get(str(kind), path="kind")
    return entry.load().resolve(data, source=file, text=text)


def match_seats(patterns: list[str], seats: list[str], path: str) -> list[str]:
    """Seats matched by names or glob patterns, in the world's order; a pattern that matches none is an error."""
    for i, pattern in enumerate(patterns):
        if not fnmatch.filter(seats, pattern):
            raise ScenarioError(f"no seat matches '{pattern}'; seats: {', '.join(seats)}", path=f"{path}.{i}")
    return [s for s in seats if any(fnmatch.fnmatch(s, p) for p in patterns)]


def check_metric_name(name: str, path: str, what: str = "name") -> None:
    if not METRIC_NAME.fullmatch(name):
        raise ScenarioError(f"{what} {name!r} cannot go in a metric name", path=path, hint="letters, digits, _ . -")


# --- checkpoints --------------------------------------------------------------------------------


def generator_states(policies: dict[str, Any]) -> dict[str, Any]:
    """The state of every numpy/torch generator a policy holds, by seat and attribute name."""
    import torch

    out: dict[str, Any] = {}
    for seat, policy in policies.items():
        for attr, value in vars(policy).items():
            if isinstance(value, np.random.Generator):
                out[f"{seat}.{attr}"] = ("numpy", value.bit_generator.state)
            elif isinstance(value, torch.Generator):
                out[f"{seat}.{attr}"] = ("torch", value.get_state())
    return out


def restore_generators(policies: dict[str, Any], states: dict[str, Any]) -> None:
    for key, (kind, state) in states.items():
        seat, attr = key.split(".", 1)
        generator = getattr(policies[seat], attr, None)
        if generator is None:  # an older checkpoint's generator that policies no longer hold (requests carry seeds)
            continue
        if kind == "numpy":
            generator.bit_generator.state = state
        else:
            generator.set_state(state)


def save_learner(folder: Path, model, trainer, policies: dict[str, Any]) -> None:
    """A learner's part of a checkpoint: LoRA weights (`adapter/`, peft's format), the trainer's state
    (`trainer.pt`) and every generator of `policies` plus torch's global one (`rng.pt`)."""
    import torch

    from agora.lora import save_adapter

    save_adapter(model, folder / "adapter")
    torch.save(trainer.state_dict(), folder / "trainer.pt")
    torch.save({"generators": generator_states(policies), "torch": torch.get_rng_state()}, folder / "rng.pt")


def restore_learner(folder: Path, model, trainer, policies: dict[str, Any]) -> None:
    """Load what `save_learner` wrote into `model`, `trainer` and the generators of `policies`."""
    import torch

    from agora.lora import load_adapter_file

    load_adapter_file(model, folder / "adapter")
    trainer.load_state_dict(torch.load(folder / "trainer.pt", weights_only=False))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    if "generators" not in rng:  # written by Agora 0.1's train kind: the generators alone
        rng = {"generators": rng, "torch": torch.get_rng_state()}
    restore_generators(policies, rng["generators"])
    torch.set_rng_state(rng["torch"])


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").is_file())


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """A campaign's checkpoint folder and its MLflow run, tied by `run.json` so that `--resume`
    continues the same run. Refuses to start over a folder that holds a run, to resume nothing,
    and to resume a run that a live process on this host still writes; a resumed run is tagged
    with how it was left, and runs of the campaign left RUNNING by dead processes are marked killed."""

    def __init__(self, folder: Path, source: str | None, *, resume: bool):
        self.folder, self.run_file, self.resume = folder, folder / "run.json", resume
        if not resume and (checkpoints(folder) or self.run_file.exists() or (folder / "state.json").exists()):
            raise AgoraError(
                f"{folder} already holds this campaign's run; continue it with `agora train {source or ''} --resume`, "
                "or delete the folder (or set checkpoint.dir) to start over"
            )
        if resume and not self.run_file.exists():
            raise AgoraError(f"nothing to resume: no {self.run_file}; start the campaign without --resume")

    def latest(self) -> Path | None:
        """The newest complete checkpoint (Agora 0.1's PSRO kind kept one `state.json` in the folder itself)."""
        found = checkpoints(self.folder)
        return found[-1] if found else self.folder if (self.folder / "state.json").is_file() else None

    def open_tracker(
        self,
        uri: str | None,
        spec: Any,
        tags: dict[str, str],
        config: dict[str, Any],
        source: str | None,
        resumed_from: str,
    ):
        """The campaign's Tracker: on resume the run in run.json (when the first process tracked one),
        else a new run with `tags`, the resolved config and the campaign file."""
        from agora.tracking import Tracker

        run = json.loads(self.run_file.read_text()) if self.resume else {}
        here = {"agora.pid": str(os.getpid()), "agora.host": socket.gethostname()}
        if not run.get("run_id"):
            tracker = Tracker(uri, spec.tracking.experiment or spec.name, spec.name, {**tags, **here})
            tracker.log_campaign_config(config, source)
            return tracker
        tracker = Tracker.attach(uri or run.get("tracking_uri"), run["run_id"])
        pid, host = int(tracker.tags.get("agora.pid", "0")), tracker.tags.get("agora.host")
        if (
            tracker.previous_status == "RUNNING"
            and host == here["agora.host"]
            and pid_alive(pid)
            and pid != os.getpid()
        ):
            raise AgoraError(
                f"the campaign's run {run['run_id']} is still running in process {pid}; stop it before resuming"
            )
        resumes = int(tracker.tags.get("agora.resumes", "0")) + 1
        left = " (left RUNNING by a killed process)" if tracker.previous_status == "RUNNING" else ""
        tracker.set_tags(
            {
                "agora.resumes": str(resumes),
                f"agora.resume.{resumes}": f"was {tracker.previous_status}{left}; from {resumed_from}",
                **here,
            }
        )
        for run_id, other in tracker.running_runs("agora.campaign", spec.name).items():
            if (
                run_id != tracker.run_id
                and other.get("agora.host") == here["agora.host"]
                and not pid_alive(int(other.get("agora.pid", "0")))
            ):
                tracker.mark_killed(
                    run_id,
                    f"left RUNNING by dead process {other.get('agora.pid')}; marked on resuming {tracker.run_id}",
                )
        return tracker

    def mark(self, tracker) -> None:
        """Write run.json: for a new campaign, or a resumed one whose first process did not track a run."""
        if not self.resume or (tracker and not json.loads(self.run_file.read_text()).get("run_id")):
            self.folder.mkdir(parents=True, exist_ok=True)
            run = {"run_id": tracker.run_id, "tracking_uri": tracker.uri} if tracker else {"run_id": None}
            self.run_file.write_text(json.dumps(run))

    def save(
        self,
        iteration: int,
        state: dict[str, Any],
        write: Callable[[Path], None] | None = None,
        *,
        tracker=None,
        keep: int | None = None,
    ) -> Path:
        """Checkpoint `iteration`: `write(folder)` adds the kind's files, then `state.json` (JSON) is written
        last and the folder renamed into place, complete even if the process dies now. Its files are logged
        to MLflow under `checkpoints/`; only the newest `keep` checkpoints stay on disk."""
        staging = self.folder / f".staging-{CHECKPOINT_PREFIX}{iteration:06d}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if write:
            write(staging)
        (staging / "state.json").write_text(json.dumps({"iteration": iteration, **state}))
        final = self.folder / staging.name.removeprefix(".staging-")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        if tracker:
            for path in sorted(final.rglob("*")):
                if path.is_file():
                    tracker.log_artifact(path, str(Path("checkpoints") / path.parent.relative_to(self.folder)))
        if keep:
            for old in checkpoints(self.folder)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(checkpoint: Path) -> dict[str, Any]:
        """The state a checkpoint folder's `state.json` holds."""
        return json.loads((checkpoint / "state.json").read_text())


@contextlib.contextmanager
def ending(tracker):
    """End `tracker`'s run (when there is one) with the block: FINISHED, KILLED on Ctrl-C or SIGTERM
    (the KeyboardInterrupt goes on), FAILED on any other exception."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker:
            tracker.end(status)
