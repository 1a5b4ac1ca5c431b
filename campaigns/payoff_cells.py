"""Payoff-matrix cells of a league or a PSRO population, played here or on Ray cell workers.

The versions of a league play through `VersionRouter` / `VersionPool` (every version's turns of a rollout
in one batched call each); LoRA snapshots act through one frozen copy of the learner's model whose adapter
weights are swapped in as their turns come (`LoRAVersions`). A payoff matrix is one plan (`PayoffPlan`:
versions, cells, games per cell, seeds) whose games are the episodes of one `GroupRollout`: game e of cell c
is episode e * n_cells + c, started from `seeds[e]` in every cell. With `execution.backend: ray` the cells
are cut into tasks played by `agora.execution.RayCells`: each worker loads the model once
(`LeagueCellJob`), gets the snapshots' adapter weights through Ray's object store (`SnapshotWeights`) and
plays its tasks' episode indices of the same rollout, so every game, and so the matrix, equals the local one.

PSRO's cells (`PSROCell`) are played by `solvers.psro.play_cell` from each cell's own seeds, here or on the
workers (`PSROCellJob`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from agora.execution import SHARDS_PER_WORKER, ExecutionSpec, RayCells
from agora.policy import Policy
from agora.registry import AGENTS
from agora.rollout import GroupRollout, episode_seed, policy_seed
from agora.run import build_policies, worker_environment
from solvers.population import PolicyVersion
from solvers.psro import play_cell

# what a payoff game leaves for the matrix: (episode index, seat -> return)
Game = tuple[int, dict[str, float]]


class VersionRouter:
    """A policy that plays each episode with the version assigned to it (`assignment[episode index]`).

    The rollout engine batches every pending turn of a seat's policy into one `act` call; the router
    splits that batch by version and passes each part to the version's policy (`pool(version, requests)`),
    so all groups (or all payoff cells) of a rollout are stepped together whatever version plays them.
    `expensive` / `uses_text` are those of the versions it routes to.
    """

    def __init__(self, pool: Any, assignment: dict[int, str]):
        from agora.policy import PolicyStats

        self.pool, self.assignment = pool, assignment
        policies = [pool.policy(v) for v in dict.fromkeys(assignment.values())]
        self.expensive = any(p.expensive for p in policies)
        self.uses_text = any(p.uses_text for p in policies)
        self.stats = PolicyStats()

    def act(self, requests: list) -> list:
        by_version: dict[str, list[int]] = {}
        for k, request in enumerate(requests):
            by_version.setdefault(self.assignment[request.episode], []).append(k)
        responses: list[Any] = [None] * len(requests)
        for version, indices in by_version.items():
            for k, response in zip(indices, self.pool.act(version, [requests[k] for k in indices])):
                responses[k] = response
        return responses

    def close(self) -> None:
        pass


class VersionPool:
    """The policies of a league's versions for one rollout, built on first use by `build(version)`.

    LoRA snapshots all act through ONE frozen model: `swap_in(version)` loads that version's adapter
    weights into it before its turns are sampled (a no-op when they are loaded already)."""

    def __init__(self, build: Any, swap_in: Any):
        self.build, self.swap_in = build, swap_in
        self.policies: dict[str, Any] = {}

    def policy(self, version: str) -> Any:
        if version not in self.policies:
            self.policies[version] = self.build(version)
        return self.policies[version]

    def act(self, version: str, requests: list) -> list:
        self.swap_in(version)
        return self.policy(version).act(requests)


def payoff_cells(n: int) -> list[tuple[int, int]]:
    """Every (row, column) pair of an n-version payoff matrix, row-major."""
    return [(k, l) for k in range(n) for l in range(n)]


class LoRAVersions:
    """A league's versions as policies: LoRA snapshots (`adapters`: name -> adapter weights) act through one
    frozen copy of the learner's model, loaded once; fixed members (`members`: name -> resolved seat) are
    built from their spec. `seed` seeds the LoRA init as the learner's (its B = 0 until weights are loaded)."""

    def __init__(self, learner_config: Any, lora: Any, seed: int, members: dict[str, Any], tokenizer: Any = None):
        from agora.lora import load_learner

        self.learner_config, self.members = learner_config, members
        self.model, loaded_tokenizer = load_learner(
            learner_config.model,
            lora,
            device=learner_config.device,
            dtype=learner_config.dtype,
            seed=policy_seed(seed, "lora"),
        )
        self.tokenizer = tokenizer or loaded_tokenizer
        self.model.requires_grad_(False)
        self.model.eval()
        self.adapters: dict[str, dict[str, Any]] = {}
        self.loaded: str | None = None  # the version whose adapter weights the model holds

    def pool(self, key: str, seed: int) -> VersionPool:
        """Fresh policies of the versions for one rollout (`key` names it), seeded from (`seed`, key, version)."""
        from campaigns.learner import learner_class

        def build(name: str) -> Policy:
            version_seed = policy_seed(seed, f"{key}/{name}")
            if name in self.adapters:  # frozen adapter: its KV cache stays valid while other versions take turns
                return learner_class(self.learner_config)(
                    self.learner_config,
                    seed=version_seed,
                    model=self.model,
                    tokenizer=self.tokenizer,
                    weights_key=lambda: ("league version", name, self.loaded),
                )
            member = self.members[name]
            return member.entry.load()(member.config, seed=version_seed)

        def swap_in(name: str) -> None:
            from agora.lora import load_adapter_state

            if name in self.adapters and self.loaded != name:
                load_adapter_state(self.model, self.adapters[name])
                self.loaded = name

        return VersionPool(build, swap_in)


