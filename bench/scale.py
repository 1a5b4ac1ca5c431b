"""Scale-out on Ray: the same episodes played in this process (`backend: local`) and on Ray rollout workers.

Scripted werewolf (`scenarios/werewolf_scripted.yaml`) games per second with `backend: local`, 1 Ray worker
and 2 Ray workers; the LLM negotiation (`scenarios/negotiation.yaml`, the embedded model) local vs 2 workers;
and a PROJECTED table of what more workers would give, derived only from what the run measured.

Fair sides (`bench/harness.py`): every side of every round builds a fresh rollout with
`agora.run.start_rollout` (its own policies; for Ray, new actors that load them), then warms it up on
episode indices that no measured run plays (every Ray worker plays them once, the local rollout too), then
times `rollout.run(n)` alone. Building the rollout (actor start, policy loading) and the warm-up are
printed as start-up seconds, not hidden; the local Ray instance is started once, before any side, and
its start is printed too. The sides run in a rotated order each round; every figure is printed, the
medians make the ratios, and every side must play the same episodes (a digest of the transcripts).

The driver's merge cost: the CPU seconds of this (driver) process during a Ray side's timed run, per
episode (receiving shards, unpickling, merging counters; while it waits for workers it sleeps). The
projection caps the workers' rate at the episodes/s that cost allows one driver process.

    .venv/bin/python bench/scale.py [--games 1000] [--rounds 3] [--llm-episodes 16] [--out bench/results/scale.txt]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agora.execution import init_ray  # noqa: E402
from agora.run import start_rollout  # noqa: E402
from agora.scenario import ResolvedScenario, load_scenario  # noqa: E402
from agora.trajectory import Episode  # noqa: E402
from bench.harness import side_orders  # noqa: E402

SCENARIOS = ROOT / "scenarios"
SCRIPTED, LLM = "werewolf_scripted.yaml", "negotiation.yaml"
LOCAL = "local"
PROJECTED_WORKERS = (4, 8, 16, 32, 64, 128)


@dataclass
class Side:
    """How a side plays: the backend and its number of workers (0 for local)."""

    name: str
    workers: int

    @property
    def backend(self) -> str:
        return "ray" if self.workers else "local"


@dataclass
class SideRun:
    """One side's figures for one round."""

    episodes: int
    seconds: float  # the timed `rollout.run(episodes)`
    startup: float  # `start_rollout`: actors started and their policies built (or the local policies)
    warmup: float  # the warm-up episodes on every worker
    driver_cpu: float  # CPU seconds of this process during the timed run
    digest: str  # of the transcripts, to check that every side played the same episodes
    restarts: int = 0  # workers restarted during the timed run (a figure disturbed by a fault)

    @property
    def rate(self) -> float:
        return self.episodes / self.seconds


def scenario_for(file: str, episodes: int, side: Side) -> ResolvedScenario:
    overrides = {"episodes": episodes, "tracking.enabled": False, "execution.backend": side.backend}
    if side.workers:
        overrides["execution.workers"] = side.workers
    return load_scenario(SCENARIOS / file, overrides)


def transcript_digest(episodes: list[Episode]) -> str:
    """A digest of what was played (indices, seeds, who said and did what, returns); not logprobs, which
    batches of another composition compute equal only to float rounding."""
    played = [
        [e.index, e.seed, [[s.agent, s.text, s.action, s.fallback] for s in e.steps], sorted(e.returns.items())]
        for e in sorted(episodes, key=lambda e: e.index)
    ]
    return hashlib.sha256(json.dumps(played).encode()).hexdigest()[:12]


def warm_up(rollout, scenario: ResolvedScenario, indices: list[int]) -> None:
    """Play `indices` on every worker once (each actor's first task pays for imports and first calls), or on
    the local rollout; these episodes are not part of the measured run."""
    if not indices:
        return
    if scenario.spec.execution.backend == "ray":
        import ray

        ray.get([worker.play.remote(indices) for worker in rollout.workers])
    else:
        rollout.run(len(indices), first_index=indices[0])


