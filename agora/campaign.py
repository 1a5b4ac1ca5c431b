"""Training campaigns: `agora train CAMPAIGN.yaml [--resume]`.

A campaign file names the world, the learning policy (an LLM with LoRA adapters) and the seats it
plays, the fixed policies of the other seats, the trainer and its hyperparameters (the trainer's
own config class validates them: no second list of fields), and the schedule:

    for iteration in 0 .. iterations-1:
        every `evaluation.every` iterations: play held-out seeds against each fixed opponent (eval/*)
        play `groups_per_iteration` initial states x `group_size` rollouts each (the GRPO groups)
        advantages -> one trainer update of the LoRA weights (train/*, perf/*)
        every `checkpoint.every` iterations: LoRA weights, optimizer, RNG states, iteration -> files + MLflow
    a final evaluation after the last iteration.

The learner's rollout policy acts with the very model object the trainer updates, so every
iteration samples from the current weights. `--resume` reloads the last checkpoint and continues
into the same MLflow run (same run id); metric steps are iterations, and steps already logged by
the killed process are not logged twice. Validation errors are `ScenarioError`s, as for scenarios.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

import agora
from agora.errors import AgoraError, ScenarioError, in_file
from agora.policy import Policy
from agora.registry import TRAINERS, WORLDS, Entry
from agora.rollout import Rollout, episode_seed, policy_seed
from agora.scenario import AgentSpec, ResolvedScenario, TrackingSpec, WorldSpec, _validate, resolve_scenario
from agora.trajectory import Episode
from trainers.league import (
    Game,
    League,
    MatchmakingRule,
    PolicyVersion,
    VersionPool,
    VersionRouter,
    league_figure,
    matchmaking_distribution,
    payoff_cells,
    payoff_heatmap,
    payoff_table,
    side_score,
)
from trainers.lora import LoRAConfig

CHECKPOINT_PREFIX = "iter-"
METRIC_NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # what a version or side name may hold: it goes into metric keys


class LearnerSpec(BaseModel):
    """`learner: {seats: [alice], lora: {...}, <llm parameter>: <value>, ...}`."""

    model_config = ConfigDict(extra="allow")
    seats: list[str] = Field(min_length=1, description="seats (names or glob patterns) the learning policy plays; all seats = self-play")
    lora: LoRAConfig = LoRAConfig()


class TrainerSpec(BaseModel):
    """`trainer: {id: grpo, <hyperparameter>: <value>, ...}`; every key but `id` is the trainer's config."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(description="registered trainer id (`agora trainers`)")


class SelfPlaySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seats: list[str] = Field(min_length=1, description="seats (names or glob patterns) played by a frozen snapshot of the learner")
    snapshot_every: int = Field(1, ge=1, le=100_000, description="copy the learner's current weights into the snapshot before every N-th iteration")


class PayoffSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(0, ge=0, le=100_000, description="payoff matrix after every N-th iteration (0: only after the last; always after the last)")
    episodes_per_cell: int = Field(4, ge=1, le=100_000, description="games per (side A version, side B version) cell")
    seed: int = Field(2_000_003, ge=0, description="root seed of the payoff games (every cell plays the same seeds)")
    meta_solver: Literal["nash", "uniform", "replicator", "alpharank"] = Field("nash", description="meta-strategy of the payoff matrix (psro matchmaking, exploitability)")
    bootstrap: int = Field(200, ge=0, le=100_000, description="bootstrap resamples of the Bradley-Terry fit's 95% intervals (0: none)")


class LeagueSpec(BaseModel):
    """`league: {seats: [...], matchmaking: pfsp, members: {...}, ...}`: a population of versions plays the other side."""

    model_config = ConfigDict(extra="forbid")
    seats: list[str] = Field(min_length=1, description="seats (names or glob patterns) played by a version drawn from the league: the other side")
    matchmaking: MatchmakingRule = Field("pfsp", description="how opponents are drawn: latest | uniform | pfsp | psro")
    pfsp_weighting: Literal["hard", "variance"] = Field("hard", description="pfsp: hard (1-x)^p favours opponents the learner loses to; variance x(1-x) even matches")
    pfsp_exponent: float = Field(2.0, gt=0.0, le=100.0, description="pfsp hard weighting's exponent p")
    snapshot_every: int = Field(1, ge=1, le=100_000, description="add a LoRA snapshot of the learner to the league after every N-th iteration (and before the first)")
    max_snapshots: int = Field(8, ge=1, le=10_000, description="snapshots kept in play (older ones stay in the lineage only)")
    members: dict[str, AgentSpec] = Field({}, description="name -> fixed policy (e.g. scripted) in the league from the start")
    swap_sides: bool = Field(False, description="odd iterations: the learner plays league.seats and the league plays learner.seats")
    side_names: list[str] = Field(["a", "b"], min_length=2, max_length=2, description="names of the learner.seats side and the league.seats side in metrics")
    payoff: PayoffSpec = PayoffSpec()


class EvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seats: list[str] | None = Field(None, description="seats the learner plays in evaluation (default: learner.seats, or the first seat when those are all)")
    every: int = Field(1, ge=0, le=100_000, description="evaluate before every N-th iteration (0: only before the first and after the last)")
    episodes: int = Field(16, ge=1, le=1_000_000, description="episodes per fixed opponent")
    seed: int = Field(1_000_003, ge=0, description="root seed of the held-out evaluation episodes (never a training seed)")
    opponents: dict[str, AgentSpec] | None = Field(
        None, description="name -> fixed policy for every non-learner seat (default: the training opponents, named 'train')"
    )


class CheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(1, ge=1, le=100_000, description="checkpoint after every N-th iteration (and after the last)")
    dir: str | None = Field(None, description="checkpoint folder (default: checkpoints/<name> in the working directory)")
    keep: int = Field(2, ge=1, le=1000, description="checkpoints kept on disk (all are logged to MLflow)")


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="campaign name: the MLflow run name")
    description: str = ""
    world: WorldSpec
    learner: LearnerSpec
    opponents: dict[str, AgentSpec] = Field({}, description="non-learner seat (or glob pattern) -> fixed policy")
    self_play: SelfPlaySpec | None = Field(None, description="seats played by frozen snapshots of the learner")
    league: LeagueSpec | None = Field(None, description="seats played by versions drawn from a league (population) of snapshots and members")
    trainer: TrainerSpec
    iterations: int = Field(ge=1, le=1_000_000, description="training iterations (one update each)")
    groups_per_iteration: int = Field(4, ge=1, le=100_000, description="initial states (episode seeds) per iteration")
    group_size: int = Field(8, ge=1, le=4096, description="rollouts of each initial state: the GRPO group")
    evaluation: EvaluationSpec = EvaluationSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    seed: int = Field(0, ge=0, description="root seed of training episodes, sampling, LoRA init")
    concurrency: int = Field(16, ge=1, le=4096, description="episodes stepped together (LLM turns batched across them)")
    max_retries: int = Field(1, ge=0, le=10, description="re-prompts after unparseable text, before a fallback action")
    tracking: TrackingSpec = TrackingSpec()


class CheckpointedFile:
    """A resolved campaign file whose `spec.checkpoint.dir` (default checkpoints/<name>) holds its checkpoints."""

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.spec.checkpoint.dir or Path("checkpoints") / self.spec.name)


@dataclass(frozen=True)
class ResolvedCampaign(CheckpointedFile):
    spec: Campaign
    learner_seats: list[str]
    snapshot_seats: list[str]  # played by a frozen snapshot of the learner (self-play)
    eval_seats: list[str]  # the learner's seats in evaluation
    learner_params: BaseModel  # agents.llm.LLMParams
    train: ResolvedScenario  # world + the training opponents (learner seats hold a placeholder)
    evaluations: dict[str, ResolvedScenario]  # opponent name -> world + that opponent in every other seat
    trainer_entry: Entry
    trainer_config: BaseModel
    source: str | None
    text: str | None
    league_seats: list[str] = field(default_factory=list)  # played by versions drawn from the league
    league_members: dict[str, Any] = field(default_factory=dict)  # member name -> agora.scenario.Seat (its entry and params)

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(mode="json", exclude={"world", "learner", "opponents", "trainer", "evaluation"})
        out["world"] = self.train.world_json()
        out["learner"] = {"seats": self.learner_seats, "lora": self.spec.learner.lora.model_dump(), **self.learner_params.model_dump(mode="json")}
        fixed = set(self.learner_seats) | set(self.snapshot_seats) | set(self.league_seats)
        out["opponents"] = {a: {"policy": s.entry.name, **s.params.model_dump(mode="json")} for a, s in self.train.seats.items() if a not in fixed}
        out["self_play"] = self.spec.self_play.model_dump() if self.spec.self_play else None
        if self.spec.league:
            out["league"] = self.spec.league.model_dump(mode="json", exclude={"members"})
            out["league"]["seats"] = self.league_seats
            out["league"]["members"] = {n: {"policy": s.entry.name, **s.params.model_dump(mode="json")} for n, s in self.league_members.items()}
        else:
            out["league"] = None
        out["trainer"] = {"id": self.trainer_entry.name, **self.trainer_config.model_dump(mode="json")}
        out["evaluation"] = self.spec.evaluation.model_dump(mode="json", exclude={"opponents"})
        out["evaluation"]["opponents"] = {
            name: {a: s.entry.name for a, s in sc.seats.items() if a not in self.eval_seats} for name, sc in self.evaluations.items()
        }
        out["evaluation"]["seats"] = self.eval_seats
        return out


@dataclass(frozen=True)
class CampaignKind:
    """One kind of campaign file (its top-level `kind:` key; default `train`), as `agora train` runs it.

    `resolve(data, source=, text=)` validates the file's mapping (ScenarioError on bad input) into an
    object of class `resolved` with `.spec.name` and `.spec.iterations`; `runner(resolved, resume=, tracking_uri=, track=)`
    builds an object with `.tracker`, `.resumed_from`, `.start` and `.run(on_iteration) -> result`;
    `describe(resolved)` is `agora validate`'s line. Kinds are registered in `agora.registry.CAMPAIGNS`.
    """

    resolved: type  # the class `resolve` returns
    resolve: Callable[..., Any]
    runner: Callable[..., Any]
    describe: Callable[[Any], str]


