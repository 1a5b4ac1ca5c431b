"""PSRO as a training campaign: `agora train scenarios/campaigns/rps_psro.yaml` (`kind: psro`).

The PSRO loop ("A Unified Game-Theoretic Approach to Multiagent Reinforcement Learning", arXiv 1711.00832) on the
matrix world, whose payoff table makes exploitability exact:

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
meta-mixture (solvers.population.sample_opponents, rule `psro`).

Each iteration logs pop/* (exploitability, NashConv, sizes), mixture/<seat>/<action>, oracle/<seat>/*, payoff
heatmap and table, every iteration's σ as one table (`meta/strategies.json`) and figure; at the end the league
graph, exploitability curve, population JSON and the final σ in the run's description. Checkpointed after every
iteration; `--resume` continues into the same run and equals a straight one (draws derive from seed, iteration).
"""

from __future__ import annotations

import fnmatch
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agora.campaign import CampaignConfig, CampaignKind, CampaignResult, CampaignRunner, Summary
from agora.checkpoint import RunFolder
from agora.errors import AgoraError, ScenarioError
from agora.execution import RayCells
from agora.policy import Policy
from agora.registry import AGENTS, WORLDS
from agora.rollout import Rollout, policy_seed
from agora.scenario import AgentSpec, WorldFile, WorldSpec, validate_model
from campaigns.figures import exploitability_figure, league_figure, payoff_heatmap, payoff_table
from campaigns.leaderboard import log_meta_strategies, meta_strategy_markdown
from campaigns.payoff_cells import PSROCell, PSROCellJob, VersionPool, VersionRouter, build_version, psro_cell_returns
from solvers import meta
from solvers.population import PolicyVersion, Population, WinRecord, sample_opponents
from solvers.psro import MetaSolver, PSROStep, cell_value, matrix_best_response, mixture, psro_iteration
from trainers.advantages import group_advantages

STATIONARY = ("mixed", "tabular")  # matrix-world agents that play one fixed mixed strategy every round


class OracleSpec(BaseModel):
    """`oracle: {id: exact | train, ...}`; the other keys are the `train` oracle's."""

    model_config = ConfigDict(extra="forbid")
    id: Literal["exact", "train"] = Field(
        "train",
        description="exact: best response from the payoff table; train: a tabular softmax policy trained by policy "
        "gradient",
    )
    steps: int = Field(40, ge=1, le=100_000, description="train: policy-gradient steps")
    episodes: int = Field(
        32,
        ge=2,
        le=100_000,
        description="train: episodes per step, each against an opponent drawn from the meta-mixture",
    )
    learning_rate: float = Field(0.5, gt=0, le=100, description="train: step size on the logits θ")
    statistics: Literal["group", "batch"] = Field(
        "group", description="train: advantage mean/std per drawn opponent (group) or over the step's batch"
    )
    std_normalize: bool = Field(True, description="train: divide advantages by the std (False: Dr. GRPO)")
    min_prob: float = Field(
        1e-4,
        gt=0,
        lt=0.1,
        description="train: the trained strategy is kept ≥ this per action (a tabular version needs probs > 0)",
    )


class PSROCheckpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str | None = Field(
        None, description="checkpoint folder (default: checkpoints/<name> in the working directory)"
    )
    keep: int = Field(2, ge=1, le=1000, description="checkpoints kept on disk (all are logged to MLflow)")


class PSROConfig(CampaignConfig):
    """A PSRO campaign file (`kind: psro`)."""

    world: WorldSpec
    population: dict[str, dict[str, AgentSpec]] = Field(
        min_length=1,
        description="seat (or glob pattern) -> initial versions: name -> fixed strategy (policy mixed or tabular)",
    )
    meta_solver: MetaSolver = Field(
        "nash", description="nash (zero-sum LP: double oracle), uniform (fictitious play), replicator, alpharank"
    )
    oracle: OracleSpec = OracleSpec()
    iterations: int = Field(
        ge=1,
        le=10_000,
        description="iteration budget: each evaluates the population, and all but the last add best responses",
    )
    threshold: float = Field(1e-6, ge=0, description="stop when the meta-mixture's exploitability is at most this")
    episodes_per_cell: int = Field(
        20, ge=1, le=1_000_000, description="episodes per cell of the empirical payoff matrix"
    )
    seed: int = Field(0, ge=0, description="root seed of every episode, opponent draw and oracle")
    concurrency: int = Field(32, ge=1, le=4096, description="episodes stepped together")
    checkpoint: PSROCheckpointSpec = PSROCheckpointSpec()