# --- a league's payoff matrix -------------------------------------------------------------------------


@dataclass
class PayoffPlan:
    """One payoff matrix of a league: `versions` play side A (rows) and side B (columns) of `cells`,
    `per_cell` games each, on the seeds of the rollout rooted `root`; the versions' policies are seeded
    from (`seed`, `key`)."""

    versions: list[str]
    cells: list[tuple[int, int]]
    per_cell: int
    root: int
    key: str
    seed: int
    side_a: list[str]
    side_b: list[str]
    ids: dict[str, str]  # seat -> the policy id its episodes record
    concurrency: int
    max_retries: int

    def assignment(self, side: int) -> dict[int, str]:
        n = len(self.cells)
        return {e * n + k: self.versions[cell[side]] for e in range(self.per_cell) for k, cell in enumerate(self.cells)}

    def indices(self, cells: Sequence[int]) -> list[int]:
        """The episode indices of the games of `cells` (positions in `self.cells`)."""
        return sorted(e * len(self.cells) + k for k in cells for e in range(self.per_cell))


def payoff_rollout(plan: PayoffPlan, scenario: Any, pool: VersionPool, fixed: dict[str, Policy]) -> GroupRollout:
    """The rollout of a plan's games: episode e * n_cells + c (game e of cell c) starts from `seeds[e]`, the same
    in every cell; `fixed` plays the seats neither side plays."""
    routers = [VersionRouter(pool, plan.assignment(side)) for side in (0, 1)]
    seats = {**{s: routers[0] for s in plan.side_a}, **{s: routers[1] for s in plan.side_b}, **fixed}
    return GroupRollout(
        scenario.make_world,
        seats,
        {s: plan.ids[s] for s in seats},
        seed=plan.root,
        concurrency=plan.concurrency,
        max_retries=plan.max_retries,
        record_observations=False,
        seeds=[episode_seed(plan.root, e) for e in range(plan.per_cell)],
        group_size=len(plan.cells),
    )


@dataclass
class PayoffGames:
    """A task of a league's payoff matrix for a cell worker: the games of some of the plan's cells."""

    plan: PayoffPlan
    indices: list[int]


@dataclass
class SnapshotWeights:
    """The adapter weights of the league's snapshots in play, sent to every cell worker (`RayCells.apply`)."""

    adapters: dict[str, dict[str, Any]]
    key: str = "league/adapters"

    def apply(self, evaluator: LeagueEvaluator) -> None:
        evaluator.versions.adapters = dict(self.adapters)
        evaluator.versions.loaded = None


@dataclass
class LeagueCellJob:
    """What a cell worker of a league needs (picklable): the train scenario, the learner's model and LoRA
    configuration, the campaign seed and the fixed members."""

    scenario: Any
    learner_config: Any
    lora: Any
    seed: int
    members: dict[str, Any]

    def build(self) -> LeagueEvaluator:
        return LeagueEvaluator(self)

    def environment(self) -> dict[str, str]:
        """The fixed seats' API keys (server agents' `api_key_env`), set in the workers' processes too."""
        return worker_environment(self.scenario)


