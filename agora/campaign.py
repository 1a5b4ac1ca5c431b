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
  label for the progress line), `iterate(result, on_iteration)`, optionally `finish(result)` (the
  end-of-campaign outputs), `remaining()` and `results_markdown(result)` (its results in the run's
  MLflow description, `overview`), and `summary(result) -> Summary` (the table printed at the end).
  The base class's `run(on_iteration) -> CampaignResult` is the lifecycle every kind shares.

Every kind checkpoints the same way (`self.checkpoint`, agora/checkpoint.py's `RunFolder.save`): a
folder `iter-NNNNNN/` per checkpoint, written in a staging folder with `state.json` last and renamed
into place, so a killed process leaves only complete checkpoints; `--resume` continues from the newest
into the same MLflow run, and completes the end-of-campaign outputs of a campaign killed before them.
A signal or error at any phase ends the run KILLED or FAILED with a message (`END_TAG`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

import agora
from agora.checkpoint import (
    CHECKPOINT_PREFIX,
    RunFolder,
    check_checkpoint_dir,
    folder_name,
    log_checkpoint,
    mark_dead_runs,
)
from agora.errors import AgoraError, ScenarioError, in_file
from agora.execution import ExecutionSpec
from agora.interrupts import uninterrupted
from agora.overrides import apply_overrides, blamed
from agora.scenario import (
    PrintableName,
    TrackingSpec,
    check_kind,
    read_mapping,
    read_overrides,
    validate_model,
)

METRIC_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # what a name must be to go into a metric key
END_TAG = "agora.end"  # why a campaign's run ended KILLED or FAILED, for whoever finds it in MLflow


# --- the contract -------------------------------------------------------------------------------


class CampaignConfig(BaseModel):
    """The keys every campaign file has; a kind's `Config` extends it (with `iterations` and `checkpoint`)."""

    model_config = ConfigDict(extra="forbid")
    name: PrintableName = Field(min_length=1, description="campaign name: the MLflow run name (printable text)")
    description: str = ""
    seed: int = Field(0, ge=0, description="root seed: every episode, sampler and initialisation derives from it")
    tracking: TrackingSpec = TrackingSpec()
    execution: ExecutionSpec = ExecutionSpec()


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
    kind: str = "train"  # its registered name (the file's `kind:`), set by `load_campaign`
    ray_workers: ClassVar[bool] = False  # whether the kind can play on Ray rollout workers (`execution.backend: ray`)
    overrides: tuple[str, ...] = ()  # the command line's `key=value` overrides, as given (tagged on the run)

    def __init__(self, spec: BaseModel, *, source: str | None = None, text: str | None = None):
        self.spec, self.source, self.text = spec, source, text
        if not folder_name(spec.name):
            raise ScenarioError(
                f"name {spec.name[:60]!r} has no letter or digit to name the campaign's checkpoint folder",
                path="name",
                hint="e.g. name: rps-psro",
            )
        check_checkpoint_dir(self.checkpoint_dir)
        if spec.execution.backend == "ray" and not self.ray_workers:
            raise ScenarioError(
                "this campaign kind plays in this process only, not on Ray rollout workers",
                path="execution.backend",
                hint="remove `execution:` or set execution.backend: local",
            )

    @classmethod
    def resolve(cls, data: dict[str, Any], *, source: str | None = None, text: str | None = None) -> CampaignKind:
        """Validate a campaign file's mapping (without `kind`) into a campaign of this kind."""
        with in_file(source):
            return cls(validate_model(cls.Config, data, prefix="", file=source), source=source, text=text)

    @property
    def name(self) -> str:
        return self.spec.name

    def command(self) -> str:
        """The `agora train` command line that runs this campaign: its file and its overrides."""
        return " ".join(["agora train", self.source or "FILE", *map(shlex.quote, self.overrides)])

    @property
    def iterations(self) -> int:
        return self.spec.iterations

    @property
    def checkpoint_dir(self) -> Path:
        """`checkpoint.dir`, or `checkpoints/<the name as a folder name>` in the working directory."""
        given = self.spec.checkpoint.dir
        return Path(given).expanduser() if given else Path("checkpoints") / folder_name(self.spec.name)

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

    def file_config(self) -> dict[str, Any]:
        """The campaign as a file's mapping, `kind` first, overrides applied and defaults filled in (`agora validate
        --print`): it validates again to the same campaign. A kind whose file has nested settings that its spec
        keeps unchecked (a world's, an agent's) fills them in by extending this."""
        return {"kind": self.kind, **self.spec.model_dump(mode="json")}

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
    """A started campaign. The base class holds the run folder and the MLflow run every kind needs, and
    the lifecycle (`run`): the kind's iterations, its end-of-campaign outputs, then the run ends FINISHED and
    run.json records the campaign finished. Whatever stops it first, the run ends KILLED (Ctrl-C, SIGTERM) or
    FAILED with a message in its `agora.end` tag; `--resume` continues from the newest checkpoint, and a
    campaign whose iterations are all done but whose end was cut short only writes its end-of-campaign outputs."""

    progress: ClassVar[dict[str, str]] = {}  # metric key -> label in the per-iteration line (the first also in the bar)
    # prefixes of values kept in an iteration's metrics (history, checkpoints) but logged as a table, not as metrics
    table_only: ClassVar[tuple[str, ...]] = ()

    def __init__(self, campaign: CampaignKind, *, resume: bool):
        self.campaign = campaign
        self.run_folder = RunFolder(campaign.checkpoint_dir, campaign.source, resume=resume)
        finished = self.run_folder.finished  # checked before a kind loads anything
        if finished and (finished["stop_reason"] != "budget" or finished["iterations_done"] >= campaign.iterations):
            more = "; raise `iterations` to run more" if finished["stop_reason"] == "budget" else ""
            raise AgoraError(
                f"the campaign already finished ({finished['stop_reason']}) after {finished['iterations_done']} "
                f"iterations: nothing to resume{more}"
            )
        self.resumed_from: Path | None = self.run_folder.latest() if resume else None
        self.first_iteration = 0
        self.tracker = None
        self.run_tags: dict[str, str] = {}  # the kind's tags of its MLflow run (`agora.kind`, ...)
        self.phase = "the start"  # what the campaign is doing, for the message of a run that ends early
        self.ended = False

    def remaining(self) -> bool:
        """Whether iterations are left to run (False: a resumed campaign has only its end-of-campaign outputs left)."""
        return self.first_iteration < self.campaign.iterations

    def open_run(self, tags: dict[str, str], *, tracking_uri: str | None, track: bool | None) -> None:
        """Open the campaign's MLflow run (or reattach it on resume) unless tracking is off, and write run.json
        the moment the run exists, so that a killed start is resumed, never started twice. Signals are held
        until the run is set up; then one ends it KILLED."""
        from agora.listing import listing_tags

        spec = self.campaign.spec
        self.run_tags = tags
        try:
            with uninterrupted():
                if spec.tracking.enabled if track is None else track:
                    tags = {
                        "agora.campaign": spec.name,
                        "agora.seed": str(spec.seed),
                        "agora.version": agora.__version__,
                        **listing_tags(self.campaign.overrides, list(self.progress)),
                        **tags,
                    }
                    where = self.resumed_from.name if self.resumed_from else "the start"
                    self.tracker, new = self.run_folder.open_tracker(
                        tracking_uri or spec.tracking.uri, spec, tags, where
                    )
                    # a resumed run whose first process was killed before it logged its config gets it now
                    if new or not self.tracker.client.get_run(self.tracker.run_id).data.params:
                        self.tracker.log_campaign_config(self.campaign.resolved_config(), self.campaign.source)
                    if self.resumed_from:  # the killed process may have died logging them
                        log_checkpoint(self.tracker, self.run_folder.folder, self.resumed_from)
                    mark_dead_runs(self.tracker, spec.name)
                else:
                    self.run_folder.mark(None)
        except BaseException as exc:
            self.end(exc)
            raise

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log one step's metrics (but the `table_only` ones)."""
        if self.tracker and self.table_only:
            metrics = {k: v for k, v in metrics.items() if not k.startswith(self.table_only)}
        if self.tracker:
            self.tracker.log_step(metrics, step)  # a resumed run skips the steps its killed process logged

    def checkpoint(
        self,
        iteration: int,
        state: dict[str, Any],
        write: Callable[[Path], None] | None = None,
        *,
        keep: int | None = None,
    ) -> Path:
        """`RunFolder.save` of this campaign's iteration (logged to its MLflow run)."""
        self.phase = f"checkpoint {CHECKPOINT_PREFIX}{iteration:06d}"
        folder = self.run_folder.save(iteration, state, write, tracker=self.tracker, keep=keep)
        self.phase = f"the iterations (after {folder.name})"
        return folder

    def new_result(self) -> CampaignResult:
        """The result to fill: the run, and what a resumed campaign restored (kinds add their history)."""
        return CampaignResult(
            *((self.tracker.run_id, self.tracker.uri) if self.tracker else (None, None)),
            iterations_done=self.first_iteration,
            checkpoint=self.resumed_from,
        )

    @abstractmethod
    def iterate(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        """Iterations `first_iteration` .. `iterations - 1` (or until the kind stops): log each, checkpoint it
        (`checkpoint`), record it in `result` and call `on_iteration(i, metrics)`."""

    def finish(self, result: CampaignResult) -> None:
        """The end-of-campaign outputs (final evaluation, figures, `result.outputs`, `result.stop_reason`); also
        what a resumed campaign whose iterations were all done runs. Logging must be idempotent."""

    def run(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> CampaignResult:
        """The campaign from `first_iteration`: iterations, end-of-campaign outputs, and the run's end."""
        result = self.new_result()
        try:
            if self.remaining():
                self.phase = "the iterations"
                self.iterate(result, on_iteration)
            self.phase = "the end-of-campaign outputs"
            self.finish(result)
            if self.tracker:
                self.tracker.set_tags({"agora.stop_reason": result.stop_reason})
                self.tracker.set_note(self.overview(result))
        except BaseException as exc:
            self.end(exc)
            raise
        with shielded():  # done: a signal now changes nothing
            self.end()
            self.run_folder.mark_finished(result.stop_reason, result.iterations_done)
        return result

    def end(self, exc: BaseException | None = None) -> None:
        """End the MLflow run once: FINISHED, KILLED on Ctrl-C or SIGTERM (`exc` a KeyboardInterrupt or
        SystemExit), FAILED on any other `exc`, saying why in the `agora.end` tag. A second signal during
        this clean-up cannot cut it short (`shielded`)."""
        if self.ended:
            return
        self.ended = True
        if not self.tracker:
            return
        status, message = end_status(exc, self.phase, self.run_folder.latest(), self.campaign.command())
        with shielded():
            if message:
                self.tracker.set_tags({END_TAG: message})
            self.tracker.end(status)

    def summary(self, result: CampaignResult) -> Summary | None:
        """The table printed when the campaign ends (None: nothing beyond the per-iteration lines)."""
        return None

    def results_markdown(self, result: CampaignResult) -> str:
        """The kind's own results for the run's description (e.g. a league's leaderboard), in markdown."""
        return ""

    def overview(self, result: CampaignResult) -> str:
        """The run's MLflow description (markdown): kind, iterations, why it stopped, the newest checkpoint,
        the table `agora train` prints (`summary`), the kind's `results_markdown`, and the last iteration's
        metrics."""
        from agora.tracking import markdown_table

        spec = self.campaign.spec
        kind = self.run_tags.get("agora.kind", type(self.campaign).__name__)
        newest = result.checkpoint.name if result.checkpoint else "none"
        lines = [
            f"**{kind}** campaign · {result.iterations_done} of {self.campaign.iterations} iterations · stopped on "
            f"{result.stop_reason} · seed {spec.seed}"
            + (f" · file `{self.campaign.source}`" if self.campaign.source else ""),
            "",
            f"Checkpoints: `{self.run_folder.folder.resolve()}` (newest: `{newest}`)",
            "",
        ]
        if (table := self.summary(result)) is not None:
            lines += [f"**{table.title}**", "", markdown_table(table.columns, table.rows), ""]
        if results := self.results_markdown(result):
            lines += [results, ""]
        last = result.last_metrics
        if last:
            hidden = ("perf/", *self.table_only)
            shown = [[f"`{k}`", f"{v:.4g}"] for k, v in sorted(last.items()) if not k.startswith(hidden)]
            lines += [f"**Iteration {max(result.history)}** (every iteration: the run's metrics)", ""]
            lines += [markdown_table(["metric", "value"], shown), ""]
        return "\n".join(lines)


def end_status(exc: BaseException | None, phase: str, newest: Path | None, command: str) -> tuple[str, str]:
    """(status, message) of a run that ends with `exc` (None: it finished) during `phase`; `command` ran it."""
    if exc is None:
        return "FINISHED", ""
    kept = f"newest complete checkpoint: {newest.name if newest else 'none'}"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "KILLED", (f"interrupted (Ctrl-C or SIGTERM) during {phase}; {kept}; continue with `{command} --resume`")
    return "FAILED", f"failed during {phase}: {type(exc).__name__}: {str(exc)[:2000]}; {kept}"


@contextlib.contextmanager
def shielded():
    """A clean-up that a second Ctrl-C or SIGTERM cannot cut short: a signal arriving in it is held
    (`agora.interrupts`) and dropped when it has finished, since the campaign is ending anyway."""
    done = False
    try:
        with uninterrupted():
            yield
            done = True
    except KeyboardInterrupt:
        if not done:
            raise


def load_campaign(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> CampaignKind:
    """Read and validate a campaign file: its `kind:` (default `train`) picks the registered kind.

    `overrides` set keys before validation (`key=value` arguments or a mapping; `agora.overrides.apply_overrides`):
    dotted keys reach into mappings ("evaluation.episodes").
    """
    from agora.registry import CAMPAIGNS

    values, given = read_overrides(overrides)
    data, text, file = read_mapping(path, hint="copy a file in scenarios/campaigns/ to start from")
    check_kind(data, "campaign", file)
    with blamed(given) as created:
        # `opponents:` (train campaigns) is keyed by seats and patterns as a scenario's `agents:` is
        created.update(apply_overrides(data, values, file=file, seat_keys=("opponents",)))
        kind = data.pop("kind", "train")
        with in_file(file):
            entry = CAMPAIGNS.get(str(kind), path="kind")
        campaign = entry.load().resolve(data, source=file, text=text)
    campaign.kind, campaign.overrides = entry.name, given
    return campaign


def match_seats(patterns: list[str], seats: list[str], path: str) -> list[str]:
    """Seats matched by names or glob patterns, in the world's order; a pattern that matches none is an error."""
    for i, pattern in enumerate(patterns):
        if not fnmatch.filter(seats, pattern):
            raise ScenarioError(f"no seat matches '{pattern}'; seats: {', '.join(seats)}", path=f"{path}.{i}")
    return [s for s in seats if any(fnmatch.fnmatch(s, p) for p in patterns)]


def check_metric_name(name: str, path: str, what: str = "name") -> None:
    if not METRIC_NAME.fullmatch(name):
        raise ScenarioError(f"{what} {name!r} cannot go in a metric name", path=path, hint="letters, digits, _ . -")
