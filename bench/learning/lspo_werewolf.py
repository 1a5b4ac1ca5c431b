"""Does LSPO's latent policy win more as its iterations go? Werewolf, against a fixed rule-based opponent.

    python bench/learning/lspo_werewolf.py                        # 3 iterations at the default budget
    python bench/learning/lspo_werewolf.py iterations=1 latent.candidates=2   # KEY=VALUE overrides of the campaign

"Learning Strategic Language Agents in the Werewolf Game with Iterative Latent Space Policy Optimization"
(arXiv 2502.04686) reports the werewolf side's win rate rising over its iterations (0.54 -> 0.63 -> 0.73 in 3).
`scenarios/campaigns/werewolf_lspo.yaml` (`kind: lspo`) runs `BUDGET["iterations"]` iterations; after each, the
CFR average policy of the latent game plays each side against rule-based players on the same held-out seeds as the
rule-based baseline (same games, same opponents). Per iteration and side the table gives the latent policy's win
rate and the baseline's (Wilson 95% intervals, n games each; draws are no win) and the gain, latent - baseline,
with a Student-t 95% interval of its per-seed differences (win_latent(s) - win_rule(s)); per iteration, NashConv of
CFR's average policy beside the latent game's utility standard error (mean over profiles of s / sqrt(games)) and
spread (max - min of the profiles' utilities): NashConv is exact in the latent game as estimated, and a spread
within a few standard errors says that game is mostly sampling noise. Then the DPO pairs, loss and accuracy. Logged
to MLflow (experiment `bench-learning`, run `lspo-werewolf`) with a figure (win rate per iteration per side,
intervals, baseline line).

Budget (`BUDGET`; 362 s for the 3 iterations on the idle 2-core CPU, 2026-12-03, with DPO bounded by
`dpo.max_tokens_per_pass`): the LLM's work is nearly all of an iteration
(candidates of <= 32 tokens after prompts of 600-1,100 tokens, then DPO on those prompts), while the werewolf games of
the latent game and of the evaluation cost seconds. So the LLM side is kept small: 6 candidates x 1 state per role
(the campaign file has 8; fewer members per cluster: 2 per cluster in iteration 0 for k = 3, the pool growing by 6
per role an iteration) and 4 DPO pairs an iteration (one per role; DPO took 64% of the LLM time in the smoke run and
does not shrink with fewer candidates), and the games are raised: 16 games per latent profile (1,296 per iteration
for k = 3, half the utility standard error of the file's 4) and 256 held-out games per side (Wilson half-width at
most 0.061, so a gain of 0.09, the paper's step per iteration, is at the edge of what one iteration resolves). Each
candidate more per state costs generation time in proportion, each state more per role both generation and DPO time.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.learning.common import EXPERIMENT, fmt, paired, parse_overrides, win_interval  # noqa: E402

FILE = "scenarios/campaigns/werewolf_lspo.yaml"
TAG = "lspo-werewolf"
BUDGET = {
    "iterations": 3,
    "latent.candidates": 6,
    "latent.states_per_role": 1,
    "cfr.games_per_profile": 16,
    "evaluation.episodes": 256,
}
SIDES = {"village": "latent_village", "werewolves": "latent_werewolves"}  # side -> the campaign's held-out table
GAME = ("cfr/nash_conv", "cfr/uniform_nash_conv", "cfr/utility_stderr", "cfr/utility_spread", "cfr/village_value")
DPO = ("train/pairs", "train/loss", "train/accuracy")


def run(overrides: dict, uri: str | None, folder: Path) -> dict:
    """Run the campaign (checkpoints in `folder`): its per-iteration metrics and held-out games, wall time."""
    from agora.campaign import load_campaign

    campaign = load_campaign(FILE, {**BUDGET, **overrides, "checkpoint.dir": str(folder)})
    start = time.perf_counter()
    runner = campaign.start(tracking_uri=uri)
    result = runner.run()
    return {
        "history": result.history,
        "held_out": result.outputs["held_out"],
        "seconds": time.perf_counter() - start,
        "run_id": result.run_id,
    }


def report(history: dict[int, dict[str, float]], held_out: dict[int, dict[str, list[dict]]]):
    """Markdown lines and one table row per iteration and side: the latent policy's and the rule-based baseline's
    win rates (Wilson 95%) on the same held-out games, the gain paired by seed (t 95%), the latent game's NashConv,
    utility standard error and spread, DPO's pairs, loss and accuracy."""
    nan = float("nan")
    table: dict[str, list] = {k: [] for k in ("iteration", "side", "games", "win", "win_low", "win_high")}
    table.update({k: [] for k in ("baseline", "baseline_low", "baseline_high", "gain", "gain_low", "gain_high")})
    table.update({k.split("/")[1]: [] for k in GAME + DPO + ("latent/parsed_rate",)})
    wins = ["| iteration | side | games | latent win (95%) | rule-based win (95%) | gain, paired by seed (95%) |"]
    wins.append("|---|---|---|---|---|---|")
    game = ["| iteration | parsed | NashConv | NashConv uniform | utility stderr | utility spread | village value |"]
    game[0] += " DPO pairs | DPO loss | DPO acc | s |"
    game.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, m in sorted(history.items()):
        values = {k.split("/")[1]: float(m.get(k, nan)) for k in GAME + DPO + ("latent/parsed_rate",)}
        for side, name in SIDES.items():
            latent, rule = held_out[i][name], held_out[i]["rule_based"]
            win = win_interval([g[side] for g in latent])
            base = win_interval([g[side] for g in rule])
            gain = paired(latent, rule, side)
            wins.append(f"| {i} | {side} | {len(latent)} | {fmt(win)} | {fmt(base)} | {fmt(gain, True)} |")
            for key, value in zip(table, (i, side, len(latent), *win, *base, *gain)):
                table[key].append(value)
            for key, value in values.items():
                table[key].append(value)
        cells = [f"{values['parsed_rate']:.2f}", *(f"{values[k.split('/')[1]]:.4f}" for k in GAME)]
        cells += [f"{values['pairs']:.0f}", f"{values['loss']:.4f}", f"{values['accuracy']:.2f}"]
        cells.append(f"{m.get('perf/iteration_seconds', nan):.0f}")
        game.append(f"| {i} | " + " | ".join(cells) + " |")
    return wins + [""] + game, table


