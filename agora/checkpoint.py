"""A campaign's checkpoint folder: `RunFolder` (run.json ties it to the MLflow run; `iter-NNNNNN/` folders written
whole or not at all), the checks on where it may be, and the learner's part of a checkpoint.

Core plumbing every campaign kind shares (agora/campaign.py's `CampaignRunner` holds one `RunFolder`):
a killed process leaves only complete checkpoints, and `--resume` continues from the newest into the same run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agora.errors import AgoraError, ScenarioError

CHECKPOINT_PREFIX = "iter-"


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
    write_torch(trainer.state_dict(), folder / "trainer.pt")
    write_torch({"generators": generator_states(policies), "torch": torch.get_rng_state()}, folder / "rng.pt")


def write_torch(obj: Any, path: Path) -> None:
    """`torch.save` through memory, so that a full or read-only disk is the OSError it is (torch's own
    writer reports it as a RuntimeError) and `RunFolder.save` can say so."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getbuffer())


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


def folder_name(name: str) -> str:
    """A campaign name as one folder name, the default checkpoint folder's: each run of characters other than
    letters, digits, `_`, `.` and `-` becomes `-`, and leading dots and dashes go, so that no name reaches
    outside `checkpoints/` (`/tmp/x` -> `tmp-x`, `../x` -> `x`; '' when nothing is left)."""
    return re.sub(r"[^\w.\-]+", "-", name).lstrip(".-").rstrip("-")[:100]


