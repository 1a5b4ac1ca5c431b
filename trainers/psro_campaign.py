"""PSRO as a training campaign: `agora train scenarios/campaigns/rps_psro.yaml` (`kind: psro`).

The loop of ALGORITHMS.md §8 on the matrix world, whose payoff table makes exploitability exact:

    populations Π_0, Π_1 (one per seat) start from the file's fixed strategies
    for iteration t = 0 .. iterations − 1:
        U_i[k, l] = seat i's mean payoff per round of Π_0[k] vs Π_1[l], by `episodes_per_cell`
                    seeded episodes per cell through the batched rollout engine (new cells only)
        σ = MSS(U)                                  (meta_solver: nash | uniform | replicator | alpharank)
        NashConv(σ) = Σ_i [max_a u_i(a, x_{−i}) − u_i(x)],  x_i = Σ_k σ_i[k]·π_i^k  (exact, from the table)
        stop when exploitability = NashConv / 2 ≤ threshold, or at the last iteration (the budget)
        each seat's oracle returns a best response to the other seat's meta-mixture; it joins Π_i
        with its lineage (the versions it was trained against and their weights σ)

Oracles: `exact` (the pure best response from the payoff table) and `train`: a tabular softmax
policy π = softmax(θ) trained by policy gradient, θ ← θ + lr · mean_j A_j (e_{a_j} − π), with
group-relative advantages A (trainers/advantages.group_advantages) of per-round rewards, in
episodes played through the rollout engine against opponents drawn per episode from the
meta-mixture (trainers/league.sample_opponents, rule `psro`).

Each iteration logs pop/* (exploitability, NashConv, sizes), meta/<seat>/<version> (σ), and
oracle/<seat>/* to MLflow, the payoff heatmap and table; at the end the league graph, the
exploitability curve and the population JSON. The state (populations, payoff cells, win records,
history) is checkpointed after every iteration; `--resume` continues into the same MLflow run.
Every random draw derives from the seed and the iteration, so a resumed campaign equals a straight one.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import agora
from agora.campaign import CampaignKind, CheckpointedFile, RunFolder, ending
from agora.errors import AgoraError, ScenarioError, in_file
from agora.policy import ActRequest, ActResponse, Policy
from agora.registry import AGENTS, WORLDS, Entry
from agora.rollout import Rollout, policy_seed
from agora.scenario import AgentSpec, TrackingSpec, WorldFile, WorldSpec, _validate
from agora.trajectory import Episode
from trainers import meta
from trainers.advantages import group_advantages
from trainers.league import PolicyVersion, Population, WinRecord, league_figure, payoff_heatmap, payoff_table, sample_opponents
from trainers.psro import MetaSolver, matrix_best_response, meta_strategy, mixture, rollout_payoff_matrix

STATIONARY = ("mixed", "tabular")  # matrix-world agents that play one fixed mixed strategy every round


class OracleSpec(BaseModel):
    """`oracle: {id: exact | train, ...}`; the other keys are the `train` oracle's."""

    model_config = ConfigDict(extra="forbid")
    id: Literal["exact", "train"] = Field("train", description="exact: best response from the payoff table; train: a tabular softmax policy trained by policy gradient")
    steps: int = Field(40, ge=1, le=100_000, description="train: policy-gradient steps")
    episodes: int = Field(32, ge=2, le=100_000, description="train: episodes per step, each against an opponent drawn from the meta-mixture")
    learning_rate: float = Field(0.5, gt=0, le=100, description="train: step size on the logits θ")
    statistics: Literal["group", "batch"] = Field("group", description="train: advantage mean/std per drawn opponent (group) or over the step's batch")
    std_normalize: bool = Field(True, description="train: divide advantages by the std (False: Dr. GRPO)")
    min_prob: float = Field(1e-4, gt=0, lt=0.1, description="train: the trained strategy is kept ≥ this per action (a tabular version needs probs > 0)")


class PSROCheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str | None = Field(None, description="checkpoint folder (default: checkpoints/<name> in the working directory)")