class LeagueEvaluator:
    """A cell worker's league: the frozen model loaded once, adapters swapped in, games played by index."""

    def __init__(self, job: LeagueCellJob):
        self.job = job
        self.versions = LoRAVersions(job.learner_config, job.lora, job.seed, job.members)
        self.fixed: tuple[int, dict[str, Policy]] | None = None  # (root, the other seats' policies) of the last plan

    def play(self, task: PayoffGames) -> list[Game]:
        plan = task.plan
        if self.fixed is None or self.fixed[0] != plan.root:
            self.fixed = (plan.root, build_policies(self.job.scenario, skip=plan.side_a + plan.side_b, seed=plan.root))
        rollout = payoff_rollout(plan, self.job.scenario, self.versions.pool(plan.key, plan.seed), self.fixed[1])
        return [(e.index, e.returns) for e in rollout.run(len(task.indices), indices=task.indices)]


def cells_per_task(n_cells: int, per_cell: int, spec: ExecutionSpec) -> int:
    """Cells in one worker task: `episodes_per_task` games' worth, else the matrix cut in 4 tasks per worker."""
    if spec.episodes_per_task:
        return max(1, spec.episodes_per_task // per_cell)
    return max(1, math.ceil(n_cells / (SHARDS_PER_WORKER * spec.workers)))


@dataclass
class CellRun:
    """The games of a payoff matrix and what their workers counted."""

    games: list[Game]
    restarts: int = 0
    workers: int = 0


def league_payoff_games(
    plan: PayoffPlan,
    scenario: Any,
    versions: LoRAVersions,
    fixed: dict[str, Policy],
    execution: ExecutionSpec,
    job: Callable[[], LeagueCellJob],
) -> CellRun:
    """Every game of `plan`: in this process (`versions`, `fixed`), or with `execution.backend: ray` on cell
    workers built from `job()`, which get the snapshots' weights of `versions` (the same games either way)."""
    if execution.backend != "ray":
        rollout = payoff_rollout(plan, scenario, versions.pool(plan.key, plan.seed), fixed)
        return CellRun([(e.index, e.returns) for e in rollout.run(plan.per_cell * len(plan.cells))])
    size = cells_per_task(len(plan.cells), plan.per_cell, execution)
    positions = list(range(len(plan.cells)))
    tasks = [PayoffGames(plan, plan.indices(positions[i : i + size])) for i in range(0, len(positions), size)]
    pool = RayCells(job(), execution)
    try:
        pool.apply(SnapshotWeights(versions.adapters))
        games = [game for result in pool.play(tasks) for game in result]
        return CellRun(sorted(games, key=lambda g: g[0]), pool.restarts, execution.workers)
    finally:
        pool.close()


# --- PSRO's cells ---------------------------------------------------------------------------------------


def build_version(version: PolicyVersion, seed: int) -> Policy:
    """The policy a PSRO version's spec names (a fixed `mixed` or `tabular` strategy), seeded."""
    entry = AGENTS.get(version.spec["policy"], world="matrix")
    return entry.load()(entry.config(probs=version.spec["probs"]), seed=seed)


@dataclass
class PSROCell:
    """One cell of PSRO's empirical game: `row` on the first seat against `column` on the second."""

    row: PolicyVersion
    column: PolicyVersion


@dataclass
class PSROCellJob:
    """PSRO's cells as a cell worker plays them (`solvers.psro.play_cell`, seeded by the cell)."""

    world: Any  # the campaign's world entry
    world_config: Any
    episodes_per_cell: int
    seed: int
    concurrency: int

    def make_world(self) -> Any:
        return self.world.load()(self.world_config)

    def build(self) -> PSROCellJob:
        return self

    def environment(self) -> dict[str, str]:
        return {}  # PSRO's versions are fixed strategies: no server to reach

    def play(self, cell: PSROCell) -> list[dict[str, float]]:
        """Each episode's returns (seat -> return), in episode order."""
        row, column = cell.row, cell.column
        episodes = play_cell(
            self.make_world,
            (row.name, lambda seed: build_version(row, seed)),
            (column.name, lambda seed: build_version(column, seed)),
            self.episodes_per_cell,
            self.seed,
            self.concurrency,
        )
        return [e.returns for e in episodes]


def psro_cell_returns(job: PSROCellJob, cells: list[PSROCell], pool: RayCells | None) -> list[list[dict[str, float]]]:
    """Every cell's episode returns: in this process, or on `pool`'s workers (the same either way)."""
    if pool is None:
        return [job.play(cell) for cell in cells]
    return pool.play(cells)