def play_side(scenario: ResolvedScenario, episodes: int, warmup_episodes: int) -> SideRun:
    """A fresh rollout on the scenario's backend, warmed up on indices after the measured ones, then
    `rollout.run(episodes)` timed (wall and this process's CPU)."""
    start = time.perf_counter()
    rollout = start_rollout(scenario)
    startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        warm_up(rollout, scenario, list(range(episodes, episodes + warmup_episodes)))
        warmup = time.perf_counter() - start
        cpu, start = time.process_time(), time.perf_counter()
        played = rollout.run(episodes)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        restarts = int(rollout.perf().get("perf/worker_restarts", 0))
    finally:
        rollout.close()
    assert [e.index for e in played] == list(range(episodes)), "a side lost or repeated episodes"
    return SideRun(episodes, seconds, startup, warmup, cpu, transcript_digest(played), restarts)


def compare(
    file: str, sides: list[Side], episodes: int, rounds: int, warmup_episodes: int, say
) -> dict[str, list[SideRun]]:
    """Every side `rounds` times, in a rotated order per round; each run printed as it ends."""
    runs: dict[str, list[SideRun]] = {side.name: [] for side in sides}
    by_name = {side.name: side for side in sides}
    for round_, order in enumerate(side_orders([side.name for side in sides], rounds)):
        for name in order:
            run = play_side(scenario_for(file, episodes, by_name[name]), episodes, warmup_episodes)
            runs[name].append(run)
            driver = f", driver CPU {run.driver_cpu:.2f} s" if by_name[name].workers else ""
            if run.restarts:
                driver += f", {run.restarts} worker restarts: a fault disturbed this figure"
            say(
                f"round {round_} {name:>9}: {run.seconds:7.2f} s  {rate(run.rate):>8} episodes/s  (start-up "
                f"{run.startup:.2f} s, warm-up {run.warmup:.2f} s{driver})"
            )
    return runs


def rate(value: float) -> str:
    """Episodes/s with three significant figures at least (an LLM side plays fractions of one per second)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def median_rate(runs: list[SideRun]) -> float:
    return statistics.median(run.rate for run in runs)


def driver_cpu_per_episode(runs: list[SideRun]) -> float:
    return statistics.median(run.driver_cpu / run.episodes for run in runs)


def summarize(runs: dict[str, list[SideRun]], say) -> None:
    """Every side's raw rates and medians, and whether all sides played the same episodes."""
    for name, side_runs in runs.items():
        rates = " / ".join(rate(run.rate) for run in side_runs)
        startups = " / ".join(f"{run.startup + run.warmup:.2f}" for run in side_runs)
        say(f"{name:>9}: episodes/s {rates} (median {rate(median_rate(side_runs))}); start-up + warm-up s {startups}")
    digests = {run.digest for side_runs in runs.values() for run in side_runs}
    same = "yes" if len(digests) == 1 else f"NO ({len(digests)} different)"
    say(f"every side played the same episodes (transcript digest): {same}")


def project(per_worker: float, driver_cap: float, workers: list[int]) -> list[tuple[int, float, str]]:
    """PROJECTED episodes/s for each worker count: N x the per-worker rate, capped by what one driver process
    merges (1 / its CPU seconds per episode); with the bound that applies."""
    rows = []
    for n in workers:
        rate = n * per_worker
        rows.append((n, min(rate, driver_cap), "workers" if rate <= driver_cap else "driver"))
    return rows


def torch_threads(cpus_per_worker: float = 1.0) -> tuple[int, int]:
    """Torch's intra-op threads here and in a Ray task holding a worker's CPUs (Ray sets OMP_NUM_THREADS)."""
    import ray
    import torch

    def threads() -> int:
        import torch

        return torch.get_num_threads()

    return torch.get_num_threads(), ray.get(ray.remote(num_cpus=cpus_per_worker)(threads).remote())


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_ray(cpus: int) -> float:
    """Start the local Ray instance every Ray side joins; its start-up seconds."""

    start = time.perf_counter()
    init_ray("local", num_cpus=cpus)
    return time.perf_counter() - start


@dataclass
class Projection:
    """What the projection of one scenario derives from: the measured medians and the driver's cost."""

    name: str
    two_workers: float  # median episodes/s with 2 workers
    driver_cpu: float  # the driver's CPU seconds per episode with 2 workers
    one_worker: float | None = None  # median episodes/s with 1 worker, where measured

    @property
    def per_worker(self) -> float:
        return self.two_workers / 2

    @property
    def driver_cap(self) -> float:
        return 1 / self.driver_cpu if self.driver_cpu else float("inf")


