"""The stackelberg campaign's figures, one per level: the leader (its rates and welfare over iterations), the
followers (hours, utility, gap to the best response over iterations), and the welfare per step of the held-out
populations under the in-context and the trained planner, next to Saez and the optimum."""

from __future__ import annotations

import numpy as np

from campaigns.stackelberg_welfare import populations, series


def history_series(history: dict[int, dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    steps = sorted(i for i, m in history.items() if key in m)
    return steps, [history[i][key] for i in steps]


def leader_figure(history: dict[int, dict[str, float]], evaluations: dict[int, dict[str, float]]):
    """Left: the planner's mean final rate per bracket over training iterations. Right: its welfare in training
    (mean over the iteration's rollouts) and on the held-out populations (95% CI), with Saez's and the optimum's."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    brackets = sorted({k for m in history.values() for k in m if k.startswith("leader/rate/")})
    for key in brackets:
        left.plot(*history_series(history, key), marker="o", label=key.rsplit("/", 1)[1])
    left.set(title="planner's final rates (training rollouts)", xlabel="iteration", ylabel="marginal rate (%)")
    if brackets:
        left.legend(title="bracket")
    right.plot(*history_series(history, "leader/planner_swf"), marker="o", label="training rollouts")
    steps = sorted(evaluations)
    y = [evaluations[s]["eval/planner_swf"] for s in steps]
    low = [evaluations[s]["eval/planner_swf"] - evaluations[s]["eval/planner_swf_ci_low"] for s in steps]
    high = [evaluations[s]["eval/planner_swf_ci_high"] - evaluations[s]["eval/planner_swf"] for s in steps]
    right.errorbar(steps, y, yerr=[low, high], marker="s", capsize=4, label="held-out populations (95% CI)")
    first = evaluations[steps[0]]
    right.axhline(first["eval/saez_swf"], color="grey", linestyle="--", label="Saez (held-out)")
    right.axhline(first["eval/optimum_swf"], color="black", linestyle=":", label="optimum (held-out)")
    right.set(title="planner's social welfare", xlabel="iteration", ylabel="welfare per step after warm-up")
    right.legend(fontsize="small")
    return figure


def follower_figure(history: dict[int, dict[str, float]]):
    """The workers' mean hours, mean utility and mean gap to the exact best response over training iterations."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.5), layout="constrained")
    for axis, (key, label) in zip(
        figure.subplots(1, 3),
        [("mean_labor", "hours"), ("mean_utility", "utility"), ("br_gap", "|hours - best response|")],
    ):
        axis.plot(*history_series(history, f"follower/{key}"), marker="o")
        axis.set(title=f"followers: mean {label}", xlabel="iteration", ylabel=label)
    return figure


def welfare_steps_figure(evaluations: dict[int, dict[str, float]], warmup: int):
    """Welfare per world step, averaged over the held-out populations: the in-context planner (first evaluation)
    and the trained one (newest), with the populations' mean welfare under Saez and at the optimum."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), layout="constrained")
    axis = figure.subplots()
    first, last = min(evaluations), max(evaluations)
    labels = {first: f"in-context planner (iteration {first})", last: f"trained planner (iteration {last})"}
    for step in sorted({first, last}):
        values = series(evaluations[step])
        axis.plot(np.arange(len(values)), values, marker="o", label=labels[step])
    rows = populations(evaluations[first])
    axis.axhline(float(np.mean([r["saez"] for r in rows])), color="grey", linestyle="--", label="Saez")
    axis.axhline(float(np.mean([r["optimum"] for r in rows])), color="black", linestyle=":", label="optimum")
    axis.axvline(warmup - 0.5, color="lightgrey", linewidth=1)
    axis.set(title="welfare over planner steps (held-out populations)", xlabel="world step", ylabel="social welfare")
    axis.legend(fontsize="small")
    return figure
