"""Payoff-matrix cells on Ray cell workers (agora/execution.py RayCells, campaigns/payoff_cells.py): a PSRO
campaign's and a league's payoff matrices equal the local ones, and a worker killed mid-matrix is replaced.

One local Ray instance for the module (campaigns join it instead of starting their own)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from agora.campaign import load_campaign
from agora.errors import AgoraError
from agora.execution import ExecutionSpec, RayCells
from agora.lora import adapter_state
from campaigns import payoff_cells
from campaigns.payoff_cells import LeagueCellJob, PSROCell, SnapshotWeights, psro_cell_returns
from campaigns.train import TrainCampaign
from tests.conftest import SCENARIOS
from tests.test_league_campaign import league_file

ray = pytest.importorskip("ray")

MIXED = {  # mixed strategies: a cell's value depends on the seeds its games are played from
    "population": {
        "player_0": {
            "a": {"policy": "mixed", "probs": [0.5, 0.3, 0.2]},
            "b": {"policy": "mixed", "probs": [0.2, 0.2, 0.6]},
        },
        "player_1": {
            "c": {"policy": "mixed", "probs": [0.1, 0.6, 0.3]},
            "d": {"policy": "mixed", "probs": [0.4, 0.4, 0.2]},
        },
    },
    "oracle.id": "exact",
    "iterations": 3,
    "threshold": 0.0,
    "episodes_per_cell": 6,
    "concurrency": 4,
}


@pytest.fixture(scope="module", autouse=True)
def ray_instance(ray_address):
    """The module's local Ray instance (`ray_address` in tests/conftest.py)."""
    yield


def cell_worker_pids() -> list[int]:
    """Processes of live CellWorker actors of this test session (Ray names them `ray::CellWorker...`; they run in
    the driver's working directory, unlike those of another session on the machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::CellWorker") and (
                    entry / "cwd"
                ).resolve() == Path.cwd().resolve():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def psro(tmp_path, **overrides):
    return load_campaign(
        SCENARIOS / "campaigns" / "rps_psro.yaml", {**MIXED, "checkpoint.dir": str(tmp_path / "ck"), **overrides}
    )


def test_psro_payoff_cells_on_two_workers_equal_the_local_ones(tmp_path):
    local = psro(tmp_path / "local").start(track=False)
    local_result = local.run()
    spread = psro(tmp_path / "ray", **{"execution.backend": "ray", "execution.workers": 2}).start(track=False)
    spread_result = spread.run()
    assert len(local.cells) >= 9 and spread.cells == local.cells  # every cell, bit for bit
    assert len({tuple(v) for v in local.cells.values()}) > 2  # mixed strategies: the cells differ by their games
    assert spread.records.to_dict() == local.records.to_dict()
    for i, metrics in local_result.history.items():
        assert spread_result.history[i]["pop/exploitability"] == metrics["pop/exploitability"]
        assert spread_result.history[i]["perf/workers"] == 2 and spread_result.history[i]["perf/worker_restarts"] == 0
    deadline = time.monotonic() + 10
    while cell_worker_pids() and time.monotonic() < deadline:  # the campaign stopped its workers
        time.sleep(0.1)
    assert cell_worker_pids() == []


def test_a_cell_worker_killed_mid_matrix_is_replaced_and_the_matrix_is_unchanged(tmp_path):
    runner = psro(tmp_path).start(track=False)
    rows, columns = runner.members("player_0"), runner.members("player_1")
    cells = [PSROCell(r, c) for r in rows + rows for c in columns + columns]  # 16 cells (repeats are played again)
    job = runner.cell_job()
    expected = psro_cell_returns(job, cells, None)
    pool = RayCells(job, ExecutionSpec(backend="ray", workers=2))
    killed: list[int] = []

    def kill_once(cell, returns) -> None:
        if not killed:
            killed.append(pool.pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    try:
        assert pool.play(cells, on_result=kill_once) == expected
        assert killed and pool.restarts >= 1 and killed[0] not in pool.pids()
    finally:
        pool.close()


def test_when_cell_workers_run_out_of_restarts_the_campaign_stops_with_a_message(tmp_path):
    runner = psro(tmp_path).start(track=False)
    cells = [PSROCell(r, c) for r in runner.members("player_0") for c in runner.members("player_1")] * 4
    pool = RayCells(runner.cell_job(), ExecutionSpec(backend="ray", workers=2, max_restarts=0))

    pid = pool.pids()[0]

    def kill(cell, returns) -> None:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)

    try:
        with pytest.raises(
            AgoraError,
            match=r"^a Ray cell worker died .* after 0 restarts, the limit \(execution.max_restarts: 0\); not played: "
            r"\d+ cells?; every finished one is kept",
        ):
            pool.play(cells, on_result=kill)
    finally:
        pool.close()


class KillingCells(RayCells):
    """Cell workers, one of which is SIGKILLed when the first task comes back (mid-matrix)."""

    def play(self, cells, on_result=None):
        killed: list[int] = []

        def kill_once(cell, result) -> None:
            if not killed:
                killed.append(self.pids()[0])
                os.kill(killed[0], signal.SIGKILL)

        results = super().play(cells, kill_once)
        assert killed and killed[0] not in self.pids()
        return results


def test_league_payoff_matrix_on_two_workers_equals_the_local_one(tmp_path, tiny_model_dir, monkeypatch):
    """Two LoRA snapshots (distinct weights) and two members: the 4x4 matrix's 16 games, here and on workers, one
    of which is killed mid-matrix."""
    monkeypatch.setattr(TrainCampaign, "ray_workers", True)  # the train kind's own rollouts stay local here
    monkeypatch.setattr(payoff_cells, "RayCells", KillingCells)
    campaign = load_campaign(
        league_file(tmp_path, tiny_model_dir, iterations=1), {"league.payoff.episodes_per_cell": 1}
    )
    runner = campaign.start(track=False)
    opponents = runner.opponents
    with torch.no_grad():
        for name, weight in runner.model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    opponents.snapshot(1)
    assert len(opponents.league.candidates()) == 4 and len(opponents.league.adapters) == 2

    def matrix(execution: ExecutionSpec):
        campaign.spec = campaign.spec.model_copy(update={"execution": execution})
        games = len(opponents.league.games)
        metrics = opponents.payoff(1, None)
        return metrics, [(g.a, g.b, g.score_a) for g in opponents.league.games[games:]], dict(opponents.league.meta)

    local_metrics, local_games, local_meta = matrix(ExecutionSpec())
    metrics, games, meta = matrix(ExecutionSpec(backend="ray", workers=2))
    assert len(games) == 16 and games == local_games and meta == local_meta
    assert metrics["league/exploitability"] == local_metrics["league/exploitability"]
    assert metrics["perf/payoff_workers"] == 2 and metrics["perf/payoff_worker_restarts"] >= 1
    # what a worker does with the snapshots' weights it is sent: each version acts with its own adapter
    evaluator = LeagueCellJob(
        campaign.train, campaign.learner_config, campaign.spec.learner.lora, campaign.spec.seed, campaign.league_members
    ).build()
    SnapshotWeights(opponents.league.adapters).apply(evaluator)
    pool = evaluator.versions.pool("payoff/1", 0)
    for version in ("learner-1", "learner-0", "learner-1"):
        pool.swap_in(version)
        loaded = adapter_state(evaluator.versions.model)
        assert all(torch.equal(loaded[k], v) for k, v in opponents.league.adapters[version].items())
    assert not all(torch.equal(opponents.league.adapters["learner-0"][k], v) for k, v in loaded.items())