def scripted_part(args, say) -> Projection:
    say(f"== scripted werewolf ({SCRIPTED}), {args.games} games per side, {args.rounds} rounds")
    sides = [Side(LOCAL, 0), Side("1 worker", 1), Side("2 workers", 2)]
    runs = compare(SCRIPTED, sides, args.games, args.rounds, args.warmup_games, say)
    summarize(runs, say)
    local, one, two = (median_rate(runs[side.name]) for side in sides)
    say(f"2 workers / 1 worker: {two / one:.2f}x (target >= 1.6x)")
    say(f"local / 1 worker: {local / one:.2f}x: the actor path costs {100 * (local / one - 1):+.1f}% (target <= 10%)")
    one_cpu, two_cpu = (driver_cpu_per_episode(runs[side.name]) for side in sides[1:])
    say(f"driver CPU per episode (median): 1 worker {1000 * one_cpu:.3f} ms, 2 workers {1000 * two_cpu:.3f} ms")
    return Projection("werewolf scripted", two, two_cpu, one)


def llm_part(args, cpus: int, say) -> Projection:
    say(f"== LLM negotiation ({LLM}, the embedded model), {args.llm_episodes} episodes per side, {args.rounds} rounds")
    here, worker = torch_threads()
    say(f"torch threads: {here} in this process (the local side), {worker} in a 1-CPU Ray task (each worker)")
    sides = [Side(LOCAL, 0), Side("2 workers", 2)]
    runs = compare(LLM, sides, args.llm_episodes, args.rounds, args.llm_warmup, say)
    summarize(runs, say)
    local, two = (median_rate(runs[side.name]) for side in sides)
    say(
        f"2 workers / local: {two / local:.2f}x (on {cpus} cores, two model copies share the cores that the "
        "local side's torch threads use: expect little or nothing)"
    )
    cost = driver_cpu_per_episode(runs["2 workers"])
    say(f"driver CPU per episode (median, 2 workers): {1000 * cost:.3f} ms")
    return Projection("negotiation LLM", two, cost)


def projection_part(projections: list[Projection], say) -> None:
    say("== PROJECTED, not measured: episodes/s with N workers = min(N x r, D)")
    say("   r: the per-worker rate measured with 2 workers (their median / 2 = 1-worker rate x 2-worker efficiency)")
    say("   D: what one driver merges: 1 / (its CPU seconds per episode, measured with 2 workers)")
    say("   assumes a CPU per worker, no network cost and a driver cost per episode flat in N; no multi-node")
    say("   cluster was measured")
    for p in projections:
        one = f"1 worker {rate(p.one_worker)}, " if p.one_worker is not None else ""
        measured = f"measured: {one}2 workers {rate(p.two_workers)}"
        say(f"   {p.name}: r = {rate(p.per_worker)}/s, D = {rate(p.driver_cap)}/s ({measured})")
    tables = [project(p.per_worker, p.driver_cap, list(PROJECTED_WORKERS)) for p in projections]
    say(f"{'workers':>8} | " + " | ".join(f"{p.name + ' episodes/s (bound)':>34}" for p in projections))
    for i, n in enumerate(PROJECTED_WORKERS):
        cells = [f"{rate(table[i][1]):>24} ({table[i][2]:>7})" for table in tables]
        say(f"{n:>8} | " + " | ".join(f"{cell:>34}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=1000, help="scripted werewolf games per side and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the sides' order rotates each round")
    parser.add_argument("--warmup-games", type=int, default=64, help="warm-up games on every worker, per side")
    parser.add_argument("--llm-episodes", type=int, default=16, help="LLM negotiation episodes per side (0: skip)")
    parser.add_argument("--llm-warmup", type=int, default=1, help="LLM warm-up episodes on every worker, per side")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.txt"), help="'-': print only")
    args = parser.parse_args()
    import ray

    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    cpus = os.cpu_count() or 1
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    say(f"# python bench/scale.py {' '.join(sys.argv[1:])}   ({cpus} CPU cores, load before {load()}; {when})")
    seconds = start_ray(max(cpus, 2))
    try:
        say(f"local Ray instance started once, for every Ray side: {seconds:.2f} s (num_cpus {max(cpus, 2)})")
        say()
        projections = [scripted_part(args, say)]
        if args.llm_episodes:
            say()
            projections.append(llm_part(args, cpus, say))
        say()
        projection_part(projections, say)
    finally:
        ray.shutdown()
    say(f"# load after: {load()}")
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
