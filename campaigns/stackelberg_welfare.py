"""The stackelberg campaign's held-out evaluation: social welfare of the planner next to the fixed schedules and the
Stackelberg optimum on the same worker populations ("LLM Economist", arXiv 2507.15815).

Each held-out population (a seed: GB2 skills of `num_workers` workers) is played once by the planner with the
learner's current weights, the workers responding as in training. Per population the evaluation records

- `planner`: the planner's social welfare during play (the episode's `planner_swf`, the mean per step after the
  warm-up: what GRPO maximises), and `planner_final`: the welfare of its last schedule held fixed, every worker
  best-responding (what the schedule is worth once the planner stops moving);
- `saez`, `us_federal`, `flat` and `optimum` (`optimum_lattice`): the same population under those fixed schedules
  with best-response workers (`worlds.economy.baseline_welfare`, also the run report's comparison).

The evaluation before the first update is the untrained model planning in context (LoRA's B starts at zero), so the
first evaluation is the `in_context` planner and the newest the `trained` one. Intervals are 95% normal intervals over
populations (`mean_ci`); differences to Saez are paired by population; the share of the optimum is the ratio of
means, as in the run report.

An evaluation's metrics (one dict, kept in the campaign's checkpoints) hold the per-population values as
`population/<k>/<column>` and the welfare per step averaged over populations as `series/swf/<t>`: the tables and
the welfare-over-steps figure are rebuilt from them, also after a resume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from campaigns.evaluation import mean_ci
from worlds.economy import baseline_welfare
from worlds.economy.rules import fixed_schedule_welfare

BASELINE_COLUMNS = ("saez", "us_federal", "flat", "optimum", "optimum_lattice")
PLANNER_COLUMNS = ("planner", "planner_final")
FOLLOWER_KEYS = ("mean_labor", "mean_utility", "br_gap")  # the followers' episode metrics, averaged
TABLE_ONLY = ("population/", "series/")  # evaluation values that go into tables and figures, not metrics


class Baselines:
    """The fixed schedules' welfare per held-out population, computed once per population seed (the optimum's
    search takes about a second for 100 workers)."""

    def __init__(self, config: Any, cutoffs: np.ndarray):
        self.config, self.cutoffs = config, np.asarray(cutoffs, dtype=np.float64)
        self.known: dict[int, dict[str, Any]] = {}

    def __call__(self, seed: int, skills) -> dict[str, Any]:
        if seed not in self.known:
            self.known[seed] = baseline_welfare(skills, self.cutoffs, self.config, optimum=True)
        return self.known[seed]


def population_rows(episodes: list, baselines: Baselines) -> list[dict[str, Any]]:
    """One row per played population: its seed, the planner's welfare in play and of its final schedule held
    fixed, the baselines', and the final rates."""
    rows = []
    for episode in episodes:
        skills = np.asarray(episode.info["skills"], dtype=np.float64)
        final = np.asarray(episode.info["series"]["rates"][-1], dtype=np.float64)
        row: dict[str, Any] = {
            "seed": episode.seed,
            "planner": float(episode.metrics["planner_swf"]),
            "planner_final": fixed_schedule_welfare(skills, baselines.cutoffs, final, baselines.config)["swf"],
        }
        row.update({k: v for k, v in baselines(episode.seed, skills).items() if k in BASELINE_COLUMNS})
        row["rates"] = [float(r) for r in final]
        rows.append(row)
    return rows


