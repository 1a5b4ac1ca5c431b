"""Figures and tables that campaigns log to MLflow: payoff heatmaps and tables, the league graph."""

from __future__ import annotations

from typing import Any, Sequence

import networkx as nx
import numpy as np


def payoff_heatmap(
    U: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    title: str = "empirical payoff",
    label: str = "row's payoff",
):
    """A heatmap of a payoff matrix with each cell's value written in it (matplotlib Figure, no pyplot)."""
    from matplotlib.figure import Figure

    U = np.asarray(U, dtype=np.float64)
    size = max(4.0, 0.6 * max(U.shape) + 2.5)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(U, cmap="RdYlGn", aspect="auto")
    figure.colorbar(image, ax=ax, label=label)
    ax.set_xticks(range(len(columns)), list(columns), rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set(title=title, xlabel="column player", ylabel="row player")
    if U.size <= 400:
        middle = (np.nanmax(U) + np.nanmin(U)) / 2 if U.size else 0.0
        for (i, j), value in np.ndenumerate(U):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if abs(value - middle) < 0.35 * (np.ptp(U) or 1) else "white",
            )
    return figure


def payoff_table(U: np.ndarray, rows: Sequence[str], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The payoff matrix as table columns (`Tracker.log_table`): `row`, then one column per opponent."""
    out: dict[str, list[Any]] = {"row": list(rows)}
    for j, name in enumerate(columns):
        out[str(name)] = [float(v) for v in np.asarray(U)[:, j]]
    return out


def league_figure(graph: nx.MultiDiGraph, *, title: str = "league"):
    """The league graph: versions in order of creation left to right, lineage edges solid grey,
    `beats` edges red with width by win rate."""
    from matplotlib.figure import Figure

    nodes = list(graph.nodes)
    figure = Figure(figsize=(max(6.0, 1.2 * len(nodes)), 5), layout="constrained")
    ax = figure.subplots()
    ax.set_axis_off()
    ax.set_title(title)
    if not nodes:
        return figure
    pos = nx.circular_layout(graph) if len(nodes) > 2 else {n: (i, 0) for i, n in enumerate(nodes)}
    kinds = nx.get_node_attributes(graph, "kind")
    palette = {"lora": "#4c72b0", "scripted": "#dd8452", "llm": "#937860", "tabular": "#55a868", "latent": "#8172b3"}
    nx.draw_networkx_nodes(
        graph, pos, ax=ax, node_color=[palette.get(kinds.get(n), "#999999") for n in nodes], node_size=900
    )
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8)
    lineage = [(a, b) for a, b, d in graph.edges(data=True) if d.get("relation") == "trained_from"]
    against = [(a, b) for a, b, d in graph.edges(data=True) if d.get("relation") == "trained_against"]
    beats = [(a, b, d) for a, b, d in graph.edges(data=True) if d.get("relation") == "beats"]
    nx.draw_networkx_edges(
        graph, pos, ax=ax, edgelist=lineage, edge_color="#444444", width=2.0, node_size=900, arrowsize=15
    )
    nx.draw_networkx_edges(
        graph, pos, ax=ax, edgelist=against, edge_color="#aaaaaa", style="dotted", node_size=900, arrowsize=10
    )
    nx.draw_networkx_edges(
        graph,
        pos,
        ax=ax,
        edgelist=[(a, b) for a, b, _ in beats],
        edge_color="#c44e52",
        style="dashed",
        width=[1.0 + 4.0 * (d["win_rate"] - 0.5) * 2 for _, _, d in beats],
        node_size=900,
        arrowsize=12,
        connectionstyle="arc3,rad=0.15",
    )
    from matplotlib.lines import Line2D

    legend = [
        Line2D([], [], color="#444444", lw=2, label="trained from"),
        Line2D([], [], color="#aaaaaa", ls="dotted", label="trained against"),
        Line2D([], [], color="#c44e52", ls="dashed", label="beats (width: win rate)"),
    ]
    legend += [Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in palette.items() if k in kinds.values()]
    ax.legend(handles=legend, loc="lower left", fontsize=8)
    return figure


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
    ax.set(
        title="PSRO: exploitability of the meta-mixture",
        xlabel="iteration",
        ylabel="value (exact, from the payoff table)",
    )
    ax.legend()
    return figure


def ratings_figure(rows: list[dict[str, Any]], *, title: str = "league ratings"):
    """Each version's rating μ per step (iterations done) with its 95% interval shaded (rows of
    `campaigns.leaderboard`: step, version, mu, ci95_low, ci95_high); versions in order of first appearance."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    versions = list(dict.fromkeys(r["version"] for r in rows))
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax = figure.subplots()
    colors = [f"C{k % 10}" for k in range(len(versions))]
    for version, color in zip(versions, colors):
        mine = sorted((r for r in rows if r["version"] == version), key=lambda r: r["step"])
        steps = [r["step"] for r in mine]
        ax.plot(steps, [r["mu"] for r in mine], marker="o", color=color, label=version)
        ax.fill_between(steps, [r["ci95_low"] for r in mine], [r["ci95_high"] for r in mine], color=color, alpha=0.15)
    ax.set(title=title, xlabel="iterations done", ylabel="OpenSkill rating μ (shaded: 95% interval μ ± 1.96σ)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if versions:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="version")
    return figure


def meta_strategy_figure(rows: list[dict[str, Any]], seats: Sequence[str], *, title: str = "meta-strategy"):
    """Each seat's meta-strategy σ per iteration as stacked areas, one band per version (rows: iteration,
    seat, version, sigma; a version has weight 0 before it joins)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(9, 3.2 * len(seats)), layout="constrained")
    figure.suptitle(title)
    axes = figure.subplots(len(seats), 1, squeeze=False)[:, 0]
    steps = sorted({r["iteration"] for r in rows})
    for ax, seat in zip(axes, seats):
        mine = [r for r in rows if r["seat"] == seat]
        versions = list(dict.fromkeys(r["version"] for r in mine))
        weight = {(r["iteration"], r["version"]): r["sigma"] for r in mine}
        if versions and steps:
            ax.stackplot(
                steps, [[weight.get((s, v), 0.0) for s in steps] for v in versions], labels=versions, alpha=0.85
            )
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="version")
        ax.set(title=seat, xlabel="iteration", ylabel="σ (weight in the meta-mixture)", ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def meta_strategy_rows(history: list[dict[str, float]], versions: Sequence[Any]) -> list[dict[str, Any]]:
    """PSRO's meta-strategies of every iteration as table rows: iteration, seat, version, its weight σ in
    its seat's meta-mixture (`meta/<version>` of the iteration's metrics) and its strategy (action probabilities).
    `versions`: the population's `PolicyVersion`s, whose spec holds `seat` and `probs`."""
    return [
        {
            "iteration": int(h["iteration"]),
            "seat": v.spec["seat"],
            "version": v.name,
            "sigma": h[f"meta/{v.name}"],
            "strategy": " / ".join(f"{p:.3f}" for p in v.spec["probs"]),
        }
        for h in history
        for v in versions
        if f"meta/{v.name}" in h
    ]
