"""Populations per iteration as one table and one figure each, what a reviewer reads instead of one metric
(and one chart) per statistic per version: a league's leaderboard and records, PSRO's meta-strategies.

`leaderboard_rows` is the league's standing after an iteration, one row per rated version: its OpenSkill
rating μ with the 95% interval μ ± 1.96σ of the Gaussian posterior on its skill, the conservative
score μ − 3σ that ranks it, its games and mean score, the matchmaking probability and share of this
iteration's draws, and the meta-strategy weights when a payoff matrix was played after it. The rows
of every iteration make one table (`league/leaderboard.json`; its `step` column is the number of
iterations done, the step of the run's metrics and of `league/payoff/step-N`) and one figure
(`league/ratings.png`: μ per iteration with its interval shaded, one line per version).
"""

from __future__ import annotations

from typing import Any, Sequence

from campaigns.figures import meta_strategy_figure, meta_strategy_rows, ratings_figure

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
LEADERBOARD_FILE = "league/leaderboard.json"
RATINGS_FIGURE = "league/ratings.png"
META_FILE = "meta/strategies.json"
META_FIGURE = "figures/meta_strategy.png"


def leaderboard_rows(
    league: Any,
    step: int,
    *,
    matchmaking: dict[str, tuple[float, float]],
    meta: dict[str, dict[str, float]] | None,
    side_names: Sequence[str],
) -> list[dict[str, Any]]:
    """The standing of every rated version of `league` (a `campaigns.league.League`) after `step`
    iterations, best conservative score first. `matchmaking`: version -> (probability, share of draws) of
    the iteration just played; `meta`: side ("a"/"b") -> version -> weight of the payoff matrix just
    played (None when none was)."""
    scores: dict[str, list[float]] = {}
    for game in league.games:
        if game.a != game.b:
            scores.setdefault(game.a, []).append(game.score_a)
            scores.setdefault(game.b, []).append(1.0 - game.score_a)
    in_play = set(league.candidates())
    rows = []
    for name, conservative, mu, sigma in league.ratings.leaderboard():
        p, drawn = matchmaking.get(name, (None, None))
        rows.append(
            {
                "step": step,
                "version": name,
                "in_play": name in in_play,
                "mu": mu,
                "sigma": sigma,
                "ci95_low": mu - Z95 * sigma,
                "ci95_high": mu + Z95 * sigma,
                "conservative": conservative,
                "games": len(scores.get(name, [])),
                "mean_score": sum(scores[name]) / len(scores[name]) if scores.get(name) else None,
                "matchmaking_p": p,
                "drawn": drawn,
                **{
                    f"meta_{side_name}": (meta or {}).get(side, {}).get(name)
                    for side, side_name in zip(("a", "b"), side_names)
                },
            }
        )
    return rows


def as_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows (dicts with the same keys) as table columns (`Tracker.log_table`)."""
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def log_leaderboard(tracker: Any, rows: list[dict[str, Any]], title: str) -> None:
    """The leaderboard of every iteration so far as one table and one figure (both rewritten whole, so a
    resumed campaign's table has each iteration once)."""
    tracker.log_table(as_columns(rows), LEADERBOARD_FILE, replace=True)
    tracker.log_figure(ratings_figure(rows, title=title), RATINGS_FIGURE)


def log_meta_strategies(tracker: Any, history: list[dict[str, float]], versions: list[Any], campaign: Any) -> None:
    """PSRO's meta-strategy σ of every iteration so far (`history`: the iterations' metrics) as one table,
    a row per iteration and version, and one figure, stacked σ per seat; both rewritten whole."""
    rows = meta_strategy_rows(history, versions)
    tracker.log_table(as_columns(rows), META_FILE, replace=True)
    tracker.log_figure(
        meta_strategy_figure(rows, campaign.seats, title=f"{campaign.name}: meta-strategy σ per iteration"), META_FIGURE
    )


def games_table(league: Any) -> dict[str, list[Any]]:
    """Every game of the league in order (MLflow table): iteration, kind, the versions on sides A and B, A's score."""
    return {
        "iteration": [g.iteration for g in league.games],
        "kind": [g.kind for g in league.games],
        "a": [g.a for g in league.games],
        "b": [g.b for g in league.games],
        "score_a": [g.score_a for g in league.games],
    }


def ratings_table(league: Any) -> dict[str, list[Any]]:
    """The OpenSkill leaderboard (best conservative score first) with each version's lineage."""
    rows = league.ratings.leaderboard()
    pop = league.population
    return {
        "version": [r[0] for r in rows],
        "conservative": [r[1] for r in rows],
        "mu": [r[2] for r in rows],
        "sigma": [r[3] for r in rows],
        "parent": [pop[r[0]].parent if r[0] in pop else None for r in rows],
        "trained_against": [", ".join(pop[r[0]].opponents) if r[0] in pop else "" for r in rows],
    }


def leaderboard_markdown(rows: list[dict[str, Any]], side_names: Sequence[str], payoff: dict[str, float]) -> str:
    """The newest step's leaderboard as markdown, for the run's description: rating with its 95% interval,
    conservative score, games, mean score, meta-strategy weights; the meta-strategy's exploitability."""
    from agora.tracking import markdown_table

    if not rows:
        return ""
    step = max(r["step"] for r in rows)

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = [
        [
            r["version"] + ("" if r["in_play"] or r["version"] == "learner" else " (retired)"),
            f"{r['mu']:.2f} [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]",
            f"{r['conservative']:.2f}",
            str(r["games"]),
            share(r["mean_score"]),
            *(share(r[f"meta_{side}"]) for side in side_names),
        ]
        for r in rows
        if r["step"] == step
    ]
    columns = ["version", "rating μ [95% interval]", "μ − 3σ", "games", "mean score"]
    columns += [f"meta-strategy ({side})" for side in side_names]
    lines = [
        f"**League leaderboard after {step} iterations** (OpenSkill; every iteration: `{LEADERBOARD_FILE}`, "
        f"`{RATINGS_FIGURE}`)",
        "",
        markdown_table(columns, table),
    ]
    if "league/exploitability" in payoff:
        lines += [
            "",
            f"Exploitability of the meta-strategy within the population: {payoff['league/exploitability']:.4f} "
            f"(NashConv {payoff['league/nash_conv']:.4f})",
        ]
    return "\n".join(lines)


def meta_strategy_markdown(outputs: dict[str, Any], actions: Sequence[str]) -> str:
    """PSRO's final meta-strategy for the run's description, from its result's `outputs`: the versions each
    seat plays (σ > 0), the mixture over actions they make, and where every iteration's is."""
    from agora.tracking import markdown_table

    meta, mixtures = outputs.get("meta_strategies", {}), outputs.get("mixtures", {})

    rows = [[seat, f"`{v}`", f"{w:.3f}"] for seat, weights in meta.items() for v, w in weights.items() if w > 0]
    if not rows:
        return ""
    mixed = [f"{seat}: {' / '.join(f'{p:.3f}' for p in probs)}" for seat, probs in mixtures.items() if probs]
    return "\n".join(
        [
            "**Final meta-strategy** (σ > 0; every iteration: `meta/strategies.json`, `figures/meta_strategy.png`)",
            "",
            markdown_table(["seat", "version", "σ"], rows),
            "",
            f"Mixture over actions ({' / '.join(actions)}): " + "; ".join(mixed),
        ]
    )