def check_checkpoint_dir(folder: Path) -> None:
    """Refuse, before anything runs, a checkpoint folder that cannot hold a campaign: one that is (or lies
    under) a file, that cannot be written, or that is the filesystem root or the home folder itself (a campaign
    writes run.json and iter-*/ into its folder, so it gets a folder of its own)."""
    hint = "point checkpoint.dir at a folder of its own, e.g. checkpoints/<name>"
    where = folder.resolve()
    if where == Path(where.anchor) or where == Path(os.path.expanduser("~")).resolve():
        what = "the filesystem root" if where == Path(where.anchor) else "your home folder"
        raise ScenarioError(f"checkpoint folder {folder} is {what} itself", path="checkpoint.dir", hint=hint)
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise ScenarioError(
            f"checkpoint folder {folder}: {existing} is a file, not a folder", path="checkpoint.dir", hint=hint
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ScenarioError(
            f"checkpoint folder {folder}: cannot write in {existing} (permissions or a read-only filesystem)",
            path="checkpoint.dir",
            hint=hint,
        )


def mark_dead_runs(tracker, campaign: str) -> None:
    """Mark KILLED the campaign's other runs left RUNNING by processes of this host that are gone."""
    host = socket.gethostname()
    for run_id, other in tracker.running_runs("agora.campaign", campaign).items():
        if (
            run_id != tracker.run_id
            and other.get("agora.host") == host
            and not pid_alive(int(other.get("agora.pid", "0")))
        ):
            tracker.mark_killed(
                run_id, f"left RUNNING by dead process {other.get('agora.pid')}; marked by {tracker.run_id}"
            )


def log_checkpoint(tracker, root: Path, checkpoint: Path) -> None:
    """Log a checkpoint folder's files to MLflow under `checkpoints/` (logging one again overwrites it)."""
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file():
            tracker.log_artifact(path, str(Path("checkpoints") / path.parent.relative_to(root)))


class RunFolder:
    """A campaign's checkpoint folder and its MLflow run, tied by `run.json` so that `--resume`
    continues the same run. Refuses to start over a folder that holds a run, to resume nothing,
    and to resume a run that a live process on this host still writes; a resumed run is tagged
    with how it was left. run.json also records when the campaign finished (its end-of-campaign
    outputs written), so that a finished campaign is not resumed and an unfinished one is."""

    def __init__(self, folder: Path, source: str | None, *, resume: bool):
        self.folder, self.run_file, self.resume = folder, folder / "run.json", resume
        if not resume and (checkpoints(folder) or self.run_file.exists() or (folder / "state.json").exists()):
            raise AgoraError(
                f"{folder} already holds this campaign's run; continue it with `agora train {source or ''} --resume`, "
                "or delete the folder (or set checkpoint.dir) to start over"
            )
        if resume and not self.run_file.exists():
            raise AgoraError(f"nothing to resume: no {self.run_file}; start the campaign without --resume")
        self.record: dict[str, Any] = self.read_record() if resume else {}

    def read_record(self) -> dict[str, Any]:
        try:
            record = json.loads(self.run_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AgoraError(f"cannot read {self.run_file} ({exc}); delete the folder to start over") from None
        if not isinstance(record, dict):
            raise AgoraError(f"{self.run_file} is not a campaign's run record; delete the folder to start over")
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        """Write run.json whole or not at all (a temporary file renamed over it)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            staging = self.folder / ".run.json.tmp"
            staging.write_text(json.dumps(record))
            staging.replace(self.run_file)
        except OSError as exc:
            raise AgoraError(f"cannot write {self.run_file}: {exc}") from None
        self.record = record

    @property
    def finished(self) -> dict[str, Any] | None:
        """{stop_reason, iterations_done} once the campaign has finished, else None."""
        return self.record.get("finished")

    def mark_finished(self, stop_reason: str, iterations_done: int) -> None:
        self.write_record({**self.record, "finished": {"stop_reason": stop_reason, "iterations_done": iterations_done}})

    def latest(self) -> Path | None:
        """The newest complete checkpoint (Agora 0.1's PSRO kind kept one `state.json` in the folder itself)."""
        found = checkpoints(self.folder)
        return found[-1] if found else self.folder if (self.folder / "state.json").is_file() else None

    def open_tracker(self, uri: str | None, spec: Any, tags: dict[str, str], resumed_from: str):
        """(the campaign's Tracker, whether its run is new): on resume the run in run.json (when the first
        process tracked one), else a new run with `tags`. run.json names the run before anything is logged to it."""
        from agora.tracking import Tracker

        here = {"agora.pid": str(os.getpid()), "agora.host": socket.gethostname()}
        new = not self.record.get("run_id")
        if new:
            tracker = Tracker(uri, spec.tracking.experiment or spec.name, spec.name, {**tags, **here})
        else:
            tracker = self.reattach(uri, here, resumed_from)
        try:
            self.mark(tracker)
        except BaseException:
            tracker.end("FAILED")
            raise
        return tracker, new

    def reattach(self, uri: str | None, here: dict[str, str], resumed_from: str):
        """The run in run.json, RUNNING again, tagged with how it was left (refused while its process lives)."""
        from agora.tracking import Tracker

        run = self.record
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
        return tracker

    def mark(self, tracker) -> None:
        """Write run.json: the run of a new campaign (or of a resumed one whose first process tracked none),
        and, for a resumed one, that it runs again (not finished)."""
        record = dict(self.record)
        if not self.resume or (tracker and not record.get("run_id")):
            record = {"run_id": tracker.run_id, "tracking_uri": tracker.uri} if tracker else {"run_id": None}
        record.pop("finished", None)
        if record != self.record or not self.run_file.exists():
            self.write_record(record)

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
        to MLflow under `checkpoints/`; only the newest `keep` checkpoints stay on disk. A full or read-only
        disk is an AgoraError that names the newest complete checkpoint (the older ones are untouched)."""
        staging = self.folder / f".staging-{CHECKPOINT_PREFIX}{iteration:06d}"
        final = self.folder / staging.name.removeprefix(".staging-")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            if write:
                write(staging)
            (staging / "state.json").write_text(json.dumps({"iteration": iteration, **state}))
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            newest = self.latest()
            raise AgoraError(
                f"cannot write checkpoint {final.name} in {self.folder}: {exc.strerror or exc}; the newest complete "
                f"checkpoint is {newest.name if newest else 'none'}: free space or fix the folder, then continue "
                "with --resume"
            ) from None
        if tracker:
            log_checkpoint(tracker, self.folder, final)
        if keep:
            for old in checkpoints(self.folder)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(checkpoint: Path) -> dict[str, Any]:
        """The state a checkpoint folder's `state.json` holds."""
        return json.loads((checkpoint / "state.json").read_text())