class PSROCampaign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="campaign name: the MLflow run name")
    description: str = ""
    world: WorldSpec
    population: dict[str, dict[str, AgentSpec]] = Field(
        min_length=1, description="seat (or glob pattern) -> initial versions: name -> fixed strategy (policy mixed or tabular)"
    )
    meta_solver: MetaSolver = Field("nash", description="nash (zero-sum LP: double oracle), uniform (fictitious play), replicator, alpharank")
    oracle: OracleSpec = OracleSpec()
    iterations: int = Field(ge=1, le=10_000, description="iteration budget: each evaluates the population, and all but the last add best responses")
    threshold: float = Field(1e-6, ge=0, description="stop when the meta-mixture's exploitability is at most this")
    episodes_per_cell: int = Field(20, ge=1, le=1_000_000, description="episodes per cell of the empirical payoff matrix")
    seed: int = Field(0, ge=0, description="root seed of every episode, opponent draw and oracle")
    concurrency: int = Field(32, ge=1, le=4096, description="episodes stepped together")
    checkpoint: PSROCheckpointSpec = PSROCheckpointSpec()
    tracking: TrackingSpec = TrackingSpec()


@dataclass(frozen=True)
class ResolvedPSRO(WorldFile, CheckpointedFile):
    spec: PSROCampaign
    world_entry: Entry
    world_config: BaseModel
    seats: list[str]
    actions: list[str]
    A: np.ndarray  # the row seat's stage payoffs A[i, j]
    B: np.ndarray  # the column seat's
    initial: list[PolicyVersion]  # both seats' starting versions (spec: seat, policy, probs)
    source: str | None
    text: str | None

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(mode="json", exclude={"world", "population"})
        out["world"] = self.world_json()
        out["population"] = {v.name: v.spec for v in self.initial}
        return out


def resolve_psro(data: dict[str, Any], *, source: str | None = None, text: str | None = None) -> ResolvedPSRO:
    with in_file(source):
        spec = _validate(PSROCampaign, data, prefix="", file=source)
        world_entry = WORLDS.get(spec.world.id, path="world.id")
        if world_entry.name != "matrix":
            raise ScenarioError(
                f"PSRO campaigns run on the matrix world (its payoff table makes exploitability exact), not '{world_entry.name}'",
                path="world.id", hint="world: {id: matrix, game: rock_paper_scissors}",
            )
        world_config = _validate(world_entry.params, spec.world.model_extra or {}, prefix="world", file=source)
        actions, payoffs = world_config.table()
        A, B = payoffs[..., 0], payoffs[..., 1]
        seats = list(world_entry.load()(world_config).possible_agents)
        if spec.meta_solver == "nash" and not np.allclose(A + B, (A + B).flat[0]):
            raise ScenarioError(
                f"the nash meta-solver is the zero-sum LP, and {world_config.game} is not constant-sum",
                path="meta_solver", hint="use replicator, alpharank or uniform",
            )
        initial: list[PolicyVersion] = []
        for key in spec.population:
            if not fnmatch.filter(seats, key):
                raise ScenarioError(f"no seat matches '{key}'; seats: {', '.join(seats)}", path=f"population.{key}")
        for seat in seats:
            keys = [k for k in spec.population if fnmatch.fnmatch(seat, k)]
            if not keys:
                raise ScenarioError(f"seat '{seat}' has no initial strategy", path="population", hint=f"add `{seat}: {{rock: {{policy: mixed, probs: [1, 0, 0]}}}}` or use '*'")
            for key in keys:
                if not spec.population[key]:
                    raise ScenarioError("give at least one initial strategy", path=f"population.{key}")
                for name, agent in spec.population[key].items():
                    path = f"population.{key}.{name}"
                    entry = AGENTS.get(agent.policy, world="matrix", path=f"{path}.policy")
                    if entry.name not in STATIONARY:
                        raise ScenarioError(
                            f"'{entry.name}' is not a fixed mixed strategy, so its exploitability is not defined",
                            path=f"{path}.policy", hint="use policy: mixed (probs: [...]) or tabular",
                        )
                    params = _validate(entry.params, agent.model_extra or {}, prefix=path, file=source)
                    probs = params.probs if params.probs is not None else [1 / len(actions)] * len(actions)
                    if len(probs) != len(actions):
                        raise ScenarioError(f"probs has {len(probs)} entries; the game has {len(actions)} actions ({', '.join(actions)})", path=f"{path}.probs")
                    initial.append(PolicyVersion(f"{seat}/{name}", "scripted", {"seat": seat, "policy": entry.name, "probs": [float(p) for p in probs]}))
    return ResolvedPSRO(spec, world_entry, world_config, seats, actions, A, B, initial, source, text)


