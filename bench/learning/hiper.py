"""HiPER vs GRPO vs GiGPO on a long negotiation, at the same budget, on held-out seeds.

    python bench/learning/hiper.py                       # the three methods, scenarios/campaigns/negotiation_hiper.yaml
    python bench/learning/hiper.py --methods hiper grpo-plan   # + GRPO on the same plan-execute agent (an ablation)

Every method runs the campaign file's schedule from the same seed: the same iterations, initial states, rollouts per
state, optimizer steps, learning rate and LoRA initialisation; only the trainer (and, for the flat methods, the
learner's reply format) differs:

- hiper: the file as written (a plan-execute learner, hierarchical advantages, value heads);
- grpo / gigpo: the plain `llm` learner (the world's reply format), GRPO's group advantages (gigpo: + anchor-state
  step advantages with gamma 1), the same invalid-action penalty and loss settings;
- grpo-plan: GRPO's group advantages on the plan-execute learner (what the format alone does, without HAE).

Each campaign evaluates on the same held-out seeds before and after training; the script prints, per method, the
final score and win rate against each evaluation opponent with 95% intervals, game length, parse and fallback rates,
and the paired difference to HiPER per held-out seed (t interval), and logs them with a figure to MLflow (experiment
`bench-learning`, run `hiper-vs-flat`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FILE = "scenarios/campaigns/negotiation_hiper.yaml"
PLAN_KEYS = ("policy", "subgoal_tokens", "subgoal_chars", "example_subgoal")
LOSS_KEYS = ("epsilon", "epsilon_high", "beta", "aggregation", "learning_rate", "weight_decay", "epochs")
LOSS_KEYS += ("mini_batches", "micro_batch_size", "max_grad_norm", "skip_fallbacks", "invalid_action_penalty")


def method_overrides(data: dict, method: str) -> dict:
    """The campaign-file keys that make `method` out of the HiPER file `data`."""
    if method == "hiper":
        return {}
    trainer = {"id": "grpo", **{k: v for k, v in data["trainer"].items() if k in LOSS_KEYS}}
    if method == "gigpo":
        trainer.update({"estimator": "gigpo", "gamma": data["trainer"].get("gamma", 1.0), "step_weight": 1.0})
    out = {"trainer": trainer, "name": f"{data['name']}-{method}"}
    if method in ("grpo", "gigpo"):
        out["learner"] = {k: v for k, v in data["learner"].items() if k not in PLAN_KEYS}
    return out


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t interval."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def run_method(path: str, method: str, overrides: list[str], uri: str | None) -> dict:
    """One campaign; its final evaluation's per-episode records and metrics, its history and wall time."""
    import yaml

    from agora.campaign import load_campaign

    data = yaml.safe_load(Path(path).read_text())
    changes = {**method_overrides(data, method), "checkpoint.dir": f"checkpoints/bench-hiper-{method}"}
    for item in overrides:
        key, value = item.split("=", 1)
        changes[key] = yaml.safe_load(value)
    campaign = load_campaign(path, changes)
    start = time.perf_counter()
    runner = campaign.start(tracking_uri=uri)
    result = runner.run()
    seconds = time.perf_counter() - start
    seats = campaign.eval_seats
    played = {
        name: [
            {
                "seed": e.seed,
                "score": float(np.mean([e.returns[s] for s in seats])),
                "turns": len(e.steps),
                "deal": e.metrics.get("agreement", float("nan")),
            }
            for e in episodes
        ]
        for name, episodes in runner.played.items()
    }
    return {
        "method": method,
        "seconds": seconds,
        "run_id": result.run_id,
        "first": result.evaluations[min(result.evaluations)],
        "final": result.evaluations[max(result.evaluations)],
        "history": {i: m.get("train/reward/learner", float("nan")) for i, m in sorted(result.history.items())},
        "played": played,
    }