def interval(prefix: str, values) -> dict[str, float]:
    mean, low, high = mean_ci(list(values))
    return {prefix: mean, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


def welfare_metrics(episodes: list, baselines: Baselines) -> dict[str, float]:
    """An evaluation's metrics (module docstring): eval/<column>_swf with 95% intervals, the paired differences to
    Saez, the shares of the optimum, the planner's final rates and the followers' means; the per-population values
    and the welfare series for tables and figures."""
    rows = population_rows(episodes, baselines)
    out: dict[str, float] = {}
    for column in (*PLANNER_COLUMNS, *BASELINE_COLUMNS):
        values = [r[column] for r in rows]
        out.update(interval(f"eval/{column}_swf", values))
    optimum = float(np.mean([r["optimum"] for r in rows]))
    for column in PLANNER_COLUMNS:
        out.update(interval(f"eval/{column}_minus_saez", [r[column] - r["saez"] for r in rows]))
        out[f"eval/{column}_over_optimum"] = float(np.mean([r[column] for r in rows])) / optimum
    for j, rate in enumerate(np.mean([r["rates"] for r in rows], axis=0)):
        out[f"eval/rate/b{j}"] = float(rate)
    for key in FOLLOWER_KEYS:
        out[f"eval/{key}"] = float(np.mean([e.metrics[key] for e in episodes]))
    for k, row in enumerate(rows):
        out.update({f"population/{k}/{c}": float(row[c]) for c in ("seed", *PLANNER_COLUMNS, *BASELINE_COLUMNS)})
    steps = min(len(e.info["series"]["swf"]) for e in episodes)
    for t, value in enumerate(np.mean([e.info["series"]["swf"][:steps] for e in episodes], axis=0)):
        out[f"series/swf/{t}"] = float(value)
    return out


def populations(evaluation: dict[str, float]) -> list[dict[str, float]]:
    """The per-population rows kept in an evaluation's metrics."""
    rows: dict[int, dict[str, float]] = {}
    for key, value in evaluation.items():
        if key.startswith("population/"):
            _, k, column = key.split("/")
            rows.setdefault(int(k), {})[column] = value
    return [rows[k] for k in sorted(rows)]


def series(evaluation: dict[str, float]) -> list[float]:
    """The welfare per step (mean over populations) kept in an evaluation's metrics."""
    points = {int(k.rsplit("/", 1)[1]): v for k, v in evaluation.items() if k.startswith("series/swf/")}
    return [points[t] for t in sorted(points)]


def policies(evaluations: dict[int, dict[str, float]]) -> dict[str, list[float]]:
    """Policy name -> its welfare per population: the fixed schedules, the in-context planner (the first
    evaluation, before any update) and the trained one (the newest), each in play and with its final schedule held
    fixed. With one evaluation only, the trained planner is left out."""
    first, last = min(evaluations), max(evaluations)
    before, after = populations(evaluations[first]), populations(evaluations[last])
    out = {name: [r[name] for r in before] for name in ("saez", "us_federal", "flat")}
    out["in_context"] = [r["planner"] for r in before]
    out["in_context_final"] = [r["planner_final"] for r in before]
    if last != first:
        out["trained"] = [r["planner"] for r in after]
        out["trained_final"] = [r["planner_final"] for r in after]
    out["optimum_lattice"] = [r["optimum_lattice"] for r in before]
    out["optimum"] = [r["optimum"] for r in before]
    return out


def comparison_table(evaluations: dict[int, dict[str, float]]) -> dict[str, list[Any]]:
    """`economy/welfare_comparison.json`: per policy its mean welfare over the held-out populations with the 95%
    interval, the paired difference to Saez with its interval, and the share of the optimum's welfare."""
    values = policies(evaluations)
    saez, optimum = np.asarray(values["saez"]), float(np.mean(values["optimum"]))
    rows = []
    for name, swf in values.items():
        mean, low, high = mean_ci(swf)
        diff, diff_low, diff_high = mean_ci(list(np.asarray(swf) - saez))
        rows.append([name, mean, low, high, diff, diff_low, diff_high, mean / optimum])
    columns = ["policy", "swf", "swf_ci_low", "swf_ci_high", "minus_saez", "minus_saez_ci_low", "minus_saez_ci_high"]
    columns.append("share_of_optimum")
    return {c: [row[i] for row in rows] for i, c in enumerate(columns)}


def population_table(evaluations: dict[int, dict[str, float]]) -> dict[str, list[Any]]:
    """`economy/welfare_populations.json`: every policy's welfare on each held-out population."""
    first = populations(evaluations[min(evaluations)])
    table: dict[str, list[Any]] = {"population": list(range(len(first))), "seed": [int(r["seed"]) for r in first]}
    table.update(policies(evaluations))
    return table
