"""League matchmaking at equal budget: PFSP vs uniform (fictitious self-play) vs latest (plain self-play).

    python bench/learning/matchmaking.py                  # the three arms at the default budget
    python bench/learning/matchmaking.py iterations=2     # KEY=VALUE overrides reach every arm's campaign

`scenarios/campaigns/negotiation_league.yaml` (SmolLM2 + LoRA opens as alice against a league of its snapshots and
the scripted `fair` and `greedy`, learning both seats with `swap_sides`), run three times with everything equal
(`BUDGET`: iterations, initial states, rollouts per state, optimiser, seed, LoRA initialisation, the matchmaking
generator's seeds) but `league.matchmaking`:

- pfsp: P(o) ∝ (1 − x_o)^p, x_o = P(learner beats o) in its games so far, p = `league.pfsp_exponent` (AlphaStar's
  prioritised fictitious self-play, "Grandmaster level in StarCraft II using multi-agent reinforcement learning");
- uniform: every version in play alike (fictitious self-play);
- latest: the newest snapshot only (self-play).

Per arm, from the finished campaign (`league_standing`, the campaign's own numbers):

- the final learner's rating: the final snapshot `learner-<iterations>` (the learner's weights after the last
  update) in the final leaderboard, OpenSkill μ with its 95% interval μ ± 1.96σ (rated on the final payoff games),
  and its Bradley–Terry Elo over all payoff games with the league's percentile-bootstrap 95% interval; also the live
  learner's OpenSkill μ (its training games, a moving target);
- its exploitability within the final payoff matrix U (U[k, l] = P(side A wins), version k as alice, l as bob): the
  learner f playing both sides as the pure profile (e_f, e_f) of the constant-sum meta-game (U, 1 − U), scored by
  `solvers.meta.exploitability`: ½ [(max_k U[k, f] − U[f, f]) + (max_l (1 − U[f, l]) − (1 − U[f, f]))], the mean over
  the two sides of what the best version of the league gains against f over what f gains against itself (0: no
  version in the league beats f by more than f beats itself; at most 1);
- the held-out evaluation the campaign does before and after training (`bench/learning/common.py`: scores, win rates,
  after − before paired by seed, each arm − pfsp paired by seed).

Ratings and exploitability are within each arm's own league, so they do not compare across arms (a weak league
flatters its learner). The common yardstick is the held-out evaluation: every arm's final learner plays alice
against the same fixed panel (the league's scripted members `fair` and `greedy`, in every other seat) on the same
held-out seeds. Logged to MLflow (experiment `bench-learning`, run `league-matchmaking`); each arm's campaign run
keeps its leaderboard, payoff matrices and league graph.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import Arm, command_line, compare, fmt  # noqa: E402

FILE = "scenarios/campaigns/negotiation_league.yaml"
RULES = ("pfsp", "uniform", "latest")
PANEL = {"fair": {"policy": "fair"}, "greedy": {"policy": "greedy"}}
BUDGET = {
    "iterations": 4,
    "groups_per_iteration": 4,
    "group_size": 4,
    "league.snapshot_every": 1,
    "league.max_snapshots": 3,
    "league.payoff.every": 0,  # one payoff matrix, after the last iteration
    "league.payoff.episodes_per_cell": 2,
    "evaluation.every": 0,
    "evaluation.episodes": 16,
    "evaluation.opponents": PANEL,
}


def learner_standing(
    final: str,
    leaderboard: list[dict[str, Any]],
    versions: list[str],
    U: np.ndarray,
    elo: dict[str, tuple[float, float, float]],
) -> dict[str, float]:
    """The final learner `final`'s rating and exploitability (module docstring): OpenSkill μ [95%] of `final` and of
    the live `learner` in the last step of `leaderboard` (`campaigns.leaderboard` rows), its Bradley–Terry Elo [95%]
    from `elo` (version -> (elo, low, high)), and the exploitability of (e_f, e_f) in (U, 1 − U) with the two
    best-response gains (`gain_a`: the best version as side A against f as side B; `gain_b`: the reverse)."""
    from solvers.meta import best_response_values, exploitability

    step = max(r["step"] for r in leaderboard)
    rows = {r["version"]: r for r in leaderboard if r["step"] == step}
    f = versions.index(final)
    e = np.eye(len(versions))[f]
    br_a, br_b = best_response_values(U, 1.0 - U, e, e)
    out = {"step": float(step), "versions": float(len(versions))}
    for key, name in (("rating", final), ("live_rating", "learner")):
        row = rows.get(name, {})
        out.update({key: row.get("mu", np.nan), f"{key}_low": row.get("ci95_low", np.nan)})
        out[f"{key}_high"] = row.get("ci95_high", np.nan)
    out["elo"], out["elo_low"], out["elo_high"] = elo.get(final, (np.nan,) * 3)
    out["exploitability"] = exploitability(U, 1.0 - U, e, e)
    out["gain_a"], out["gain_b"] = br_a - U[f, f], br_b - (1.0 - U[f, f])
    return out


def league_standing(runner: Any, result: Any) -> dict[str, float]:
    """`Arm.collect`: the final learner's standing in the finished campaign's league (`learner_standing`), and the
    exploitability of the league's own meta-strategy (`league/exploitability` of the last payoff matrix)."""
    league = runner.opponents.league
    versions, U = runner.opponents.payoff_matrix
    fit = runner.opponents.fit
    final = league.population.latest("lora").name
    out = learner_standing(final, league.leaderboard, versions, U, fit.as_dict() if fit else {})
    out["meta_exploitability"] = runner.opponents.payoff_metrics.get("league/exploitability", np.nan)
    return out


def arms(file: str = FILE, rules: tuple[str, ...] = RULES) -> list[Arm]:
    """One arm per matchmaking rule; everything else equal (`BUDGET`)."""
    return [
        Arm(rule, file, {**BUDGET, "name": f"league-matchmaking-{rule}", "league.matchmaking": rule}, league_standing)
        for rule in rules
    ]


def standing_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per arm, the final learner's ratings and exploitability within its own league."""
    lines = [
        "| arm | OpenSkill μ of learner-N [95%] | live learner μ [95%] | Bradley–Terry Elo [95%] | exploitability | "
        "gain as alice | gain as bob | meta-strategy exploitability | versions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        x = row["extra"]
        cells = [row["arm"]] + [fmt((x[k], x[f"{k}_low"], x[f"{k}_high"])) for k in ("rating", "live_rating", "elo")]
        cells += [f"{x[k]:.3f}" for k in ("exploitability", "gain_a", "gain_b", "meta_exploitability")]
        lines.append("| " + " | ".join(cells + [f"{x['versions']:.0f}"]) + " |")
    return lines


def main() -> None:
    parser = command_line(__doc__, FILE, "league")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES, help="matchmaking rules to compare")
    args = parser.parse_args()
    out = compare(
        "league-matchmaking",
        arms(args.file, tuple(args.rules)),
        overrides=args.overrides,
        uri=args.tracking_uri,
        baseline=args.rules[0],
        extra=("agreement",),
        title="League matchmaking at equal budget, negotiation",
    )
    print("\nFinal learner within its own league (not comparable across arms; the held-out table above is):")
    print("\n".join(standing_lines(out["rows"])))


if __name__ == "__main__":
    main()