# --- policies of versions -----------------------------------------------------------------------


def build_version(version: PolicyVersion, seed: int) -> Policy:
    """The policy a version's spec names (a fixed `mixed` or `tabular` strategy), seeded."""
    entry = AGENTS.get(version.spec["policy"], world="matrix")
    return entry.load()(entry.params(probs=version.spec["probs"]), seed=seed)


class MetaMixtureOpponent(Policy):
    """The opponent seat in an oracle's episodes: episode `e` is played by `opponents[drawn[e]]`."""

    def __init__(self, opponents: dict[str, Policy], drawn: list[str]):
        super().__init__(None, seed=0)
        self.opponents, self.drawn = opponents, drawn

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out: list[ActResponse | None] = [None] * len(requests)
        by_version: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_version.setdefault(self.drawn[request.episode], []).append(i)
        for name, ix in by_version.items():
            for i, response in zip(ix, self.opponents[name].act([requests[i] for i in ix])):
                out[i] = response
        return out


# --- oracles --------------------------------------------------------------------------------------


def interior(probs: np.ndarray, min_prob: float) -> list[float]:
    """A strategy kept away from 0/1: p ← max(p, min_prob) / Σ, rounded to 6 decimals, summing to 1."""
    p = np.maximum(np.asarray(probs, dtype=np.float64), min_prob)
    p = np.round(p / p.sum(), 6)
    p[int(np.argmax(p))] += 1.0 - p.sum()
    return [float(v) for v in p]