class PSROCampaign(WorldFile, CampaignKind):
    """PSRO on the matrix world: payoffs by rollouts, a meta-solver, best responses (exact or trained tabular) added
    per iteration."""

    Config = PSROConfig
    ray_workers = True  # payoff cells on Ray cell workers (`campaigns.payoff_cells`)

    def __init__(self, spec: PSROConfig, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        self.world_entry = WORLDS.get(spec.world.id, path="world.id")
        if self.world_entry.name != "matrix":
            raise ScenarioError(
                "PSRO campaigns run on the matrix world (its payoff table makes exploitability exact), not "
                f"'{self.world_entry.name}'",
                path="world.id",
                hint="world: {id: matrix, game: rock_paper_scissors}",
            )
        self.world_config = validate_model(
            self.world_entry.config, spec.world.model_extra or {}, prefix="world", file=source
        )
        self.actions, payoffs = self.world_config.table()
        self.A, self.B = payoffs[..., 0], payoffs[..., 1]  # the row seat's and the column seat's stage payoffs
        self.seats = list(self.world_entry.load()(self.world_config).possible_agents)
        if spec.meta_solver == "nash" and not np.allclose(self.A + self.B, (self.A + self.B).flat[0]):
            raise ScenarioError(
                f"the nash meta-solver is the zero-sum LP, and {self.world_config.game} is not constant-sum",
                path="meta_solver",
                hint="use replicator, alpharank or uniform",
            )
        self.initial: list[PolicyVersion] = []  # both seats' starting versions (spec: seat, policy, probs)
        for key in spec.population:
            if not fnmatch.filter(self.seats, key):
                raise ScenarioError(
                    f"no seat matches '{key}'; seats: {', '.join(self.seats)}", path=f"population.{key}"
                )
        for seat in self.seats:
            mine = [k for k in spec.population if fnmatch.fnmatch(seat, k)]
            if not mine:
                raise ScenarioError(
                    f"seat '{seat}' has no initial strategy",
                    path="population",
                    hint=f"add `{seat}: {{rock: {{policy: mixed, probs: [1, 0, 0]}}}}` or use '*'",
                )
            for key in mine:
                if not spec.population[key]:
                    raise ScenarioError("give at least one initial strategy", path=f"population.{key}")
                for name, agent in spec.population[key].items():
                    self.initial.append(self.version(seat, name, agent, f"population.{key}.{name}"))

    def version(self, seat: str, name: str, agent: AgentSpec, path: str) -> PolicyVersion:
        entry = AGENTS.get(agent.policy, world="matrix", path=f"{path}.policy")
        if entry.name not in STATIONARY:
            raise ScenarioError(
                f"'{entry.name}' is not a fixed mixed strategy, so its exploitability is not defined",
                path=f"{path}.policy",
                hint="use policy: mixed (probs: [...]) or tabular",
            )
        config = validate_model(entry.config, agent.model_extra or {}, prefix=path, file=self.source)
        probs = config.probs if config.probs is not None else [1 / len(self.actions)] * len(self.actions)
        if len(probs) != len(self.actions):
            raise ScenarioError(
                f"probs has {len(probs)} entries; the game has {len(self.actions)} actions ({', '.join(self.actions)})",
                path=f"{path}.probs",
            )
        return PolicyVersion(
            f"{seat}/{name}", "scripted", {"seat": seat, "policy": entry.name, "probs": [float(p) for p in probs]}
        )

    @classmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        return {
            "name": "example-psro",
            "world": {"id": "matrix", "game": "rock_paper_scissors", "rounds": 5},
            "population": {"*": {"rock": {"policy": "mixed", "probs": [1, 0, 0]}}},
            "oracle": {"id": "exact"},
            "iterations": 1,
            "episodes_per_cell": 2,
        }

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(mode="json", exclude={"world", "population"})
        out["world"] = self.world_json()
        out["population"] = {v.name: v.spec for v in self.initial}
        return out

    def file_config(self) -> dict[str, Any]:
        return {**super().file_config(), "world": self.world_json()}

    def describe(self) -> str:
        spec = self.spec
        sizes = ", ".join(f"{s} {sum(v.spec['seat'] == s for v in self.initial)}" for s in self.seats)
        return (
            f"PSRO campaign, matrix world ({self.world_config.game}), initial versions {sizes}, meta-solver "
            f"{spec.meta_solver}, "
            f"oracle {spec.oracle.id}, up to {spec.iterations} iterations, threshold {spec.threshold:g}"
        )

    def start(self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None) -> PSRORunner:
        return PSRORunner(self, resume=resume, tracking_uri=tracking_uri, track=track)


# --- policies of versions -----------------------------------------------------------------------


def meta_mixture_opponent(policies: dict[str, Policy], drawn: list[str]) -> VersionRouter:
    """The opponent seat in an oracle's episodes: episode `e` is played by `policies[drawn[e]]`."""
    return VersionRouter(VersionPool(policies.__getitem__, lambda name: None), dict(enumerate(drawn)))


# --- oracles --------------------------------------------------------------------------------------


def interior(probs: np.ndarray, min_prob: float) -> list[float]:
    """A strategy kept away from 0/1: p ← max(p, min_prob) / Σ, rounded to 6 decimals, summing to 1."""
    p = np.maximum(np.asarray(probs, dtype=np.float64), min_prob)
    p = np.round(p / p.sum(), 6)
    p[int(np.argmax(p))] += 1.0 - p.sum()
    return [float(v) for v in p]


def train_best_response(
    campaign: PSROCampaign, seat: str, opponents: list[PolicyVersion], sigma: np.ndarray, seed: int
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
    learner = TabularSoftmax(TabularSoftmax.Config(), seed=policy_seed(seed, "learner"), n_actions=n)
    names = [v.name for v in opponents]
    policies = {v.name: build_version(v, policy_seed(seed, v.name)) for v in opponents}
    rng = np.random.default_rng(policy_seed(seed, "matchmaking"))
    weights = dict(zip(names, map(float, sigma)))
    rewards_seen, regrets, loss = [], [], 0.0
    for step in range(oracle.steps):
        drawn = sample_opponents(rng, names, oracle.episodes, rule="psro", meta_strategy=weights)
        rollout = Rollout(
            campaign.make_world,
            {seat: learner, other: meta_mixture_opponent(policies, drawn)},
            {seat: "learner", other: "meta-mixture"},
            seed=policy_seed(seed, f"step {step}"),
            concurrency=spec.concurrency,
            record_observations=False,
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


class PSRORunner(CampaignRunner):
    """One PSRO campaign: populations, the payoff cells played so far, the MLflow run and checkpoints."""

    progress = {"pop/exploitability": "exploitability", "pop/nash_conv": "NashConv", "pop/size": "versions"}
    table_only = ("meta/",)  # σ per version: meta/strategies.json

    def __init__(
        self,
        campaign: PSROCampaign,
        *,
        resume: bool = False,
        tracking_uri: str | None = None,
        track: bool | None = None,
    ):
        super().__init__(campaign, resume=resume)
        self.population = Population(campaign.initial)
        self.cells: dict[str, list[float]] = {}  # "row|column" -> [U_0, U_1] per round
        self.records = WinRecord()
        self.history: list[dict[str, float]] = []
        self.stop_reason = ""
        self.cell_workers: RayCells | None = None  # with `execution.backend: ray`, while `iterate` runs
        if self.resumed_from:
            self.restore(RunFolder.load(self.resumed_from))
        spec = campaign.spec
        self.open_run(
            {
                "agora.kind": "psro",
                "agora.world": "matrix",
                "agora.meta_solver": spec.meta_solver,
                "agora.oracle": spec.oracle.id,
            },
            tracking_uri=tracking_uri,
            track=track,
        )

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("game") != self.game_fingerprint():
            raise AgoraError(
                f"{self.resumed_from} holds a campaign with another game, population, meta-solver, oracle or seed; "
                "only iterations and threshold may change on --resume (or set checkpoint.dir to start over)"
            )
        self.population = Population.from_dict(state["population"])
        self.cells, self.records = state["cells"], WinRecord.from_dict(state["records"])
        iteration, self.stop_reason = int(state["iteration"]), state["stop_reason"]
        self.first_iteration = iteration + 1
        if self.stop_reason == "budget" and self.first_iteration < self.campaign.spec.iterations:
            # a run stopped by its budget did not run the oracles of its last iteration: with a larger budget,
            # that iteration runs again
            self.first_iteration, self.stop_reason = iteration, ""
        self.history = [h for h in state["history"] if h["iteration"] < self.first_iteration]

    def remaining(self) -> bool:
        return not self.stop_reason and super().remaining()

    def game_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must share with the campaign that resumes it (all but the budget and the threshold)."""
        config = self.campaign.resolved_config()
        return {
            k: v
            for k, v in config.items()
            if k not in ("iterations", "threshold", "checkpoint", "tracking", "name", "description", "concurrency")
        }

    # the population
    def members(self, seat: str) -> list[PolicyVersion]:
        return [v for v in self.population if v.spec["seat"] == seat]

    def strategy(self, version: PolicyVersion) -> np.ndarray:
        return np.asarray(version.spec["probs"], dtype=np.float64)

    def payoffs(self) -> tuple[np.ndarray, np.ndarray, int]:
        """U_0, U_1 per round over the current populations; plays only cells not played before (on the cell
        workers with `execution.backend: ray`: the same values, each cell's games come from its own seeds)."""
        campaign, rounds = self.campaign, self.campaign.world_config.rounds
        rows, columns = self.members(campaign.seats[0]), self.members(campaign.seats[1])
        missing = [PSROCell(r, c) for r in rows for c in columns if f"{r.name}|{c.name}" not in self.cells]
        for cell, returns in zip(missing, psro_cell_returns(self.cell_job(), missing, self.cell_workers)):
            for r in returns:
                r0, r1 = r[campaign.seats[0]], r[campaign.seats[1]]
                self.records.record(cell.row.name, cell.column.name, 1.0 if r0 > r1 else 0.5 if r0 == r1 else 0.0)
            u0, u1 = cell_value(campaign.seats, returns)
            self.cells[f"{cell.row.name}|{cell.column.name}"] = [u0 / rounds, u1 / rounds]
        U0 = np.array([[self.cells[f"{r.name}|{c.name}"][0] for c in columns] for r in rows])
        U1 = np.array([[self.cells[f"{r.name}|{c.name}"][1] for c in columns] for r in rows])
        return U0, U1, len(missing)

    def cell_job(self) -> PSROCellJob:
        spec = self.campaign.spec
        return PSROCellJob(
            self.campaign.world_entry, self.campaign.world_config, spec.episodes_per_cell, spec.seed, spec.concurrency
        )

    def best_response(
        self, iteration: int, seat_index: int, opponents: list[PolicyVersion], sigma: np.ndarray
    ) -> tuple[PolicyVersion | None, dict[str, float]]:
        """The oracle's new version for seat `seat_index` against the opponents' meta-mixture (None: nothing new)."""
        campaign, oracle = self.campaign, self.campaign.spec.oracle
        seat = campaign.seats[seat_index]
        against = [v.name for v, w in zip(opponents, sigma) if w > 1e-9]
        weights = {v.name: float(w) for v, w in zip(opponents, sigma) if w > 1e-9}
        mix = mixture([self.strategy(v) for v in opponents], sigma)
        values = campaign.A @ mix if seat_index == 0 else mix @ campaign.B  # each pure action's payoff vs the mixture
        name = f"{seat}/br{iteration}"
        if oracle.id == "exact":
            probs = matrix_best_response(campaign.A, campaign.B)(
                seat_index, [self.strategy(v) for v in opponents], sigma
            )
            metrics = {"br_value": float(values.max())}
            if any(np.array_equal(probs, self.strategy(v)) for v in self.members(seat)):
                return None, metrics
            version = PolicyVersion(
                name,
                "scripted",
                {"seat": seat, "policy": "mixed", "probs": probs.tolist(), "opponent_weights": weights},
                opponents=against,
                iteration=iteration,
            )
            return version, metrics
        seed = policy_seed(campaign.spec.seed, f"oracle {iteration} {seat}")
        probs, metrics = train_best_response(campaign, seat, opponents, sigma, seed)
        kept = interior(probs, oracle.min_prob)
        metrics["br_value"] = float(values.max())
        metrics["br_gap"] = float(
            values.max() - np.asarray(kept) @ values
        )  # exact: how far the trained strategy is from a best response
        version = PolicyVersion(
            name,
            "tabular",
            {"seat": seat, "policy": "tabular", "probs": kept, "opponent_weights": weights},
            opponents=against,
            iteration=iteration,
        )
        return version, metrics

    def evaluate(self, iteration: int, last: bool) -> tuple[dict[str, float], dict[str, float], PSROStep]:
        """One PSRO iteration (`solvers.psro.psro_iteration`) on the payoffs of the current populations: σ, the
        exact exploitability of the meta-mixture, each seat's oracle. Returns pop/*, meta/* and mixture/*
        metrics, oracle/<seat>/* metrics, and the step (its new versions are not added yet)."""
        campaign, spec = self.campaign, self.campaign.spec
        U0, U1, played = self.payoffs()
        rows, columns = self.members(campaign.seats[0]), self.members(campaign.seats[1])
        oracle_metrics: dict[str, float] = {}

        def oracle(player: int, opponents: list[PolicyVersion], sigma: np.ndarray) -> PolicyVersion | None:
            version, found = self.best_response(iteration, player, opponents, sigma)
            oracle_metrics.update({f"oracle/{campaign.seats[player]}/{k}": v for k, v in found.items()})
            return version

        def exploitability(p0: list[PolicyVersion], x: np.ndarray, p1: list[PolicyVersion], y: np.ndarray) -> float:
            return meta.nash_conv(campaign.A, campaign.B, self.mixture(p0, x), self.mixture(p1, y)) / 2

        step = psro_iteration(
            (rows, columns),
            (U0, U1),
            oracle,
            meta_solver=spec.meta_solver,
            exploitability=exploitability,
            threshold=spec.threshold,
            last=last,
            same=lambda a, b: False,
        )  # the oracle returns None for nothing new
        metrics = {
            "pop/exploitability": step.exploitability,
            "pop/nash_conv": 2 * step.exploitability,
            "pop/size": len(self.population),  # counts stay integers: printed and logged as such
            "pop/cells_played": int(played),
        }
        for seat, members, weights in zip(campaign.seats, (rows, columns), step.sigma):
            metrics[f"pop/size/{seat}"] = len(members)
            metrics.update({f"meta/{v.name}": float(w) for v, w in zip(members, weights)})
            metrics.update(
                {f"mixture/{seat}/{a}": float(p) for a, p in zip(campaign.actions, self.mixture(members, weights))}
            )
        if self.tracker:
            names0, names1 = [v.name for v in rows], [v.name for v in columns]
            self.tracker.log_figure(
                payoff_heatmap(
                    U0,
                    names0,
                    names1,
                    title=f"iteration {iteration}: {campaign.seats[0]}'s payoff per round",
                    label=f"{campaign.seats[0]}'s payoff",
                ),
                f"payoffs/heatmap_iter_{iteration:03d}.png",
            )
            self.tracker.log_table(payoff_table(U0, names0, names1), f"payoffs/table_iter_{iteration:03d}.json")
        return metrics, oracle_metrics, step

    def mixture(self, versions: list[PolicyVersion], sigma: np.ndarray) -> np.ndarray:
        """The meta-mixture of `versions` with weights σ, in action space."""
        return mixture([self.strategy(v) for v in versions], sigma)

    def save(self, iteration: int) -> Path:
        state = {
            "game": self.game_fingerprint(),
            "stop_reason": self.stop_reason,
            "population": self.population.to_dict(),
            "cells": self.cells,
            "records": self.records.to_dict(),
            "history": self.history,
        }
        return self.checkpoint(iteration, state, keep=self.campaign.spec.checkpoint.keep)

    def new_result(self) -> CampaignResult:
        result = super().new_result()
        result.history = {int(h["iteration"]): h for h in self.history}  # restored iterations included
        return result

    def iterate(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        spec = self.campaign.spec
        if spec.execution.backend == "ray":
            self.cell_workers = RayCells(self.cell_job(), spec.execution)
        try:
            self.iterations(result, on_iteration)
        finally:
            if self.cell_workers is not None:
                self.cell_workers.close()

    def iterations(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        spec = self.campaign.spec
        iteration = self.first_iteration
        while True:
            start = time.perf_counter()
            metrics, oracle_metrics, step = self.evaluate(iteration, last=iteration >= spec.iterations - 1)
            for version in step.new:  # after both oracles: each answered the populations as they were
                if version is not None:
                    self.population.add(version)
            self.stop_reason = step.stop_reason
            metrics["perf/iteration_seconds"] = time.perf_counter() - start
            if self.cell_workers is not None:
                metrics.update(self.cell_workers.perf())
            self.history.append({"iteration": float(iteration), **metrics, **oracle_metrics})
            self.log(metrics, step=iteration)
            self.log(oracle_metrics, step=iteration)  # its own batch: a resumed budget-stopped iteration logs it once
            if self.tracker:
                log_meta_strategies(self.tracker, self.history, list(self.population), self.campaign)
            result.checkpoint = self.save(iteration)
            result.history[iteration], result.iterations_done = {**metrics, **oracle_metrics}, iteration + 1
            if on_iteration:
                on_iteration(iteration, {**metrics, **oracle_metrics})
            if self.stop_reason:
                break
            iteration += 1

    def finish(self, result: CampaignResult) -> None:
        """The league graph, the exploitability curve, population.json, and the final meta-strategies (the last
        iteration's σ, from its metrics: a resumed campaign has them from its checkpoint)."""
        campaign, spec = self.campaign, self.campaign.spec
        if self.tracker:
            self.tracker.log_figure(
                league_figure(self.population.graph(self.records), title=f"{spec.name}: population"),
                "figures/league.png",
            )
            self.tracker.log_figure(exploitability_figure(self.history), "figures/exploitability.png")
            self.tracker.log_text(json.dumps(self.population.to_dict(), indent=2), "population.json")
        result.stop_reason = self.stop_reason
        last = self.history[-1] if self.history else {}
        sigma = {seat: [v for v in self.members(seat) if f"meta/{v.name}" in last] for seat in campaign.seats}
        result.outputs = {
            "population": self.population,
            "meta_strategies": {seat: {v.name: last[f"meta/{v.name}"] for v in sigma[seat]} for seat in sigma},
            "mixtures": {
                seat: [float(p) for p in self.mixture(vs, np.array([last[f"meta/{v.name}"] for v in vs]))] if vs else []
                for seat, vs in sigma.items()
            },
        }

    def results_markdown(self, result: CampaignResult) -> str:
        return meta_strategy_markdown(result.outputs, self.campaign.actions)

    def summary(self, result: CampaignResult) -> Summary:
        spec, actions = self.campaign.spec, self.campaign.actions
        rows = []
        for h in self.history:
            mixes = [" / ".join(f"{h[f'mixture/{s}/{a}']:.3f}" for a in actions) for s in self.campaign.seats]
            rows.append(
                [
                    str(int(h["iteration"])),
                    str(int(h["pop/size"])),
                    f"{h['pop/exploitability']:.4f}",
                    f"{h['pop/nash_conv']:.4f}",
                    *mixes,
                ]
            )
        columns = [
            "iteration",
            "versions",
            "exploitability",
            "NashConv",
            *(f"{s} meta-mixture ({'/'.join(actions)})" for s in self.campaign.seats),
        ]
        title = (
            f"{spec.name}: PSRO ({spec.meta_solver} meta-solver, {spec.oracle.id} oracle), stopped on "
            f"{result.stop_reason}"
        )
        return Summary(title, columns, rows)