def report(rows: list[dict]) -> tuple[list[str], dict[str, list]]:
    """Markdown lines of the comparison, and its table's columns."""
    table: dict[str, list] = {k: [] for k in ("method", "opponent", "before", "score", "low", "high", "win_rate")}
    table.update({k: [] for k in ("win_low", "win_high", "turns", "parse_fail", "fallback", "vs_hiper", "seconds")})
    lines = [
        "| method | opponent | score before | score after (95% CI) | win rate (95% CI) | turns | parse fail | "
        "fallback | after - HiPER, paired (95% CI) | run s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    hiper = next((r for r in rows if r["method"] == "hiper"), None)
    for row in rows:
        for name, episodes in row["played"].items():
            p, f, b = f"eval/{name}/", row["final"], row["first"]
            turns = float(np.mean([e["turns"] for e in episodes]))
            paired = "-"
            diff = (float("nan"),) * 3
            if hiper is not None and row is not hiper:
                theirs = {e["seed"]: e["score"] for e in hiper["played"][name]}
                diff = mean_ci([e["score"] - theirs[e["seed"]] for e in episodes if e["seed"] in theirs])
                paired = f"{diff[0]:+.2f} [{diff[1]:+.2f}, {diff[2]:+.2f}]"
            lines.append(
                f"| {row['method']} | {name} | {b[p + 'score']:.2f} | {f[p + 'score']:.2f} "
                f"[{f[p + 'score_ci_low']:.2f}, {f[p + 'score_ci_high']:.2f}] | {f[p + 'win_rate']:.2f} "
                f"[{f[p + 'win_rate_ci_low']:.2f}, {f[p + 'win_rate_ci_high']:.2f}] | {turns:.1f} | "
                f"{f[p + 'parse_failure_rate']:.3f} | {f[p + 'fallback_rate']:.3f} | {paired} | {row['seconds']:.0f} |"
            )
            for key, value in (
                ("method", row["method"]),
                ("opponent", name),
                ("before", b[p + "score"]),
                ("score", f[p + "score"]),
                ("low", f[p + "score_ci_low"]),
                ("high", f[p + "score_ci_high"]),
                ("win_rate", f[p + "win_rate"]),
                ("win_low", f[p + "win_rate_ci_low"]),
                ("win_high", f[p + "win_rate_ci_high"]),
                ("turns", turns),
                ("parse_fail", f[p + "parse_failure_rate"]),
                ("fallback", f[p + "fallback_rate"]),
                ("vs_hiper", diff[0]),
                ("seconds", row["seconds"]),
            ):
                table[key].append(value)
    return lines, table


def figure(rows: list[dict]):
    """Final score with its 95% interval per method and opponent (and the score before training), and the training
    reward per iteration."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    ax, curve = fig.subplots(1, 2)
    opponents = list(rows[0]["played"])
    width = 0.8 / max(len(rows), 1)
    for k, row in enumerate(rows):
        xs = np.arange(len(opponents)) + k * width
        scores = [row["final"][f"eval/{o}/score"] for o in opponents]
        low = [s - row["final"][f"eval/{o}/score_ci_low"] for s, o in zip(scores, opponents)]
        high = [row["final"][f"eval/{o}/score_ci_high"] - s for s, o in zip(scores, opponents)]
        ax.bar(xs, scores, width, yerr=[low, high], capsize=3, label=row["method"])
        ax.scatter(xs, [row["first"][f"eval/{o}/score"] for o in opponents], color="black", marker="_", s=120)
        history = row["history"]
        curve.plot(list(history), list(history.values()), marker="o", label=row["method"])
    ax.set_xticks(np.arange(len(opponents)) + width * (len(rows) - 1) / 2, opponents)
    ax.set_ylabel("held-out score after training (95% CI; - before)")
    ax.legend()
    curve.set_xlabel("iteration")
    curve.set_ylabel("training reward of the learner")
    curve.legend()
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", default=FILE, help="the HiPER campaign file")
    parser.add_argument("--methods", nargs="+", default=["hiper", "grpo", "gigpo"])
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the embedded one)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE set in every method's campaign (e.g. iterations=2)")
    args = parser.parse_args()
    unknown = set(args.methods) - {"hiper", "grpo", "gigpo", "grpo-plan"}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}: hiper, grpo, gigpo, grpo-plan")
    rows = [run_method(args.file, m, list(args.overrides), args.tracking_uri) for m in args.methods]
    lines, table = report(rows)
    print("\n".join(lines))
    from agora.tracking import Tracker

    tracker = Tracker(args.tracking_uri, "bench-learning", "hiper-vs-flat", {"agora.bench": "hiper"})
    tracker.log_params({"file": args.file, "methods": ",".join(args.methods), "overrides": " ".join(args.overrides)})
    runs = {r["method"]: r["run_id"] for r in rows}
    tracker.log_params({f"run/{m}": run_id or "-" for m, run_id in runs.items()})
    tracker.log_metrics(
        {
            f"{row['method']}/{key}/{opponent}": value
            for row in rows
            for opponent in row["played"]
            for key, value in (
                ("score", row["final"][f"eval/{opponent}/score"]),
                ("win_rate", row["final"][f"eval/{opponent}/win_rate"]),
            )
        }
    )
    tracker.log_table(copy.deepcopy(table), "learning/hiper_vs_flat.json")
    episodes = [(row["method"], name, e) for row in rows for name, played in row["played"].items() for e in played]
    tracker.log_table(  # every held-out game, so that a later run of another method can be paired with these
        {
            "method": [m for m, _, _ in episodes],
            "opponent": [o for _, o, _ in episodes],
            **{key: [e[key] for _, _, e in episodes] for key in ("seed", "score", "turns", "deal")},
        },
        "learning/hiper_episodes.json",
    )
    tracker.log_figure(figure(rows), "figures/hiper_vs_flat.png")
    tracker.end()
    print(f"MLflow run {tracker.run_id} in {tracker.uri}")


if __name__ == "__main__":
    main()