def train_best_response(
    campaign: ResolvedPSRO, seat: str, opponents: list[PolicyVersion], sigma: np.ndarray, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """The `train` oracle: a tabular softmax policy trained by policy gradient against the meta-mixture.

    Each step plays `oracle.episodes` episodes (opponent drawn per episode with P = σ); every round
    of the learner is a sample with return r_t; A = group_advantages(r, groups = drawn opponent);
    θ ← θ + lr · mean_j A_j (e_{a_j} − π)  (the gradient of mean_j A_j log π(a_j)).
    """
    from agents.scripted.matrix import TabularSoftmax

    spec, oracle = campaign.spec, campaign.spec.oracle
    other = next(s for s in campaign.seats if s != seat)
    n = len(campaign.actions)
    learner = TabularSoftmax(TabularSoftmax.Params(), seed=policy_seed(seed, "learner"), n_actions=n)
    names = [v.name for v in opponents]
    policies = {v.name: build_version(v, policy_seed(seed, v.name)) for v in opponents}
    rng = np.random.default_rng(policy_seed(seed, "matchmaking"))
    weights = dict(zip(names, map(float, sigma)))
    rewards_seen, regrets, loss = [], [], 0.0
    for step in range(oracle.steps):
        drawn = sample_opponents(rng, names, oracle.episodes, rule="psro", meta_strategy=weights)
        rollout = Rollout(
            campaign.make_world, {seat: learner, other: MetaMixtureOpponent(policies, drawn)}, {seat: "learner", other: "meta-mixture"},
            seed=policy_seed(seed, f"step {step}"), concurrency=spec.concurrency, record_observations=False,
        )
        episodes = rollout.run(oracle.episodes)
        actions, returns, groups = [], [], []
        for episode in episodes:
            for s in episode.steps:
                if s.agent == seat:
                    actions.append(int(s.action))
                    returns.append(s.reward)
                    groups.append(drawn[episode.index])
            regrets.append(episode.metrics[f"regret_per_round/{seat}"])
        returns = np.asarray(returns)
        advantages = group_advantages(returns, groups, std_normalize=oracle.std_normalize, statistics=oracle.statistics)
        probs = learner.probs
        loss = -float(np.mean(advantages * np.log(probs[actions])))  # the surrogate whose gradient is the step below
        gradient = (advantages[:, None] * (np.eye(n)[actions] - probs)).mean(axis=0)
        learner.logits = learner.logits + oracle.learning_rate * gradient
        rewards_seen.append(float(returns.mean()))
    probs = learner.probs
    entropy = float(-(probs * np.log(probs)).sum())
    return probs, {
        "loss": loss,
        "return": rewards_seen[-1],  # mean reward per round in the last step
        "return_first": rewards_seen[0],
        "entropy": entropy,
        "regret_per_round": float(np.mean(regrets)),  # the learner's external regret per round, over all its episodes
    }


# --- the campaign ----------------------------------------------------------------------------------


@dataclass
class PSROCampaignResult:
    run_id: str | None
    tracking_uri: str | None
    iterations_done: int
    stop_reason: str
    history: list[dict[str, float]]  # per evaluated iteration: pop/*, meta/* metrics
    population: Population
    meta_strategies: dict[str, dict[str, float]]  # seat -> version -> σ (last evaluation)
    mixtures: dict[str, list[float]]  # seat -> the meta-mixture in action space (last evaluation)
    checkpoint: Path | None = None


class PSRORunner:
    """One PSRO campaign: populations, the payoff cells played so far, the MLflow run and checkpoints."""

    progress_metrics = {"pop/exploitability": "exploitability", "pop/nash_conv": "NashConv", "pop/size": "versions"}

    def __init__(self, campaign: ResolvedPSRO, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None):
        self.campaign, spec = campaign, campaign.spec
        self.folder = campaign.checkpoint_dir
        self.state_file = self.folder / "state.json"
        self.run_folder = RunFolder(self.folder, campaign.source, resume=resume, occupied=self.state_file.exists())
        self.population = Population(campaign.initial)
        self.cells: dict[str, list[float]] = {}  # "row|column" -> [U_0, U_1] per round
        self.records = WinRecord()
        self.history: list[dict[str, float]] = []
        self.stop_reason = ""
        self.start = 0
        self.resumed_from = self.state_file if resume and self.state_file.exists() else None
        if self.resumed_from:
            state = json.loads(self.state_file.read_text())
            self.population = Population.from_dict(state["population"])
            self.cells, self.history = state["cells"], state["history"]
            self.records = WinRecord.from_dict(state["records"])
            if state.get("game") != self.game_fingerprint():
                raise AgoraError(
                    f"{self.state_file} holds a campaign with another game, population, meta-solver, oracle or seed; "
                    "only iterations and threshold may change on --resume (or set checkpoint.dir to start over)"
                )
            if state["stop_reason"] in ("threshold", "no new best response"):
                raise AgoraError(f"the campaign already finished ({state['stop_reason']}) at iteration {state['iteration']}; nothing to resume")
            # a run stopped by its budget did not run the oracles of its last iteration: that iteration runs again
            self.start = int(state["iteration"]) + (0 if state["stop_reason"] == "budget" else 1)
            self.history = [h for h in self.history if h["iteration"] < self.start]
        self.tracker = None
        self.resume = resume
        if spec.tracking.enabled if track is None else track:
            tags = {
                "agora.campaign": spec.name,
                "agora.kind": "psro",
                "agora.world": "matrix",
                "agora.meta_solver": spec.meta_solver,
                "agora.oracle": spec.oracle.id,
                "agora.seed": str(spec.seed),
                "agora.version": agora.__version__,
            }
            self.tracker = self.run_folder.open_tracker(tracking_uri or spec.tracking.uri, spec, tags, campaign.resolved_config(), campaign.source,
                                                        f"iteration {self.start}")
        self.run_folder.mark(self.tracker)

    # tracking
    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker:
            self.tracker.log_step(metrics, step)  # a resumed run skips the steps its killed process logged

    def game_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must share with the campaign that resumes it (all but the budget and the threshold)."""
        config = self.campaign.resolved_config()
        return {k: v for k, v in config.items() if k not in ("iterations", "threshold", "checkpoint", "tracking", "name", "description", "concurrency")}

    # the population
    def members(self, seat: str) -> list[PolicyVersion]:
        return [v for v in self.population if v.spec["seat"] == seat]

    def strategy(self, version: PolicyVersion) -> np.ndarray:
        return np.asarray(version.spec["probs"], dtype=np.float64)

    def payoffs(self) -> tuple[np.ndarray, np.ndarray, int]:
        """U_0, U_1 per round over the current populations; plays only cells not played before."""
        campaign, spec = self.campaign, self.campaign.spec
        rows, columns = self.members(campaign.seats[0]), self.members(campaign.seats[1])
        rounds = campaign.world_config.rounds
        factory = {v.name: (lambda seed, v=v: build_version(v, seed)) for v in rows + columns}
        played = 0

        def record(row: str, column: str, episodes: list[Episode]) -> None:
            for e in episodes:
                r0, r1 = e.returns[campaign.seats[0]], e.returns[campaign.seats[1]]
                self.records.record(row, column, 1.0 if r0 > r1 else 0.5 if r0 == r1 else 0.0)

        for row in rows:  # row by row, so each call's cells are exactly the missing ones of that row
            missing = [c for c in columns if f"{row.name}|{c.name}" not in self.cells]
            if not missing:
                continue
            U0, U1 = rollout_payoff_matrix(
                campaign.make_world, {row.name: factory[row.name]}, {c.name: factory[c.name] for c in missing},
                episodes_per_cell=spec.episodes_per_cell, seed=spec.seed, concurrency=spec.concurrency, on_cell=record,
            )
            for l, column in enumerate(missing):
                self.cells[f"{row.name}|{column.name}"] = [float(U0[0, l]) / rounds, float(U1[0, l]) / rounds]
                played += 1
        U0 = np.array([[self.cells[f"{r.name}|{c.name}"][0] for c in columns] for r in rows])
        U1 = np.array([[self.cells[f"{r.name}|{c.name}"][1] for c in columns] for r in rows])
        return U0, U1, played

    def best_response(self, iteration: int, seat_index: int, opponents: list[PolicyVersion], sigma: np.ndarray) -> tuple[PolicyVersion | None, dict[str, float]]:
        """The oracle's new version for seat `seat_index` against the opponents' meta-mixture (None: nothing new)."""
        campaign, oracle = self.campaign, self.campaign.spec.oracle
        seat = campaign.seats[seat_index]
        against = [v.name for v, w in zip(opponents, sigma) if w > 1e-9]
        weights = {v.name: float(w) for v, w in zip(opponents, sigma) if w > 1e-9}
        mix = mixture([self.strategy(v) for v in opponents], sigma)
        values = campaign.A @ mix if seat_index == 0 else mix @ campaign.B  # each pure action's payoff vs the mixture
        name = f"{seat}/br{iteration}"
        if oracle.id == "exact":
            probs = matrix_best_response(campaign.A, campaign.B)(seat_index, [self.strategy(v) for v in opponents], sigma)
            metrics = {"br_value": float(values.max())}
            if any(np.array_equal(probs, self.strategy(v)) for v in self.members(seat)):
                return None, metrics
            version = PolicyVersion(name, "scripted", {"seat": seat, "policy": "mixed", "probs": probs.tolist(), "opponent_weights": weights}, opponents=against, iteration=iteration)
            return version, metrics
        seed = policy_seed(campaign.spec.seed, f"oracle {iteration} {seat}")
        probs, metrics = train_best_response(campaign, seat, opponents, sigma, seed)
        kept = interior(probs, oracle.min_prob)
        metrics["br_value"] = float(values.max())
        metrics["br_gap"] = float(values.max() - np.asarray(kept) @ values)  # exact: how far the trained strategy is from a best response
        version = PolicyVersion(name, "tabular", {"seat": seat, "policy": "tabular", "probs": kept, "opponent_weights": weights}, opponents=against, iteration=iteration)
        return version, metrics

    def evaluate(self, iteration: int) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Payoffs → σ → exact NashConv of the meta-mixture: (pop/* and meta/* metrics, σ per seat, mixture per seat)."""
        campaign, spec = self.campaign, self.campaign.spec
        U0, U1, played = self.payoffs()
        sigma = meta_strategy(U0, U1, spec.meta_solver)
        rows, columns = self.members(campaign.seats[0]), self.members(campaign.seats[1])
        x = mixture([self.strategy(v) for v in rows], sigma[0])
        y = mixture([self.strategy(v) for v in columns], sigma[1])
        nash_conv = meta.nash_conv(campaign.A, campaign.B, x, y)
        metrics = {
            "pop/exploitability": nash_conv / 2,
            "pop/nash_conv": nash_conv,
            "pop/size": float(len(self.population)),
            "pop/cells_played": float(played),
        }
        for seat, members, weights, mix in zip(campaign.seats, (rows, columns), sigma, (x, y)):
            metrics[f"pop/size/{seat}"] = float(len(members))
            metrics.update({f"meta/{v.name}": float(w) for v, w in zip(members, weights)})
            metrics.update({f"mixture/{seat}/{a}": float(p) for a, p in zip(campaign.actions, mix)})
        if self.tracker:
            names0, names1 = [v.name for v in rows], [v.name for v in columns]
            self.tracker.log_figure(
                payoff_heatmap(U0, names0, names1, title=f"iteration {iteration}: {campaign.seats[0]}'s payoff per round", label=f"{campaign.seats[0]}'s payoff"),
                f"payoffs/heatmap_iter_{iteration:03d}.png",
            )
            self.tracker.log_table(payoff_table(U0, names0, names1), f"payoffs/table_iter_{iteration:03d}.json")
        return metrics, sigma, (x, y)

    def _save(self, iteration: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "game": self.game_fingerprint(),
            "iteration": iteration,
            "stop_reason": self.stop_reason,
            "population": self.population.to_dict(),
            "cells": self.cells,
            "records": self.records.to_dict(),
            "history": self.history,
        }
        staging = self.folder / ".state.json"
        staging.write_text(json.dumps(state))
        staging.replace(self.state_file)  # atomic: a kill leaves the previous complete state
        return self.state_file

    def run(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> PSROCampaignResult:
        campaign, spec = self.campaign, self.campaign.spec
        checkpoint = None
        last_sigma: tuple[np.ndarray, np.ndarray] | None = None
        mixtures: tuple[np.ndarray, np.ndarray] | None = None
        with ending(self.tracker):
            iteration = self.start
            while True:
                start = time.perf_counter()
                metrics, last_sigma, mixtures = self.evaluate(iteration)
                oracle_metrics: dict[str, float] = {}
                self.stop_reason = ""
                if metrics["pop/exploitability"] <= spec.threshold:
                    self.stop_reason = "threshold"
                elif iteration >= spec.iterations - 1:
                    self.stop_reason = "budget"
                else:
                    added = []
                    for i, seat in enumerate(campaign.seats):
                        opponents = self.members(campaign.seats[1 - i])
                        version, found = self.best_response(iteration, i, opponents, last_sigma[1 - i])
                        oracle_metrics.update({f"oracle/{seat}/{k}": v for k, v in found.items()})
                        if version is not None:
                            added.append(version)
                    for version in added:  # after both oracles: each answered the populations as they were
                        self.population.add(version)
                    if not added:
                        self.stop_reason = "no new best response"
                metrics["perf/iteration_seconds"] = time.perf_counter() - start
                self.history.append({"iteration": float(iteration), **metrics, **oracle_metrics})
                self.log(metrics, step=iteration)
                self.log(oracle_metrics, step=iteration)  # its own batch: a resumed budget-stopped iteration logs it once
                checkpoint = self._save(iteration)
                if on_iteration:
                    on_iteration(iteration, {**metrics, **oracle_metrics})
                if self.stop_reason:
                    break
                iteration += 1
            if self.tracker:
                self.tracker.log_figure(league_figure(self.population.graph(self.records), title=f"{spec.name}: population"), "figures/league.png")
                self.tracker.log_figure(exploitability_figure(self.history), "figures/exploitability.png")
                self.tracker.log_text(json.dumps(self.population.to_dict(), indent=2), "population.json")
                self.tracker.set_tags({"agora.stop_reason": self.stop_reason})
        meta_strategies = {
            seat: {v.name: float(w) for v, w in zip(self.members(seat), weights)} for seat, weights in zip(campaign.seats, last_sigma or ((), ()))
        }
        return PSROCampaignResult(
            self.tracker.run_id if self.tracker else None,
            self.tracker.uri if self.tracker else None,
            iteration + 1,  # iterations done
            self.stop_reason,
            self.history,
            self.population,
            meta_strategies,
            {seat: [float(p) for p in mix] for seat, mix in zip(campaign.seats, mixtures or ((), ()))},
            checkpoint,
        )

    def summary_table(self, result: PSROCampaignResult):
        from rich.table import Table

        campaign = self.campaign
        table = Table(title=f"{campaign.spec.name}: PSRO ({campaign.spec.meta_solver} meta-solver, {campaign.spec.oracle.id} oracle), stopped on {result.stop_reason}", title_justify="left")
        actions = "/".join(campaign.actions)
        for column in ("iteration", "versions", "exploitability", "NashConv", *(f"{s} meta-mixture ({actions})" for s in campaign.seats)):
            table.add_column(column)
        for h in result.history:
            mixes = [" / ".join(f"{h[f'mixture/{s}/{a}']:.3f}" for a in campaign.actions) for s in campaign.seats]
            table.add_row(str(int(h["iteration"])), str(int(h["pop/size"])), f"{h['pop/exploitability']:.4f}", f"{h['pop/nash_conv']:.4f}", *mixes)
        return table


def exploitability_figure(history: list[dict[str, float]]):
    """Exploitability and NashConv of the meta-mixture per iteration (log scale when positive)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    steps = [int(h["iteration"]) for h in history]
    for key, label in (("pop/exploitability", "exploitability"), ("pop/nash_conv", "NashConv")):
        ax.plot(steps, [h[key] for h in history], marker="o", label=label)
    if all(h["pop/nash_conv"] > 0 for h in history):
        ax.set_yscale("log")
    ax.set(title="PSRO: exploitability of the meta-mixture", xlabel="iteration", ylabel="value (exact, from the payoff table)")
    ax.legend()
    return figure


def describe_psro(campaign: ResolvedPSRO) -> str:
    spec = campaign.spec
    sizes = ", ".join(f"{s} {sum(v.spec['seat'] == s for v in campaign.initial)}" for s in campaign.seats)
    return (
        f"PSRO campaign, matrix world ({campaign.world_config.game}), initial versions {sizes}, meta-solver {spec.meta_solver}, "
        f"oracle {spec.oracle.id}, up to {spec.iterations} iterations, threshold {spec.threshold:g}"
    )


def run_psro_campaign(campaign: ResolvedPSRO, **kwargs: Any) -> PSROCampaignResult:
    on_iteration = kwargs.pop("on_iteration", None)
    return PSRORunner(campaign, **kwargs).run(on_iteration)


PSRO = CampaignKind(ResolvedPSRO, resolve_psro, PSRORunner, describe_psro)