def load_campaign(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read and validate a campaign file (the same checks and messages as scenario files).

    `overrides` set keys before validation; dotted keys reach into mappings ("evaluation.episodes").
    The file's `kind:` (default `train`) picks the registered campaign kind that validates the rest.
    """
    from agora.registry import CAMPAIGNS

    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ScenarioError("file not found" if not path.exists() else "not a file", file=file)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}", file=file) from None
    if not isinstance(data, dict):
        raise ScenarioError("expected a mapping of keys at the top level", file=file, hint="copy scenarios/campaigns/negotiation_grpo.yaml to start from")
    for key, value in (overrides or {}).items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    data = dict(data)
    kind = data.pop("kind", "train")
    try:
        entry = CAMPAIGNS.get(str(kind), path="kind")
    except ScenarioError as exc:
        raise ScenarioError(exc.message, file=file, path=exc.path, hint=exc.hint) from None
    return entry.load().resolve(data, source=file, text=text)


def _match(patterns: list[str], seats: list[str], path: str) -> list[str]:
    """Seats matched by names or glob patterns, in the world's order."""
    for i, pattern in enumerate(patterns):
        if not fnmatch.filter(seats, pattern):
            raise ScenarioError(f"no seat matches '{pattern}'; seats: {', '.join(seats)}", path=f"{path}.{i}")
    return [s for s in seats if any(fnmatch.fnmatch(s, p) for p in patterns)]


def _reprefix(exc: ScenarioError, old: str, new: str, file: str | None) -> ScenarioError:
    path = exc.path
    if path and (path == old or path.startswith(old + ".")):
        path = new + path[len(old) :]
    message = exc.message.replace(f"\n  {old}.", f"\n  {new}.")
    return ScenarioError(message, file=exc.file or file, path=path, hint=exc.hint)


def resolve_campaign(data: dict[str, Any], *, source: str | None = None, text: str | None = None) -> ResolvedCampaign:
    from agents.llm import LLMParams

    with in_file(source):
        spec = _validate(Campaign, data, prefix="", file=source)
        world_entry = WORLDS.get(spec.world.id, path="world.id")
        world_config = _validate(world_entry.params, spec.world.model_extra or {}, prefix="world", file=source)
        seats = list(world_entry.load()(world_config).possible_agents)
        learner_seats = _match(spec.learner.seats, seats, "learner.seats")
        snapshot_seats = _match(spec.self_play.seats, seats, "self_play.seats") if spec.self_play else []
        if set(snapshot_seats) & set(learner_seats):
            raise ScenarioError("a seat cannot be both the learner's and a snapshot's", path="self_play.seats", hint="list each seat once")
        league_seats = _match(spec.league.seats, seats, "league.seats") if spec.league else []
        if spec.league and spec.self_play:
            raise ScenarioError(
                "a campaign has self_play or a league, not both", path="league",
                hint="drop self_play: a league with `matchmaking: latest` plays the newest snapshot of the learner",
            )
        if set(league_seats) & set(learner_seats):
            raise ScenarioError("a seat cannot be both the learner's and the league's", path="league.seats", hint="list each seat once")
        if spec.league:
            for k, name in enumerate(spec.league.side_names):
                if not METRIC_NAME.fullmatch(name):
                    raise ScenarioError(f"side name {name!r} cannot go in a metric name", path=f"league.side_names.{k}", hint="letters, digits, _ . -")
        if spec.evaluation.seats is not None:
            eval_seats = _match(spec.evaluation.seats, seats, "evaluation.seats")
        else:
            eval_seats = learner_seats if len(learner_seats) < len(seats) else seats[:1]
        if len(eval_seats) == len(seats):
            raise ScenarioError("the learner would play every seat in evaluation, with no opponent", path="evaluation.seats", hint=f"e.g. [{seats[0]}]")
        learner_params = _validate(LLMParams, spec.learner.model_extra or {}, prefix="learner", file=source)
        for key in spec.opponents:
            if key in learner_seats or key in snapshot_seats or key in league_seats:
                raise ScenarioError(f"seat '{key}' is played by the learner, its snapshot or the league", path=f"opponents.{key}", hint="remove it from opponents")
        placeholder = {seat: {"policy": "llm"} for seat in learner_seats + snapshot_seats + league_seats}
        base = {"name": spec.name, "world": data["world"], "episodes": 1, "seed": spec.seed}

        def scenario(agents: dict[str, Any], old: str, new: str, fill: dict[str, Any] = placeholder) -> ResolvedScenario:
            try:
                return resolve_scenario({**base, "agents": {**fill, **agents}}, source=source)
            except ScenarioError as exc:
                raise _reprefix(exc, old, new, source) from None

        opponents = {k: v.model_dump() for k, v in spec.opponents.items()}
        train = scenario(opponents, "agents", "opponents")
        if spec.evaluation.opponents is None:
            if snapshot_seats or league_seats or eval_seats != learner_seats:
                raise ScenarioError("name the fixed opponents to evaluate against", path="evaluation.opponents", hint="e.g. {fair: {policy: fair}}")
            evaluations = {"train": train}
        else:
            evaluations = {
                name: scenario({"*": agent.model_dump()}, "agents.*", f"evaluation.opponents.{name}", {s: {"policy": "llm"} for s in eval_seats})
                for name, agent in spec.evaluation.opponents.items()
            }
        league_members = {}
        for name, agent in (spec.league.members if spec.league else {}).items():
            if not METRIC_NAME.fullmatch(name) or name == League.LEARNER or name.startswith(League.LEARNER + "-"):
                raise ScenarioError(
                    f"member name {name!r} is reserved or cannot go in a metric name", path=f"league.members.{name}",
                    hint="letters, digits, _ . - ; 'learner' and 'learner-N' name the learner and its snapshots",
                )
            sides = [(league_seats, learner_seats)] + ([(learner_seats, league_seats)] if spec.league.swap_sides else [])
            for plays, other in sides:  # the member must be able to play every seat it may get
                fill = {**{s: {"policy": "llm"} for s in other}, **opponents}
                member = scenario({"*": agent.model_dump()}, "agents.*", f"league.members.{name}", fill)
                league_members.setdefault(name, member.seats[plays[0]])
        trainer_entry = TRAINERS.get(spec.trainer.id, path="trainer.id")
        trainer_config = _validate(trainer_entry.params, spec.trainer.model_extra or {}, prefix="trainer", file=source)
        if spec.group_size < 2:
            raise ScenarioError("a group of one rollout has no advantage signal", path="group_size", hint="use 2 or more (8 is common)")
    return ResolvedCampaign(
        spec, learner_seats, snapshot_seats, eval_seats, learner_params, train, evaluations, trainer_entry, trainer_config, source, text,
        league_seats, league_members,
    )


# --- rollouts -----------------------------------------------------------------------------


class GroupRollout(Rollout):
    """A Rollout whose episode `index` is played from initial state `seeds[index // group_size]`:
    `group_size` consecutive episodes share a seed (a GRPO group), and differ by sampling. The
    turns of `anchor_seats` in each group's first episode are decoded greedily (ArenaRL's anchor)."""

    def __init__(self, *args, seeds: list[int], group_size: int, anchor_seats=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.seeds, self.group_size, self.anchor_seats = seeds, group_size, frozenset(anchor_seats)

    def episode_seed(self, index: int) -> int:
        return self.seeds[index // self.group_size]

    def greedy(self, index: int, agent: str) -> bool:
        return index % self.group_size == 0 and agent in self.anchor_seats


def build_fixed_policies(scenario: ResolvedScenario, skip: list[str], seed: int) -> dict[str, Policy]:
    """One policy per non-learner seat; seats with identical specs share one instance."""
    shared: dict[str, Policy] = {}
    seats: dict[str, Policy] = {}
    for agent, seat in scenario.seats.items():
        if agent in skip:
            continue
        spec = json.dumps([seat.entry.name, seat.params.model_dump(mode="json")], sort_keys=True)
        if spec not in shared:
            shared[spec] = seat.entry.load()(seat.params, seed=policy_seed(seed, seat.key))
        seats[agent] = shared[spec]
    return seats


# --- evaluation ---------------------------------------------------------------------------


def mean_ci(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and its normal-approximation 95% interval, mean -/+ z * s / sqrt(n)."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    half = z * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return m, m - half, m + half


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (draws count as half a success)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluation_metrics(name: str, episodes: list[Episode], learner_seats: list[str]) -> dict[str, float]:
    """eval/<opponent>/score (learner's mean return, 95% CI), win_rate (beats every other seat; a tie
    with the best counts half; Wilson 95% CI) and the world's episode metrics averaged."""
    scores, wins = [], 0.0
    values: dict[str, list[float]] = {}
    for episode in episodes:
        mine = float(np.mean([episode.returns[s] for s in learner_seats]))
        others = [r for s, r in episode.returns.items() if s not in learner_seats]
        best_other = max(others) if others else mine
        scores.append(mine)
        wins += 1.0 if mine > best_other else 0.5 if mine == best_other else 0.0
        for key, value in episode.metrics.items():
            values.setdefault(key, []).append(value)
    score, low, high = mean_ci(scores)
    win_low, win_high = wilson_interval(wins, len(episodes))
    out = {
        f"eval/{name}/score": score,
        f"eval/{name}/score_ci_low": low,
        f"eval/{name}/score_ci_high": high,
        f"eval/{name}/win_rate": wins / len(episodes),
        f"eval/{name}/win_rate_ci_low": win_low,
        f"eval/{name}/win_rate_ci_high": win_high,
    }
    out.update({f"eval/{name}/{key}": float(np.mean(v)) for key, v in values.items()})
    return out


# --- checkpoints --------------------------------------------------------------------------


def generator_states(policies: dict[str, Policy]) -> dict[str, Any]:
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


def restore_generators(policies: dict[str, Policy], states: dict[str, Any]) -> None:
    for key, (kind, state) in states.items():
        seat, attr = key.split(".", 1)
        generator = getattr(policies[seat], attr)
        if kind == "numpy":
            generator.bit_generator.state = state
        else:
            generator.set_state(state)


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.json").is_file())


# --- the campaign loop ----------------------------------------------------------------------


class RunFolder:
    """A campaign's checkpoint folder and its MLflow run, tied by `run.json` so that `--resume`
    continues the same run. Refuses to start over a folder that holds a run, to resume nothing,
    and to resume a run that a live process on this host still writes; a resumed run is tagged
    with how it was left, and runs of the campaign left RUNNING by dead processes are marked killed."""

    def __init__(self, folder: Path, source: str | None, *, resume: bool, occupied: bool):
        self.folder, self.run_file, self.resume = folder, folder / "run.json", resume
        if not resume and (occupied or self.run_file.exists()):
            raise AgoraError(
                f"{folder} already holds this campaign's run; continue it with `agora train {source or ''} --resume`, "
                "or delete the folder (or set checkpoint.dir) to start over"
            )
        if resume and not self.run_file.exists():
            raise AgoraError(f"nothing to resume: no {self.run_file}; start the campaign without --resume")

    def open_tracker(self, uri: str | None, spec: Any, tags: dict[str, str], config: dict[str, Any], source: str | None, resumed_from: str):
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
        if tracker.previous_status == "RUNNING" and host == here["agora.host"] and pid_alive(pid) and pid != os.getpid():
            raise AgoraError(f"the campaign's run {run['run_id']} is still running in process {pid}; stop it before resuming")
        resumes = int(tracker.tags.get("agora.resumes", "0")) + 1
        left = " (left RUNNING by a killed process)" if tracker.previous_status == "RUNNING" else ""
        tracker.set_tags({"agora.resumes": str(resumes), f"agora.resume.{resumes}": f"was {tracker.previous_status}{left}; from {resumed_from}", **here})
        for run_id, other in tracker.running_runs("agora.campaign", spec.name).items():
            if run_id != tracker.run_id and other.get("agora.host") == here["agora.host"] and not pid_alive(int(other.get("agora.pid", "0"))):
                tracker.mark_killed(run_id, f"left RUNNING by dead process {other.get('agora.pid')}; marked on resuming {tracker.run_id}")
        return tracker

    def staging(self, iteration: int) -> Path:
        """An empty folder to write iteration `iteration`'s checkpoint into (state.json last); `publish` moves it in place."""
        staging = self.folder / f".staging-{CHECKPOINT_PREFIX}{iteration:06d}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def publish(self, staging: Path, tracker) -> Path:
        """Rename a written staging folder into place, a complete checkpoint even if the process dies now; log its files."""
        final = self.folder / staging.name.removeprefix(".staging-")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        if tracker:
            for path in sorted(final.rglob("*")):
                if path.is_file():
                    tracker.log_artifact(path, str(Path("checkpoints") / path.parent.relative_to(self.folder)))
        return final

    def mark(self, tracker) -> None:
        """Write run.json: for a new campaign, or a resumed one whose first process did not track a run."""
        if not self.resume or (tracker and not json.loads(self.run_file.read_text()).get("run_id")):
            self.folder.mkdir(parents=True, exist_ok=True)
            run = {"run_id": tracker.run_id, "tracking_uri": tracker.uri} if tracker else {"run_id": None}
            self.run_file.write_text(json.dumps(run))


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


@dataclass
class CampaignResult:
    run_id: str | None
    tracking_uri: str | None
    iterations_done: int
    evaluations: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> eval/* metrics
    last_metrics: dict[str, float] = field(default_factory=dict)
    rewards: dict[int, float] = field(default_factory=dict)  # iteration -> the learner's mean training reward
    checkpoint: Path | None = None


class CampaignRunner:
    """Holds the learner, its trainer, the fixed policies and the MLflow run of one campaign."""

    def __init__(self, campaign: ResolvedCampaign, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None):
        import torch

        from agents.llm import LLMPolicy
        from trainers.lora import load_learner

        self.campaign, spec = campaign, campaign.spec
        self.folder = campaign.checkpoint_dir
        found = checkpoints(self.folder)
        self.run_folder = RunFolder(self.folder, campaign.source, resume=resume, occupied=bool(found))
        self.resumed_from = found[-1] if resume and found else None

        params = campaign.learner_params
        torch.manual_seed(policy_seed(spec.seed, "torch"))  # nothing should draw from it; keep it seeded regardless
        self.model, self.tokenizer = load_learner(params.model, spec.learner.lora, device=params.device, dtype=params.dtype, seed=policy_seed(spec.seed, "lora"))
        self.learner = LLMPolicy(params, seed=policy_seed(spec.seed, "learner"), model=self.model, tokenizer=self.tokenizer)
        self.fixed = build_fixed_policies(campaign.train, campaign.learner_seats + campaign.snapshot_seats + campaign.league_seats, spec.seed)
        self.seats: dict[str, Policy] = {**{s: self.learner for s in campaign.learner_seats}, **self.fixed}
        self.policy_ids = {s: "learner" if s in campaign.learner_seats else campaign.train.seats[s].entry.name for s in self.seats}
        self.population: list[str] = []  # snapshots taken, "learner@<iteration>"
        self.snapshot_model = None
        if campaign.snapshot_seats:  # self-play against a frozen copy of the learner, refreshed every N iterations
            self.snapshot_model, _ = load_learner(params.model, spec.learner.lora, device=params.device, dtype=params.dtype, seed=policy_seed(spec.seed, "lora"))
            self.snapshot_model.requires_grad_(False)
            snapshot = LLMPolicy(params, seed=policy_seed(spec.seed, "snapshot"), model=self.snapshot_model, tokenizer=self.tokenizer)
            self.seats.update({s: snapshot for s in campaign.snapshot_seats})
            self.policy_ids.update({s: "snapshot" for s in campaign.snapshot_seats})
        self.league: League | None = None
        self.loaded_snapshot: str | None = None  # the league version whose adapter weights the snapshot model holds
        if spec.league:  # LoRA snapshots and members play league.seats; snapshots act through one frozen model
            self.snapshot_model, _ = load_learner(params.model, spec.learner.lora, device=params.device, dtype=params.dtype, seed=policy_seed(spec.seed, "lora"))
            self.snapshot_model.requires_grad_(False)
            self.snapshot_model.eval()
            members = [
                PolicyVersion(name, "llm" if seat.entry.name == "llm" else "scripted", {"policy": seat.entry.name, **seat.params.model_dump(mode="json")})
                for name, seat in campaign.league_members.items()
            ]
            self.league = League(members, max_snapshots=spec.league.max_snapshots)
            self.league_snapshot(0)  # the learner before any update: the base model (LoRA B = 0)
            self.policy_ids.update({s: "league" for s in campaign.league_seats})
        self.trainer = campaign.trainer_entry.load()(
            self.model, campaign.trainer_config, temperature=params.temperature, pad_id=self.tokenizer.pad_token_id, seed=policy_seed(spec.seed, "trainer")
        )
        self.start = 0
        self.result = CampaignResult(None, None, 0)
        if self.resumed_from:
            self._restore(self.resumed_from)

        self.tracker = None
        if spec.tracking.enabled if track is None else track:
            tags = {
                "agora.campaign": spec.name,
                "agora.world": campaign.train.world_entry.name,
                "agora.trainer": campaign.trainer_entry.name,
                "agora.learner_seats": ",".join(campaign.learner_seats),
                "agora.seed": str(spec.seed),
                "agora.version": agora.__version__,
            }
            where = self.resumed_from.name if self.resumed_from else "the start"
            self.tracker = self.run_folder.open_tracker(tracking_uri or spec.tracking.uri, spec, tags, campaign.resolved_config(), campaign.source, where)
        self.run_folder.mark(self.tracker)  # marks the folder as this campaign's; --resume reads the run id from it
        self.resume = resume

    # tracking
    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker:
            self.tracker.log_step(metrics, step)  # a resumed run skips the steps its killed process logged

    # checkpoints
    def _save(self, iteration: int) -> Path:
        import torch

        from trainers.lora import save_adapter

        staging = self.run_folder.staging(iteration)
        save_adapter(self.model, staging / "adapter")
        torch.save(self.trainer.state_dict(), staging / "trainer.pt")
        torch.save(generator_states(self.seats), staging / "rng.pt")
        if self.snapshot_model is not None and self.league is None:
            save_adapter(self.snapshot_model, staging / "snapshot")
        if self.league is not None:
            from safetensors.torch import save_file

            (staging / "league").mkdir()
            for name, weights in self.league.adapters.items():
                save_file({k: v.contiguous() for k, v in weights.items()}, str(staging / "league" / f"{name}.safetensors"))
        state = {
            "iteration": iteration,
            "run_id": self.tracker.run_id if self.tracker else None,
            "population": self.population,
            "rewards": self.result.rewards,
            "evaluations": self.result.evaluations,
            "league": self.league.to_dict() if self.league is not None else None,
        }
        (staging / "state.json").write_text(json.dumps(state))  # written last: marks the checkpoint complete
        final = self.run_folder.publish(staging, self.tracker)
        for old in checkpoints(self.folder)[: -self.campaign.spec.checkpoint.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _restore(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        from trainers.lora import load_adapter_state

        state = json.loads((folder / "state.json").read_text())
        self.result.rewards = {int(k): v for k, v in state.get("rewards", {}).items()}
        self.result.evaluations = {int(k): v for k, v in state.get("evaluations", {}).items()}
        self.population = list(state.get("population", []))
        if self.snapshot_model is not None and self.league is None:
            load_adapter_state(self.snapshot_model, load_file(str(folder / "snapshot" / "adapter_model.safetensors")))
        if self.league is not None:
            adapters = {path.stem: load_file(str(path)) for path in sorted((folder / "league").glob("*.safetensors"))}
            self.league = League.from_dict(state["league"], adapters)
            self.loaded_snapshot = None
        load_adapter_state(self.model, load_file(str(folder / "adapter" / "adapter_model.safetensors")))
        self.trainer.load_state_dict(torch.load(folder / "trainer.pt", weights_only=False))
        restore_generators(self.seats, torch.load(folder / "rng.pt", weights_only=False))
        self.start = int(state["iteration"]) + 1

    # rollouts
    def training_episodes(self, iteration: int, seats: dict[str, Policy] | None = None, policy_ids: dict[str, str] | None = None) -> list[Episode]:
        spec = self.campaign.spec
        seeds = [episode_seed(spec.seed, iteration * spec.groups_per_iteration + g) for g in range(spec.groups_per_iteration)]
        rollout = GroupRollout(
            self.campaign.train.make_world,
            seats or self.seats,
            policy_ids or self.policy_ids,
            seed=spec.seed,
            concurrency=spec.concurrency,
            max_retries=spec.max_retries,
            seeds=seeds,
            group_size=spec.group_size,
            anchor_seats=self.campaign.learner_seats if getattr(self.trainer, "greedy_anchor", False) else (),
        )
        return rollout.run(spec.groups_per_iteration * spec.group_size)

    def evaluate(self) -> dict[str, float]:
        """Held-out seeds against each fixed opponent; the sampler is reseeded so every evaluation draws alike."""
        from agents.llm import LLMPolicy

        spec, out = self.campaign.spec, {}
        for name, scenario in self.campaign.evaluations.items():
            learner = LLMPolicy(self.campaign.learner_params, seed=policy_seed(spec.evaluation.seed, "learner"), model=self.model, tokenizer=self.tokenizer)
            mine = self.campaign.eval_seats
            fixed = build_fixed_policies(scenario, mine, spec.evaluation.seed)
            seats = {**{s: learner for s in mine}, **fixed}
            ids = {s: "learner" if s in mine else scenario.seats[s].entry.name for s in seats}
            rollout = Rollout(scenario.make_world, seats, ids, seed=spec.evaluation.seed, concurrency=spec.concurrency, max_retries=spec.max_retries)
            self.model.eval()
            episodes = rollout.run(spec.evaluation.episodes)
            out.update(evaluation_metrics(name, episodes, mine))
            texts = [c for s, c in rollout.counters.items() if s in mine]
            attempts = sum(c.text_attempts for c in texts)
            out[f"eval/{name}/parse_failure_rate"] = sum(c.parse_failures for c in texts) / attempts if attempts else 0.0
            out[f"eval/{name}/fallback_rate"] = sum(c.fallbacks for c in texts) / max(sum(c.decisions for c in texts), 1)
        return out

    def refresh_snapshot(self, i: int) -> None:
        """Copy the learner's current LoRA weights into the frozen snapshot (self-play)."""
        from trainers.lora import adapter_state, load_adapter_state

        load_adapter_state(self.snapshot_model, adapter_state(self.model))
        self.population.append(f"learner@{i}")

    # league
    def league_snapshot(self, iteration: int) -> None:
        """Add the learner's current LoRA weights to the league as version `learner-<iteration>` (updates done)."""
        from trainers.lora import adapter_state

        self.league.snapshot(f"{League.LEARNER}-{iteration}", iteration, {k: v.cpu() for k, v in adapter_state(self.model).items()})

    def league_pool(self, key: str, seed: int) -> VersionPool:
        """Fresh, seeded policies of the league's versions for one rollout (`key` names it)."""
        from agents.llm import LLMPolicy
        from trainers.lora import load_adapter_state

        def build(name: str) -> Policy:
            version, version_seed = self.league.population[name], policy_seed(seed, f"{key}/{name}")
            if version.kind == "lora":  # its adapter is frozen: its KV cache stays valid while other versions take turns
                return LLMPolicy(self.campaign.learner_params, seed=version_seed, model=self.snapshot_model, tokenizer=self.tokenizer,
                                 weights_key=lambda: ("league version", name, self.loaded_snapshot))
            member = self.campaign.league_members[name]
            return member.entry.load()(member.params, seed=version_seed)

        def swap_in(name: str) -> None:
            if self.league.population[name].kind == "lora" and self.loaded_snapshot != name:
                load_adapter_state(self.snapshot_model, self.league.adapters[name])
                self.loaded_snapshot = name

        return VersionPool(build, swap_in)

    def draw_opponents(self, i: int) -> tuple[list[str], np.ndarray, list[str]]:
        """(candidates, matchmaking probabilities, one drawn opponent per group) for iteration `i`, from a
        generator seeded by (seed, i): the same draws after a resume. psro draws from the meta-strategy of
        the side the opponents play."""
        spec, rule, league = self.campaign.spec, self.campaign.spec.league, self.league
        swapped = rule.swap_sides and i % 2 == 1
        candidates = league.candidates()
        probs = matchmaking_distribution(
            rule.matchmaking, candidates, learner=League.LEARNER, records=league.records,
            meta_strategy=league.meta.get("a" if swapped else "b", {}), weighting=rule.pfsp_weighting, p=rule.pfsp_exponent,
        )
        rng = np.random.default_rng(policy_seed(spec.seed, f"league/matchmaking/{i}"))
        return candidates, probs, [candidates[k] for k in rng.choice(len(candidates), size=spec.groups_per_iteration, p=probs)]

    def league_episodes(self, i: int) -> tuple[list[Episode], list[str], dict[str, float]]:
        """Draw one opponent version per group by the matchmaking rule, play the groups together, record
        every game. Returns the episodes, the seats the learner played, and league/* metrics."""
        spec, rule, league = self.campaign.spec, self.campaign.spec.league, self.league
        swapped = rule.swap_sides and i % 2 == 1
        mine, theirs = (self.campaign.league_seats, self.campaign.learner_seats) if swapped else (self.campaign.learner_seats, self.campaign.league_seats)
        candidates, probs, drawn = self.draw_opponents(i)
        assignment = {e: drawn[e // spec.group_size] for e in range(spec.groups_per_iteration * spec.group_size)}
        router = VersionRouter(self.league_pool(f"train/{i}", spec.seed), assignment)
        seats = {**{s: self.learner for s in mine}, **{s: router for s in theirs}, **self.fixed}
        ids = {s: "learner" if s in mine else "league" if s in theirs else self.policy_ids[s] for s in seats}
        episodes = self.training_episodes(i, seats, ids)
        wins = {name: [] for name in rule.side_names}
        learner_scores = []
        for episode in episodes:
            opponent = assignment[episode.index]
            episode.policies.update({s: opponent for s in theirs})
            score = side_score(episode.returns, mine, theirs)  # the learner's
            a, b, score_a = (opponent, League.LEARNER, 1.0 - score) if swapped else (League.LEARNER, opponent, score)
            league.play(Game(i, "train", a, b, score_a))
            learner_scores.append(score)
            wins[rule.side_names[0]].append(score_a)
            wins[rule.side_names[1]].append(1.0 - score_a)
        metrics = {f"league/p/{c}": float(q) for c, q in zip(candidates, probs)}
        metrics.update({f"league/drawn/{c}": drawn.count(c) / len(drawn) for c in candidates})
        metrics.update({f"league/win_rate/{side}": float(np.mean(v)) for side, v in wins.items()})
        metrics["league/learner_win_rate"] = float(np.mean(learner_scores))
        metrics["league/learner_side"] = float(swapped)
        return episodes, mine, metrics

    def league_ratings(self) -> dict[str, float]:
        """league/rating/<version>/{mu,sigma,conservative} of every rated version, and the population's size."""
        ratings = self.league.ratings
        out = {"league/population": float(len(self.league.population)), "league/in_play": float(len(self.league.candidates()))}
        for name in ratings.ratings:
            out[f"league/rating/{name}/mu"] = ratings.mu(name)
            out[f"league/rating/{name}/sigma"] = ratings.sigma(name)
            out[f"league/rating/{name}/conservative"] = ratings.conservative(name)
        return out

    def after_league_iteration(self, i: int) -> None:
        """Snapshot the learner every `snapshot_every` iterations, the payoff matrix every `payoff.every` (both after
        the last), then log the ratings."""
        rule, last = self.campaign.spec.league, i + 1 == self.campaign.spec.iterations
        if (i + 1) % rule.snapshot_every == 0 or last:
            self.league_snapshot(i + 1)
        if (rule.payoff.every and (i + 1) % rule.payoff.every == 0) or last:
            self.log(self.league_payoff(i + 1), step=i + 1)
        self.log(self.league_ratings(), step=i + 1)  # after this iteration's games (and payoff games): step = iterations done

    def league_payoff(self, step: int) -> dict[str, float]:
        """The empirical payoff matrix between the versions in play, every cell's games played together.

        U[k, l] = P(side A wins) with version k on side A (learner.seats) and version l on side B (league.seats),
        over `episodes_per_cell` games on the same seeds in every cell; the meta-game is constant-sum
        (U_A = U, U_B = 1 − U). Logs the heatmap and table, the meta-strategy σ = MSS(U), its
        exploitability and NashConv within the population, a Bradley–Terry fit of the payoff games with
        bootstrap 95% intervals, and the league graph.
        """
        from trainers.meta import exploitability, nash_conv
        from trainers.psro import meta_strategy
        from trainers.ratings import bradley_terry

        spec, payoff, league = self.campaign.spec, self.campaign.spec.league.payoff, self.league
        side_a, side_b = self.campaign.learner_seats, self.campaign.league_seats
        name_a, name_b = spec.league.side_names
        versions = league.candidates()
        cells = payoff_cells(len(versions))
        n_cells, per_cell = len(cells), payoff.episodes_per_cell
        root = policy_seed(payoff.seed, f"step/{step}")
        pool = self.league_pool(f"payoff/{step}", payoff.seed)
        # episode index e * n_cells + c is game e of cell c: GroupRollout gives it seed `seeds[e]`, the same in every cell
        routers = [VersionRouter(pool, {e * n_cells + c: versions[cell[side]] for e in range(per_cell) for c, cell in enumerate(cells)}) for side in (0, 1)]
        fixed = build_fixed_policies(self.campaign.train, side_a + side_b, root)
        seats = {**{s: routers[0] for s in side_a}, **{s: routers[1] for s in side_b}, **fixed}
        ids = {s: name_a if s in side_a else name_b if s in side_b else self.policy_ids[s] for s in seats}
        start = time.perf_counter()
        rollout = GroupRollout(
            self.campaign.train.make_world, seats, ids, seed=root, concurrency=spec.concurrency, max_retries=spec.max_retries,
            record_observations=False, seeds=[episode_seed(root, e) for e in range(per_cell)], group_size=n_cells,
        )
        U = np.zeros((len(versions), len(versions)))
        for episode in rollout.run(per_cell * n_cells):
            k, l = cells[episode.index % n_cells]
            score = side_score(episode.returns, side_a, side_b)
            U[k, l] += score / per_cell
            league.play(Game(step, "payoff", versions[k], versions[l], score))
        seconds = time.perf_counter() - start
        x, y = meta_strategy(U, 1.0 - U, payoff.meta_solver)
        league.meta = {"a": dict(zip(versions, map(float, x))), "b": dict(zip(versions, map(float, y)))}
        metrics = {
            "league/exploitability": exploitability(U, 1.0 - U, x, y),
            "league/nash_conv": nash_conv(U, 1.0 - U, x, y),
            "league/payoff_games": float(per_cell * n_cells),
            "perf/payoff_seconds": seconds,
        }
        metrics.update({f"league/meta/{name_a}/{v}": float(p) for v, p in zip(versions, x)})
        metrics.update({f"league/meta/{name_b}/{v}": float(p) for v, p in zip(versions, y)})
        if self.tracker:
            tag = f"step-{step:04d}"
            title = f"P({name_a} side wins): row version plays {name_a}, column version plays {name_b}; after iteration {step}"
            self.tracker.log_figure(payoff_heatmap(U, versions, versions, title=title, label=f"P({name_a} wins)"), f"league/payoff/{tag}.png")
            self.tracker.log_table(payoff_table(U, versions, versions), f"league/payoff/{tag}.json")
            games = [(g.a, g.b, g.score_a) for g in league.games if g.kind == "payoff" and g.a != g.b]
            if games:
                fit = bradley_terry(games, bootstrap=payoff.bootstrap, rng=np.random.default_rng(policy_seed(payoff.seed, f"bootstrap/{step}")))
                self.tracker.log_table(
                    {"version": fit.players, "elo": fit.elo.tolist(), "ci95_low": fit.lower.tolist(), "ci95_high": fit.upper.tolist(),
                     "games": [sum(p in (a, b) for a, b, _ in games) for p in fit.players]},
                    f"league/bradley_terry/{tag}.json",
                )
            self.tracker.log_figure(league_figure(league.population.graph(league.records), title=f"league after iteration {step}"), f"league/graph/{tag}.png")
        return metrics

    def iteration(self, i: int) -> dict[str, float]:
        if self.league is None and self.snapshot_model is not None and i % self.campaign.spec.self_play.snapshot_every == 0:
            self.refresh_snapshot(i)
        tokens0, seconds0 = self.learner.stats.generated_tokens, self.learner.stats.generate_seconds
        start = time.perf_counter()
        self.model.eval()
        league: dict[str, float] = {}
        if self.league is not None:
            episodes, mine, league = self.league_episodes(i)
        else:
            episodes, mine = self.training_episodes(i), self.campaign.learner_seats
        rollout_seconds = time.perf_counter() - start
        metrics = {"train/iteration": float(i), **self.trainer.update(episodes, mine)}
        rewards: dict[str, list[float]] = {}
        for episode in episodes:
            for seat, ret in episode.returns.items():
                rewards.setdefault(episode.policies.get(seat, self.policy_ids[seat]), []).append(ret)
            for key, value in episode.metrics.items():
                rewards.setdefault(f"world/{key}", []).append(value)
        for key, values in rewards.items():
            metrics[f"train/reward/{key}" if not key.startswith("world/") else f"train/{key[6:]}"] = float(np.mean(values))
        tokens = self.learner.stats.generated_tokens - tokens0
        gen_seconds = self.learner.stats.generate_seconds - seconds0
        metrics["perf/generate_tokens_per_s"] = tokens / gen_seconds if gen_seconds else 0.0
        metrics["perf/rollout_seconds"] = rollout_seconds
        metrics["perf/iteration_seconds"] = time.perf_counter() - start
        if self.snapshot_model is not None and self.league is None:
            metrics["pop/snapshots"] = float(len(self.population))
        metrics.update(league)
        return metrics

    def run(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> CampaignResult:
        spec = self.campaign.spec
        result = self.result
        result.run_id, result.tracking_uri = (self.tracker.run_id, self.tracker.uri) if self.tracker else (None, None)
        result.iterations_done = self.start
        every = spec.evaluation.every
        with ending(self.tracker):
            for i in range(self.start, spec.iterations):
                if (every and i % every == 0) or i == 0:
                    result.evaluations[i] = self.evaluate()
                    self.log(result.evaluations[i], step=i)
                metrics = self.iteration(i)
                self.log(metrics, step=i)
                if self.league is not None:
                    self.after_league_iteration(i)
                result.iterations_done, result.last_metrics = i + 1, metrics
                result.rewards[i] = metrics.get("train/reward/learner", float("nan"))
                if (i + 1) % spec.checkpoint.every == 0 or i + 1 == spec.iterations:
                    result.checkpoint = self._save(i)
                if on_iteration:
                    on_iteration(i, {**metrics, **result.evaluations.get(i, {})})
            final = spec.iterations
            result.evaluations[final] = self.evaluate()
            self.log(result.evaluations[final], step=final)
            if self.tracker:
                self.tracker.log_figure(learning_curve(result, list(self.campaign.evaluations)), "figures/learning_curve.png")
                if self.league is not None:
                    self.tracker.log_table(games_table(self.league), "league/games.json")
                    self.tracker.log_table(ratings_table(self.league), "league/ratings.json")
        return result


def learning_curve(result: CampaignResult, opponents: list[str]):
    """The learner's mean training reward per iteration, and its evaluation score (95% CI) per opponent."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    steps = sorted(result.rewards)
    left.plot(steps, [result.rewards[s] for s in steps], marker="o")
    left.set(title="training reward (learner, mean per iteration)", xlabel="iteration", ylabel="return")
    for name in opponents:
        points = sorted((s, m) for s, m in result.evaluations.items() if f"eval/{name}/score" in m)
        x = [s for s, _ in points]
        y = [m[f"eval/{name}/score"] for _, m in points]
        low = [m[f"eval/{name}/score"] - m[f"eval/{name}/score_ci_low"] for _, m in points]
        high = [m[f"eval/{name}/score_ci_high"] - m[f"eval/{name}/score"] for _, m in points]
        right.errorbar(x, y, yerr=[low, high], marker="o", capsize=4, label=name)
    right.set(title="held-out evaluation score (95% CI)", xlabel="iteration", ylabel="learner's mean score")
    right.legend(title="opponent")
    return figure


def games_table(league: League) -> dict[str, list[Any]]:
    """Every game of the league in order (MLflow table): iteration, kind, the versions on sides A and B, A's score."""
    return {
        "iteration": [g.iteration for g in league.games],
        "kind": [g.kind for g in league.games],
        "a": [g.a for g in league.games],
        "b": [g.b for g in league.games],
        "score_a": [g.score_a for g in league.games],
    }


def ratings_table(league: League) -> dict[str, list[Any]]:
    """The OpenSkill leaderboard (best conservative score first) with each version's lineage."""
    rows = league.ratings.leaderboard()
    pop = league.population
    return {
        "version": [r[0] for r in rows],
        "conservative": [r[1] for r in rows],
        "mu": [r[2] for r in rows],
        "sigma": [r[3] for r in rows],
        "parent": [pop[r[0]].parent if r[0] in pop else None for r in rows],
        "trained_against": [", ".join(pop[r[0]].opponents) if r[0] in pop else "" for r in rows],
    }


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


def run_campaign(campaign: ResolvedCampaign, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None, on_iteration=None) -> CampaignResult:
    return CampaignRunner(campaign, resume=resume, tracking_uri=tracking_uri, track=track).run(on_iteration)


def describe_training(campaign: ResolvedCampaign) -> str:
    return (
        f"campaign, world {campaign.train.world_entry.name}, learner {', '.join(campaign.learner_seats)}, "
        f"trainer {campaign.trainer_entry.name}, {campaign.spec.iterations} iterations"
        + (f", league on {', '.join(campaign.league_seats)} ({campaign.spec.league.matchmaking}, members: {', '.join(campaign.league_members) or 'none'})"
           if campaign.spec.league else "")
    )


TRAINING = CampaignKind(ResolvedCampaign, resolve_campaign, CampaignRunner, describe_training)
