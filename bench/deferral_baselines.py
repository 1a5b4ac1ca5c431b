"""Accuracy against deferral cost for the four scripted team baselines, on the same problems.

Every baseline plays the same episode seeds (same problems, same simulated expert settings) in one
process; the script prints accuracy, deferral rate, mean cost, reward and the deferral calibration
of each, the accuracy gain of each over `never_defer` as a ratio, and logs the table and the
accuracy-versus-cost figure to one MLflow run (metrics `baseline/<name>/<metric>`).

    .venv/bin/python bench/deferral_baselines.py [--episodes 500] [--seed 0] [--no-track]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.run import run_scenario  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from worlds.deferral.report import tradeoff_figure  # noqa: E402

BASELINES = ["never_defer", "defer_when_disagree", "oracle", "always_defer"]


def play(baseline: str, episodes: int, seed: int) -> dict[str, float]:
    scenario = resolve_scenario(
        {
            "name": f"deferral-{baseline}",
            "world": {"id": "deferral", "oracle_observations": baseline == "oracle"},
            "agents": {"agent_*": {"policy": baseline}, "expert": {"policy": "simulated"}},
            "episodes": episodes,
            "seed": seed,
            "concurrency": 64,
        }
    )
    summary = run_scenario(scenario, track=False).summary
    return {
        "accuracy": summary["eval/accuracy"],
        "deferral_rate": summary["eval/deferral_rate"],
        "cost": summary["eval/cost"],
        "reward": summary["eval/reward"],
        "p_defer_wrong": summary.get("eval/p_defer_given_team_wrong", float("nan")),
        "p_defer_right": summary.get("eval/p_defer_given_team_right", float("nan")),
        "acc_closed": summary.get("eval/accuracy/closed", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-track", action="store_true", help="print only; log nothing to MLflow")
    args = parser.parse_args()
    rows = [{"name": name, **play(name, args.episodes, args.seed)} for name in BASELINES]
    base = rows[0]["accuracy"]
    columns = ["accuracy", "deferral_rate", "cost", "reward", "p_defer_wrong", "p_defer_right", "acc_closed"]
    print(f"{args.episodes} episodes per baseline, seed {args.seed}, same problems for all")
    print(f"{'baseline':<22}" + "".join(f"{c:>15}" for c in columns) + f"{'acc/never':>11}")
    for row in rows:
        print(f"{row['name']:<22}" + "".join(f"{row[c]:>15.3f}" for c in columns) + f"{row['accuracy'] / base:>11.2f}")
    if args.no_track:
        return
    from agora.tracking import Tracker

    tracker = Tracker(None, "deferral", "deferral-baselines", {"agora.world": "deferral", "agora.seed": str(args.seed)})
    tracker.log_params({"episodes": args.episodes, "seed": args.seed, "baselines": ",".join(BASELINES)})
    tracker.log_metrics({f"baseline/{r['name']}/{c}": r[c] for r in rows for c in columns}, step=0)
    tracker.log_table(
        {"baseline": [r["name"] for r in rows], **{c: [r[c] for r in rows] for c in columns}}, "deferral/baselines.json"
    )
    tracker.log_figure(tradeoff_figure(rows), "deferral/accuracy_vs_cost.png")
    tracker.end()
    print(f"MLflow run {tracker.run_id} in {tracker.uri}")


if __name__ == "__main__":
    main()