def figure(table: dict[str, list]):
    """Win rate per iteration on each side (95% Wilson bars) and the rule-based baseline's on the same games."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, side in zip(fig.subplots(1, 2), SIDES):
        rows = [k for k, s in enumerate(table["side"]) if s == side]
        xs = [table["iteration"][k] for k in rows]
        win = np.array([[table[c][k] for c in ("win", "win_low", "win_high")] for k in rows])
        base = [table["baseline"][k] for k in rows]
        ax.errorbar(xs, win[:, 0], yerr=[win[:, 0] - win[:, 1], win[:, 2] - win[:, 0]], marker="o", capsize=4)
        ax.plot(xs, base, color="black", linestyle="--", label="rule-based on the same games")
        ax.plot([], [], marker="o", color="C0", label="latent policy (Wilson 95%)")
        ax.set(title=f"{side} side vs rule-based", xlabel="LSPO iteration", ylabel=f"{side} win rate", ylim=(0, 1))
        ax.set_xticks(xs)
        ax.legend()
    return fig


def main() -> None:
    from agora.tracking import Tracker

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the embedded one)")
    parser.add_argument("--checkpoints", default="checkpoints/bench", help="folder for the campaign's checkpoints")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE set in the campaign (over BUDGET)")
    args = parser.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = run(parse_overrides(args.overrides), args.tracking_uri, Path(args.checkpoints) / f"{TAG}-{stamp}")
    lines, table = report(out["history"], out["held_out"])
    print("\n".join(lines))
    print(f"campaign: {out['seconds']:.0f} s")
    tracker = Tracker(args.tracking_uri, EXPERIMENT, TAG, {"agora.bench": TAG})
    tracker.log_params({"file": FILE, "budget": str(BUDGET), "overrides": " ".join(args.overrides) or "-"})
    tracker.log_params({"campaign_run": out["run_id"] or "-", "seconds": f"{out['seconds']:.0f}"})
    for k, i in enumerate(table["iteration"]):
        side = table["side"][k]
        metrics = {f"{side}/{key}": table[key][k] for key in ("win", "baseline", "gain", "gain_low", "gain_high")}
        metrics.update({f"cfr/{key.split('/')[1]}": table[key.split("/")[1]][k] for key in GAME})
        metrics.update({f"train/{key.split('/')[1]}": table[key.split("/")[1]][k] for key in DPO})
        tracker.log_metrics({key: float(v) for key, v in metrics.items() if np.isfinite(v)}, step=i)
    tracker.log_table(copy.deepcopy(table), f"learning/{TAG}.json")
    games = [(i, name, g) for i, sides in sorted(out["held_out"].items()) for name, gs in sides.items() for g in gs]
    tracker.log_table(
        {
            "iteration": [i for i, _, _ in games],
            "table": [name for _, name, _ in games],
            **{k: [g[k] for *_, g in games] for k in ("seed", "village", "werewolves", "draw")},
        },
        f"learning/{TAG}_games.json",
    )
    tracker.log_figure(figure(table), f"figures/{TAG}.png")
    tracker.end()
    print(f"MLflow run {tracker.run_id} ({EXPERIMENT}/{TAG}) in {tracker.uri}")


if __name__ == "__main__":
    main()
